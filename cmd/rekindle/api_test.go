package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rekindle/rekindle/internal/httpapi"
)

// apiServer starts `rekindle serve` on a fresh repository with extra args
// and returns its API address and state folder.
func apiServer(t *testing.T, extra ...string) (api, state string, s *server) {
	t.Helper()
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	api = freePort(t)
	s = &server{t: t, api: api, args: append([]string{"serve", "--repo", repoDir, "--nfs", freePort(t),
		"--portmap", "off", "--api", api, "--metrics", "off"}, extra...)}
	s.start()
	t.Cleanup(s.kill)
	return api, filepath.Join(repoDir, "state"), s
}

// call sends one request with the given headers and returns the status and
// the {"error"} message.
func call(t *testing.T, method, url string, body string, hdr map[string]string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Error string }
	json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error
}

// TestAPIGuard: every call needs the bearer token; a Host that is not the
// server's, a cross-origin page and a text/plain body are refused; the
// token file is the server user's alone; and the CLI finds the token by
// itself.
func TestAPIGuard(t *testing.T) {
	api, state, _ := apiServer(t)
	tokenFile := filepath.Join(state, httpapi.TokenFileName)
	fi, err := os.Stat(tokenFile)
	if err != nil {
		t.Fatalf("no token file after the first start: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %04o, want 0600", fi.Mode().Perm())
	}
	tok, err := httpapi.ReadToken(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + api
	auth := "Bearer " + tok
	publish := `{"vms":[{"vm":"web01"}],"allow":["0.0.0.0/0"]}`
	cases := []struct {
		name         string
		method, path string
		body         string
		hdr          map[string]string
		code         int
		msg          string
	}{
		{"no token", "GET", "/v1/sessions", "", nil, 401, "bearer token"},
		{"no token, discard", "DELETE", "/v1/sessions/rk-1", "", nil, 401, "bearer token"},
		{"wrong token", "GET", "/v1/sessions", "", map[string]string{"Authorization": "Bearer " + strings.Repeat("x", 43)}, 401, "wrong bearer token"},
		{"DNS rebinding", "GET", "/v1/sessions", "", map[string]string{"Authorization": auth, "Host": "evil.example:7480"}, 403, `Host "evil.example:7480"`},
		{"cross-site page", "POST", "/v1/sessions", publish, map[string]string{"Authorization": auth, "Content-Type": "application/json", "Origin": "http://evil.example"}, 403, "cross-origin"},
		{"text/plain body", "POST", "/v1/sessions", publish, map[string]string{"Authorization": auth, "Content-Type": "text/plain"}, 415, "application/json"},
		{"form body", "POST", "/v1/sessions", "a=b", map[string]string{"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json"},
		{"good", "GET", "/v1/sessions", "", map[string]string{"Authorization": auth}, 200, ""},
		{"good, localhost", "GET", "/v1/status", "", map[string]string{"Authorization": auth, "Host": "localhost:1"}, 200, ""},
		{"good, JSON with charset", "POST", "/v1/sessions", `{"vms":[{"vm":"nope"}]}`, map[string]string{"Authorization": auth, "Content-Type": "application/json; charset=utf-8"}, 404, "nope"},
	}
	for _, tc := range cases {
		code, msg := call(t, tc.method, base+tc.path, tc.body, tc.hdr)
		if code != tc.code || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: %s %s -> %d %q, want %d with %q", tc.name, tc.method, tc.path, code, msg, tc.code, tc.msg)
		}
	}

	// The CLI of the server's user finds the token with no flag...
	out, _ := run(t, false, "sessions", "list", "--server", api, "--json")
	if strings.TrimSpace(out) != "[]" {
		t.Fatalf("sessions list through the token file: %q", out)
	}
	// ...takes it from --token-file or REKINDLE_TOKEN for remote use...
	run(t, false, "sessions", "list", "--server", api, "--token-file", tokenFile)
	cmd := exec.Command(binary, "sessions", "list", "--server", api)
	cmd.Env = append(os.Environ(), "REKINDLE_TOKEN="+strings.Repeat("y", 43))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "wrong bearer token") {
		t.Fatalf("sessions list with a wrong REKINDLE_TOKEN: err %v, stderr %q", err, stderr.String())
	}
	// ...and refuses a token file others may read.
	loose := filepath.Join(t.TempDir(), "token")
	os.WriteFile(loose, []byte(tok+"\n"), 0o644)
	if _, stderr := run(t, true, "sessions", "list", "--server", api, "--token-file", loose); !strings.Contains(stderr, "chmod 600") {
		t.Fatalf("loose token file: %q", stderr)
	}
}

