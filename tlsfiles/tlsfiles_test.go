package tlsfiles

import (
	"crypto/tls"
	"net"
	"os"
	"sync"
	"testing"

	"github.com/raftproxy/raftproxy/tlsfiles/tlstest"
)

type pki struct {
	dir                       string
	caFile                    string
	srvCert, srvKey           string
	goodCert, goodKey         string
	strangerCert, strangerKey string
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	ca, err := tlstest.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlstest.NewCA("untrusted CA")
	if err != nil {
		t.Fatal(err)
	}
	p := pki{dir: dir}
	must := func(a, b string, err error) (string, string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
	if p.caFile, err = ca.WriteCA(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	issue := func(ca *tlstest.CA, cn string) *tlstest.Pair {
		pr, err := ca.Issue(cn)
		if err != nil {
			t.Fatal(err)
		}
		return pr
	}
	p.srvCert, p.srvKey = must(issue(ca, "server").Write(dir, "server"))
	p.goodCert, p.goodKey = must(issue(ca, "client").Write(dir, "client"))
	p.strangerCert, p.strangerKey = must(issue(other, "stranger").Write(dir, "stranger"))
	return p
}

// handshake runs one TLS handshake over a pipe and returns the client's
// error, the server's, and the certificate the client saw.
func handshake(srv, cli *tls.Config) (cliErr, srvErr error, seen string) {
	// A real socket, not net.Pipe: both sides write at once when one
	// sends an alert, and a pipe has no buffer.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err, err, ""
	}
	defer ln.Close()
	b, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err, err, ""
	}
	defer b.Close()
	a, err := ln.Accept()
	if err != nil {
		return err, err, ""
	}
	defer a.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s := tls.Server(a, srv)
		srvErr = s.Handshake()
		// Reading surfaces a refusal the client learns of after its
		// handshake ends (TLS 1.3 checks client certificates later).
		if srvErr == nil {
			_, _ = s.Write([]byte{1})
		}
		s.Close()
	}()
	c := tls.Client(b, cli)
	cliErr = c.Handshake()
	if cliErr == nil {
		var one [1]byte
		_, cliErr = c.Read(one[:])
		seen = c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	c.Close()
	wg.Wait()
	return cliErr, srvErr, seen
}

func TestClientAuth(t *testing.T) {
	p := newPKI(t)
	srvFiles, err := Load(p.srvCert, p.srvKey, p.caFile)
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string][2]string{"none": {"", ""}, "trusted": {p.goodCert, p.goodKey}, "untrusted": {p.strangerCert, p.strangerKey}}
	for _, tc := range []struct {
		auth    ClientAuth
		client  string
		refused string // "" when the handshake succeeds
	}{
		{NoClientCert, "none", ""},
		{NoClientCert, "untrusted", ""},
		{RequestClientCert, "none", ""},
		{RequestClientCert, "trusted", ""},
		{RequestClientCert, "untrusted", RefusedBadCert},
		{RequireClientCert, "none", RefusedNoCert},
		{RequireClientCert, "trusted", ""},
		{RequireClientCert, "untrusted", RefusedBadCert},
	} {
		t.Run(tc.client, func(t *testing.T) {
			var got []string
			srv := srvFiles.ServerConfig(tc.auth, func(r string) { got = append(got, r) }, nil)
			cc := clients[tc.client]
			cliFiles, err := Load(cc[0], cc[1], p.caFile)
			if err != nil {
				t.Fatal(err)
			}
			cliErr, srvErr, _ := handshake(srv, cliFiles.ClientConfig("127.0.0.1"))
			if tc.refused == "" {
				if cliErr != nil || srvErr != nil || len(got) != 0 {
					t.Fatalf("mode %d: want success, got client %v, server %v, refusals %v", tc.auth, cliErr, srvErr, got)
				}
				return
			}
			if cliErr == nil || srvErr == nil || len(got) != 1 || got[0] != tc.refused {
				t.Fatalf("mode %d: want refusal %s, got client %v, server %v, refusals %v", tc.auth, tc.refused, cliErr, srvErr, got)
			}
		})
	}
}

