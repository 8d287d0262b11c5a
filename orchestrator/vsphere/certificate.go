package vsphere

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/vmware/govmomi/vim25/soap"
)

// CertificateError is a vCenter whose TLS certificate this client does not
// trust: signed by an unknown authority, for another name, or not the one
// a given thumbprint pins. It carries the certificate's thumbprints, read
// from the server with verification off, so the operator can compare them
// with what the vCenter shows and pin one (as govc prints them).
type CertificateError struct {
	Host   string // host:port dialled
	SHA256 string // "AB:CD:..."; empty when the certificate could not be read
	SHA1   string
	// Pinned is the thumbprint given that the server's does not match;
	// empty when none was given.
	Pinned string
	Err    error // the TLS verification error
}

func (e *CertificateError) Error() string {
	var b strings.Builder
	if e.Pinned != "" {
		fmt.Fprintf(&b, "vCenter %s: its certificate does not match the pinned thumbprint %s", e.Host, e.Pinned)
	} else {
		fmt.Fprintf(&b, "vCenter %s: its certificate is not trusted (%v)", e.Host, e.Err)
	}
	if e.SHA256 != "" {
		fmt.Fprintf(&b, "; the server's certificate has SHA-256 thumbprint %s, SHA-1 thumbprint %s", e.SHA256, e.SHA1)
	}
	return b.String()
}

func (e *CertificateError) Unwrap() error { return e.Err }

// certificateError recognizes a failure of certificate trust in err from a
// first call to u's server and fetches the server's certificate to say
// which one it is; other errors come back as they were.
func certificateError(ctx context.Context, host, pinned string, err error) error {
	mismatch := pinned != "" && strings.Contains(err.Error(), "thumbprint does not match")
	if !mismatch && !soap.IsCertificateUntrusted(err) {
		return err
	}
	if _, _, splitErr := net.SplitHostPort(host); splitErr != nil {
		host = net.JoinHostPort(strings.Trim(host, "[]"), "443")
	}
	ce := &CertificateError{Host: host, Err: err}
	if mismatch {
		ce.Pinned = pinned
	}
	// Read the certificate without trusting it, only to print it.
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // read, not trusted
	conn, derr := d.DialContext(dctx, "tcp", host)
	if derr == nil {
		if certs := conn.(*tls.Conn).ConnectionState().PeerCertificates; len(certs) > 0 {
			ce.SHA256, ce.SHA1 = soap.ThumbprintSHA256(certs[0]), soap.ThumbprintSHA1(certs[0])
		}
		_ = conn.Close()
	}
	return ce
}