// TestServeRefusesLooseTokenFile: a token file other users can read is not
// a secret; the server says so and does not start.
func TestServeRefusesLooseTokenFile(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	tf := filepath.Join(dir, "token")
	os.WriteFile(tf, []byte(strings.Repeat("z", 43)+"\n"), 0o640)
	_, stderr := run(t, true, "serve", "--repo", repoDir, "--nfs", freePort(t), "--portmap", "off", "--metrics", "off",
		"--api", freePort(t), "--token-file", tf)
	if !strings.Contains(stderr, "mode 0640") || !strings.Contains(stderr, "chmod 600 "+tf) {
		t.Fatalf("serve with a 0640 token file: %q", stderr)
	}
}

// TestServeRefusesOpenAPIWithoutTLS: --api on every address without TLS is
// refused at start, naming the flags to add.
func TestServeRefusesOpenAPIWithoutTLS(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	_, port, _ := net.SplitHostPort(freePort(t))
	for _, addr := range []string{"0.0.0.0:" + port, ":" + port, "[::]:" + port} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmd := exec.CommandContext(ctx, binary, "serve", "--repo", repoDir, "--nfs", freePort(t), "--portmap", "off", "--metrics", "off", "--api", addr)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		timedOut := ctx.Err() != nil
		cancel()
		if timedOut {
			t.Fatalf("serve --api %s without TLS was not refused: still serving after 10 s\n%s", addr, stderr.String())
		}
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Fatalf("serve --api %s: err %v (want exit 2)\n%s", addr, err, stderr.String())
		}
		for _, want := range []string{"without TLS", "--api-cert FILE --api-key FILE", "--api 127.0.0.1:7480"} {
			if !strings.Contains(stderr.String(), want) {
				t.Fatalf("serve --api %s: message lacks %q: %s", addr, want, stderr.String())
			}
		}
	}
}

// TestAPITLS: with --api-cert and --api-key the API listens beyond loopback
// over HTTPS, and the CLI reaches it with --api-ca and the token.
func TestAPITLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir)
	_, port, _ := net.SplitHostPort(freePort(t))
	repoDir := filepath.Join(dir, "repo")
	run(t, false, "init", "--repo", repoDir)
	s := &server{t: t, api: "127.0.0.1:" + port, args: []string{"serve", "--repo", repoDir, "--nfs", freePort(t),
		"--portmap", "off", "--metrics", "off", "--api", "0.0.0.0:" + port, "--api-cert", certFile, "--api-key", keyFile}}
	s.cmd = exec.Command(binary, s.args...)
	s.log = &lockedBuffer{}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.kill()
	url := "https://127.0.0.1:" + port
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.Command(binary, "sessions", "list", "--json", "--server", url, "--api-ca", certFile,
			"--token-file", filepath.Join(repoDir, "state", httpapi.TokenFileName)).CombinedOutput()
		if err == nil {
			if strings.TrimSpace(string(out)) != "[]" {
				t.Fatalf("sessions list over TLS: %q", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CLI over TLS: %v %s\nserver: %s", err, out, s.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Plain HTTP on the TLS port gets nothing useful.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://127.0.0.1:"+port+"/v1/sessions", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP answered 200 on the TLS port")
		}
	}
}