func TestServerVerifiedByClient(t *testing.T) {
	p := newPKI(t)
	// The client trusts only the stranger's CA: the server's certificate
	// must be refused, and for the wrong name too.
	other, err := tlstest.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	otherFile, err := other.WriteCA(p.dir, "other")
	if err != nil {
		t.Fatal(err)
	}
	srvFiles, _ := Load(p.srvCert, p.srvKey, p.caFile)
	for _, tc := range []struct {
		ca, name string
		ok       bool
	}{
		{p.caFile, "127.0.0.1", true},
		{p.caFile, "localhost", true},
		{p.caFile, "10.1.2.3", false},
		{otherFile, "127.0.0.1", false},
	} {
		cli, err := Load("", "", tc.ca)
		if err != nil {
			t.Fatal(err)
		}
		cliErr, _, _ := handshake(srvFiles.ServerConfig(NoClientCert, nil, nil), cli.ClientConfig(tc.name))
		if (cliErr == nil) != tc.ok {
			t.Errorf("CA %s, name %s: client error %v, want ok=%v", tc.ca, tc.name, cliErr, tc.ok)
		}
	}
}

func TestReload(t *testing.T) {
	p := newPKI(t)
	srvFiles, err := Load(p.srvCert, p.srvKey, p.caFile)
	if err != nil {
		t.Fatal(err)
	}
	cli, _ := Load("", "", p.caFile)
	srv := srvFiles.ServerConfig(NoClientCert, nil, nil)
	if _, _, seen := handshake(srv, cli.ClientConfig("127.0.0.1")); seen != "server" {
		t.Fatalf("first handshake saw %q, want server", seen)
	}
	// Rotate: a new CA and a certificate it signed replace the old files.
	ca2, err := tlstest.NewCA("rotated CA")
	if err != nil {
		t.Fatal(err)
	}
	pr, err := ca2.Issue("server-2")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := pr.Write(p.dir, "server"); err != nil {
		t.Fatal(err)
	}
	if _, err := ca2.WriteCA(p.dir, "ca"); err != nil {
		t.Fatal(err)
	}
	cliErr, srvErr, seen := handshake(srv, cli.ClientConfig("127.0.0.1"))
	if cliErr != nil || srvErr != nil || seen != "server-2" {
		t.Fatalf("after rotation: saw %q (client %v, server %v), want server-2", seen, cliErr, srvErr)
	}
	// A broken file does not take the old certificate away.
	if err := writeFile(p.srvCert, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	if _, _, seen := handshake(srv, cli.ClientConfig("127.0.0.1")); seen != "server-2" {
		t.Fatalf("after a bad rewrite: saw %q, want the previous server-2", seen)
	}
}

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o600) }

func TestSecretCert(t *testing.T) {
	if _, _, err := WriteSecretCert([]byte("short"), t.TempDir()); err == nil {
		t.Fatal("a 5-byte secret was accepted")
	}
	node := func(secret string) *Files {
		t.Helper()
		cert, key, err := WriteSecretCert([]byte(secret), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		f, err := Load(cert, key, cert)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	a, b, c := node("0123456789abcdef-shared"), node("0123456789abcdef-shared"), node("0123456789abcdef-other!")
	for _, tc := range []struct {
		name     string
		srv, cli *Files
		refused  string
	}{
		{"same secret", a, b, ""},
		{"client with another secret", a, c, RefusedBadCert},
		{"server with another secret", c, a, "client"},
	} {
		var got []string
		cli := tc.cli.ClientConfig(SecretServerName)
		if tc.refused == RefusedBadCert {
			// A stranger does not care who the server is.
			cli.VerifyConnection = nil
		}
		cliErr, srvErr, _ := handshake(tc.srv.ServerConfig(RequireClientCert, func(r string) { got = append(got, r) }, nil), cli)
		switch tc.refused {
		case "":
			if cliErr != nil || srvErr != nil {
				t.Errorf("%s: client %v, server %v; want success", tc.name, cliErr, srvErr)
			}
		case "client":
			if cliErr == nil {
				t.Errorf("%s: the client accepted a server with another secret", tc.name)
			}
		default:
			if srvErr == nil || len(got) != 1 || got[0] != tc.refused {
				t.Errorf("%s: server %v, refusals %v; want %s", tc.name, srvErr, got, tc.refused)
			}
		}
	}
}
