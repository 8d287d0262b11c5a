package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rekindle/rekindle/internal/httpapi"
	"github.com/rekindle/rekindle/internal/pathroot"
	"github.com/rekindle/rekindle/nfsd/datastore"
	"github.com/rekindle/rekindle/orchestrator"
)

// The API's flags: serve's (TLS, names, where the token lives) and the
// clients' (how to reach the server and prove who they are).

func apiServeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "api-cert", Usage: "TLS certificate (PEM) for the API; with --api-key the API speaks HTTPS", EnvVars: []string{"REKINDLE_API_CERT"}},
		&cli.StringFlag{Name: "api-key", Usage: "TLS private key (PEM) for --api-cert", EnvVars: []string{"REKINDLE_API_KEY"}},
		&cli.StringSliceFlag{Name: "api-name", Usage: "host name clients use to reach the API (repeatable); requests for other names are refused (loopback names, --server-name and the --api host are always accepted)", EnvVars: []string{"REKINDLE_API_NAME"}},
		&cli.StringFlag{Name: "token-file", Usage: "file holding the API's bearer token, created with mode 0600 at first start (default STATE/api-token)", EnvVars: []string{"REKINDLE_TOKEN_FILE"}},
		&cli.StringSliceFlag{Name: "migrate-root", Usage: "qemu: folder under which API requests may have disks written (migrate_to, migrate's to; repeatable; default STATE/migrated only)", EnvVars: []string{"REKINDLE_MIGRATE_ROOT"}},
	}
}

// migrateRoots returns the check the API applies to the folders a request
// names for the qemu driver: inside a --migrate-root (default
// STATE/migrated), no "..", no symbolic link leading out.
func migrateRoots(c *cli.Context, state string) (func(string) (string, error), error) {
	dirs := c.StringSlice("migrate-root")
	if len(dirs) == 0 {
		def := filepath.Join(state, "migrated")
		if err := os.MkdirAll(def, 0o755); err != nil {
			return nil, fmt.Errorf("serve: default --migrate-root: %w", err)
		}
		dirs = []string{def}
	}
	roots, err := pathroot.New(dirs...)
	if err != nil {
		return nil, &exitError{2, fmt.Sprintf("serve: --migrate-root: %v (it must be an existing folder)", err)}
	}
	return func(p string) (string, error) {
		real, err := roots.Resolve(p)
		if errors.Is(err, pathroot.ErrOutside) {
			return "", fmt.Errorf("%w; to allow it, start serve with --migrate-root naming a folder that holds it", err)
		}
		return real, err
	}, nil
}

// apiFlags are the flags of a command that talks to the server's API,
// followed by more.
func apiFlags(more ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "server", Value: defaultAPI, Usage: "address of the rekindle server's API (https://HOST:PORT when it has --api-cert)", EnvVars: []string{"REKINDLE_SERVER"}},
		&cli.StringFlag{Name: "token-file", Usage: "file holding the API token (default: found when the server runs on this machine as this user)", EnvVars: []string{"REKINDLE_TOKEN_FILE"}},
		&cli.StringFlag{Name: "token", Usage: "the API token itself (prefer REKINDLE_TOKEN or --token-file: other users see a flag in ps)", EnvVars: []string{"REKINDLE_TOKEN"}},
		&cli.StringFlag{Name: "api-ca", Usage: "CA certificate (PEM) that signed the server's --api-cert", EnvVars: []string{"REKINDLE_API_CA"}},
	}, more...)
}

// apiClient returns a client of the server named by --server that sends
// the token: --token, --token-file, the locator the server left for this
// user when it listens on this machine, or STATE/api-token when
// REKINDLE_STATE, --repo or REKINDLE_REPO say where the state folder is.
func apiClient(c *cli.Context) (*datastore.Client, error) {
	addr := c.String("server")
	cl := datastore.NewClient(addr)
	tok, err := clientToken(c, cl.Base)
	if err != nil {
		return nil, err
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	if ca := c.String("api-ca"); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("--api-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--api-ca %s: no PEM certificate in it", ca)
		}
		base.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	cl.HTTP = &http.Client{Timeout: 5 * time.Minute, Transport: httpapi.Bearer(base, tok)}
	return cl, nil
}

func clientToken(c *cli.Context, base string) (string, error) {
	if t := strings.TrimSpace(c.String("token")); t != "" {
		return t, nil
	}
	if f := c.String("token-file"); f != "" {
		return httpapi.ReadToken(f)
	}
	if hostPort := strings.TrimPrefix(strings.TrimPrefix(base, "http://"), "https://"); httpapi.LoopbackOnly(hostPort) {
		_, port, _ := net.SplitHostPort(hostPort)
		if f := httpapi.FindLocalToken(port); f != "" {
			if tok, err := httpapi.ReadToken(f); err == nil || !errors.Is(err, os.ErrNotExist) {
				return tok, err
			}
		}
	}
	state := os.Getenv("REKINDLE_STATE")
	if state == "" {
		r := os.Getenv("REKINDLE_REPO")
		if c.IsSet("repo") {
			r = c.String("repo")
		}
		if r != "" {
			state = filepath.Join(r, "state")
		}
	}
	if state != "" {
		if tok, err := httpapi.ReadToken(filepath.Join(state, httpapi.TokenFileName)); err == nil || !errors.Is(err, os.ErrNotExist) {
			return tok, err
		}
	}
	return "", nil // the server's 401 says what to pass
}

// apiTLS checks the API's flags before the server starts: the API reaches
// beyond loopback only with TLS (the token is always required). It returns
// the TLS configuration, nil for plain HTTP on loopback.
func apiTLS(c *cli.Context, tokenFile string) (*tls.Config, error) {
	addr := c.String("api")
	cert, key := c.String("api-cert"), c.String("api-key")
	if (cert == "") != (key == "") {
		return nil, &exitError{2, "serve: --api-cert and --api-key go together: give both (PEM certificate and its private key)"}
	}
	if cert == "" {
		if !httpapi.LoopbackOnly(addr) {
			return nil, &exitError{2, fmt.Sprintf("serve: refusing to serve the API on %s without TLS: it would reach beyond this machine "+
				"in clear text, bearer token included. Add --api-cert FILE --api-key FILE (clients then need the token in %s), "+
				"or listen on loopback only (--api 127.0.0.1:7480)", addr, tokenFile)}
		}
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, &exitError{2, fmt.Sprintf("serve: --api-cert %s / --api-key %s: %v", cert, key, err)}
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

func apiTokenFile(c *cli.Context, state string) string {
	if f := c.String("token-file"); f != "" {
		return f
	}
	return filepath.Join(state, httpapi.TokenFileName)
}

// apiRoutes is every route of the API: the datastore's, the restores'
// when jobs is not nil, and the OpenAPI description.
func apiRoutes(svc *datastore.Service, jobs *orchestrator.Jobs) *httpapi.Mux {
	m := httpapi.NewMux()
	svc.Routes(m, version)
	if jobs != nil {
		jobs.Routes(m)
	}
	httpapi.DocRoutes(m)
	return m
}

// apiNames are the names the API answers to besides loopback.
func apiNames(c *cli.Context, serverName string) []string {
	names := append([]string{serverName}, c.StringSlice("api-name")...)
	if h, _, err := net.SplitHostPort(c.String("api")); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
		names = append(names, h)
	}
	return names
}