// selfSigned writes a certificate for 127.0.0.1 and localhost and its key.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rekindle test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "api.crt"), filepath.Join(dir, "api.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

// TestAPIPathsConfined: with --hypervisor qemu, the folders a request names
// for disks to be written into (a restore's migrate_to, a migrate's to) must
// lie under a --migrate-root; "..", relative paths and symbolic links out
// are refused before anything runs.
func TestAPIPathsConfined(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "vms")
	os.MkdirAll(filepath.Join(root, "prod"), 0o755)
	os.Symlink("/etc", filepath.Join(root, "escape"))
	api, state, _ := apiServer(t, "--hypervisor", "qemu", "--qemu-dir", filepath.Join(dir, "q"), "--migrate-root", root)
	tok, err := httpapi.ReadToken(filepath.Join(state, httpapi.TokenFileName))
	if err != nil {
		t.Fatal(err)
	}
	hdr := map[string]string{"Authorization": "Bearer " + tok, "Content-Type": "application/json"}
	restore := func(to string) string {
		b, _ := json.Marshal(map[string]any{"kind": "vm", "vms": []string{"nope"}, "server": "127.0.0.1", "migrate_to": to})
		return string(b)
	}
	for _, tc := range []struct {
		path, body string
		code       int
		msg        string
	}{
		{"/v1/restores", restore("/etc"), 403, `migrate_to: path "/etc" is outside the folders this server may write to (` + root + `); to allow it, start serve with --migrate-root`},
		{"/v1/restores", restore("/"), 403, "outside the folders"},
		{"/v1/restores", restore(filepath.Join(state, "migrated")), 403, "outside the folders"}, // the default root is not one once --migrate-root is given
		{"/v1/restores", restore(root + "/../etc"), 400, `".." is not allowed`},
		{"/v1/restores", restore("vms/prod"), 400, "give an absolute path"},
		{"/v1/restores", restore(root + "/escape/cron.d"), 403, "through a symbolic link"},
		{"/v1/sessions/rk-x/migrate", `{"to":"/root/.ssh"}`, 403, `to: path "/root/.ssh" is outside`},
		{"/v1/sessions/rk-x/migrate", `{"to":"` + root + `/prod"}`, 404, "rk-x"},           // admitted: the session is what is missing
		{"/v1/restores", restore(root + "/prod/new"), 400, "vm nope has no restore point"}, // admitted: the VM is what is missing
	} {
		code, msg := call(t, "POST", "http://"+api+tc.path, tc.body, hdr)
		if code != tc.code || !strings.Contains(msg, tc.msg) {
			t.Errorf("POST %s %s -> %d %q, want %d with %q", tc.path, tc.body, code, msg, tc.code, tc.msg)
		}
	}
}

// TestAPIPathsDefaultRoot: without --migrate-root only STATE/migrated is
// admitted.
func TestAPIPathsDefaultRoot(t *testing.T) {
	dir := t.TempDir()
	api, state, _ := apiServer(t, "--hypervisor", "qemu", "--qemu-dir", filepath.Join(dir, "q"))
	tok, err := httpapi.ReadToken(filepath.Join(state, httpapi.TokenFileName))
	if err != nil {
		t.Fatal(err)
	}
	hdr := map[string]string{"Authorization": "Bearer " + tok, "Content-Type": "application/json"}
	for to, want := range map[string]string{
		dir:                                     "outside the folders",
		state:                                   "outside the folders",
		filepath.Join(state, "migrated", "web"): "vm nope has no restore point",
	} {
		b, _ := json.Marshal(map[string]any{"kind": "vm", "vms": []string{"nope"}, "server": "127.0.0.1", "migrate_to": to})
		if _, msg := call(t, "POST", "http://"+api+"/v1/restores", string(b), hdr); !strings.Contains(msg, want) {
			t.Errorf("migrate_to %s: %q, want %q", to, msg, want)
		}
	}
}
