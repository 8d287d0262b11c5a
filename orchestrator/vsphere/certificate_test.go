package vsphere

import (
	"errors"
	"strings"
	"testing"

	"github.com/vmware/govmomi/vim25/soap"
)

// TestCertificateTrust: against the simulator over TLS with its own
// self-signed certificate (real handshakes), an untrusted certificate and a
// wrong pinned thumbprint fail with the server's real thumbprints; the
// SHA-256 or SHA-1 thumbprint printed, or --insecure, then connect.
func TestCertificateTrust(t *testing.T) {
	s := newSim(t)
	ctx := testContext(t)
	cert := s.server.Certificate()
	sha256, sha1 := soap.ThumbprintSHA256(cert), soap.ThumbprintSHA1(cert)

	cfg := s.config()
	cfg.Thumbprint = ""
	_, err := Connect(ctx, cfg, testLogger(t))
	var ce *CertificateError
	if !errors.As(err, &ce) || ce.SHA256 != sha256 || ce.SHA1 != sha1 || ce.Pinned != "" ||
		!strings.Contains(err.Error(), "not trusted") || !strings.Contains(err.Error(), sha256) {
		t.Fatalf("untrusted certificate: %v (%+v)", err, ce)
	}

	wrong := strings.Repeat("AB:", 31) + "AB"
	cfg.Thumbprint = wrong
	_, err = Connect(ctx, cfg, testLogger(t))
	if !errors.As(err, &ce) || ce.Pinned != wrong || ce.SHA256 != sha256 ||
		!strings.Contains(err.Error(), "does not match the pinned thumbprint "+wrong) || !strings.Contains(err.Error(), sha256) {
		t.Fatalf("wrong thumbprint: %v (%+v)", err, ce)
	}

	for _, c := range []Config{{Thumbprint: sha256}, {Thumbprint: sha1}, {Insecure: true}} {
		cfg := s.config()
		cfg.Thumbprint, cfg.Insecure = c.Thumbprint, c.Insecure
		d, err := Connect(ctx, cfg, testLogger(t))
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		_ = d.Close(ctx)
	}
}
