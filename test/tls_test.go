package test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftproxy/raftproxy/tlsfiles"
	"github.com/raftproxy/raftproxy/tlsfiles/tlstest"
)

// testPKI is a CA with certificates it signed, written to dir, and a
// stranger: a certificate from a CA nobody trusts.
type testPKI struct {
	dir               string
	ca                *tlstest.CA
	caFile            string
	certFile, keyFile string // node certificate (127.0.0.1), server and client
	client, stranger  tls.Certificate
	pool              *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir, err := os.MkdirTemp("", "raftproxy-tls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &testPKI{dir: dir}
	if p.ca, err = tlstest.NewCA("raftproxy test CA"); err != nil {
		t.Fatal(err)
	}
	if p.caFile, err = p.ca.WriteCA(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	node, err := p.ca.Issue("node")
	if err != nil {
		t.Fatal(err)
	}
	if p.certFile, p.keyFile, err = node.Write(dir, "node"); err != nil {
		t.Fatal(err)
	}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.ca.Cert)
	p.client = p.keyPair(t, p.ca, "client")
	other, err := tlstest.NewCA("untrusted CA")
	if err != nil {
		t.Fatal(err)
	}
	p.stranger = p.keyPair(t, other, "stranger")
	return p
}

func (p *testPKI) keyPair(t *testing.T, ca *tlstest.CA, cn string) tls.Certificate {
	t.Helper()
	pr, err := ca.Issue(cn)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.X509KeyPair(pr.CertPEM, pr.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// clientConfig trusts the test CA and presents certs.
func (p *testPKI) clientConfig(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: p.pool, Certificates: certs, ServerName: "127.0.0.1"}
}

func tlsRedisClient(addr string, cfg *tls.Config) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: addr, TLSConfig: cfg, Protocol: 2, DisableIdentity: true, MaxRetries: -1,
		DialTimeout: 2 * time.Second, ReadTimeout: 10 * time.Second, PoolSize: 2,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// TestClientTLS runs two nodes whose client ports speak only TLS and
// require client certificates: the cluster forms over TLS (JOIN dials the
// member's client port), data flows, clients without a trusted
// certificate or without TLS are refused, and a replaced certificate is
// served to new connections without a restart.
func TestClientTLS(t *testing.T) {
	ctx := testContext(t, time.Minute)
	p := newTestPKI(t)
	c := NewCluster(ctx, t, ClusterOptions{Nodes: 2, ExtraArgs: []string{
		"--tls-cert", p.certFile, "--tls-key", p.keyFile, "--tls-ca", p.caFile, "--tls-client-auth", "require"}})
	n0, n1 := c.Nodes[0], c.Nodes[1]
	cl0 := tlsRedisClient(n0.Addr, p.clientConfig(p.client))
	defer cl0.Close()
	cl1 := tlsRedisClient(n1.Addr, p.clientConfig(p.client))
	defer cl1.Close()

	if v, err := cl0.Do(ctx, "RAFT.CLUSTER", "INIT").Text(); err != nil || !strings.HasPrefix(v, "OK") {
		t.Fatalf("RAFT.CLUSTER INIT over TLS: %q %v", v, err)
	}
	err := waitFor(ctx, 15*time.Second, 50*time.Millisecond, "node0 leading", func(ctx context.Context) error {
		info, err := cl0.Do(ctx, "RAFT.INFO").Text()
		if err != nil || !strings.Contains(info, "role:leader") {
			return fmt.Errorf("RAFT.INFO: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// node1's proxy dials node0's client port to ask to be added: over
	// TLS, with its certificate, or node0 would refuse it.
	if v, err := cl1.Do(ctx, "RAFT.CLUSTER", "JOIN", n0.Addr).Text(); err != nil || v != "OK" {
		t.Fatalf("RAFT.CLUSTER JOIN over TLS: %q %v", v, err)
	}
	if err := cl1.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET over TLS: %v", err)
	}
	if v, err := cl0.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET over TLS on the other node: %q %v", v, err)
	}

	t.Run("backup", func(t *testing.T) {
		pair, err := p.ca.Issue("backup-client")
		if err != nil {
			t.Fatal(err)
		}
		cert, key, err := pair.Write(p.dir, "backup-client")
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "b.rdb")
		if _, stderr, err := tryBackup(ctx, nil, "--from", n1.Addr, "--out", out, "--tls-ca", p.caFile); err == nil {
			t.Errorf("backup without a client certificate from a node requiring one succeeded: %s", stderr)
		}
		info, stderr, err := tryBackup(ctx, nil, "--from", n1.Addr, "--out", out, "--tls-ca", p.caFile, "--tls-cert", cert, "--tls-key", key)
		if err != nil || info.Index == 0 {
			t.Fatalf("backup over TLS: %+v %v\n%s", info, err, stderr)
		}
		stock := startRedisWithRDB(ctx, t, filepath.Dir(out), "b.rdb")
		if v, err := newClient(stock, 1).Get(ctx, "k").Result(); err != nil || v != "v" {
			t.Errorf("the TLS backup loaded in a stock redis: GET k = %q %v", v, err)
		}
	})

	t.Run("refused", func(t *testing.T) {
		for name, cfg := range map[string]*tls.Config{
			"no client certificate":        p.clientConfig(),
			"untrusted client certificate": p.clientConfig(p.stranger),
		} {
			cl := tlsRedisClient(n0.Addr, cfg)
			if v, err := cl.Get(ctx, "k").Result(); err == nil {
				t.Errorf("%s: GET answered %q, want the connection refused", name, v)
			}
			cl.Close()
		}
		raw, err := dialRaw(n0.Addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if v, err := raw.Do("GET", "k"); err == nil {
			t.Errorf("plain RESP to the TLS port answered %s, want the connection refused", v)
		}
		raw.Close()
		// The client verifies the server too: a CA it does not know is refused.
		bad := tlsRedisClient(n0.Addr, &tls.Config{RootCAs: x509.NewCertPool(), Certificates: []tls.Certificate{p.client}})
		if err := bad.Ping(ctx).Err(); err == nil {
			t.Errorf("a client trusting another CA accepted the server")
		}
		bad.Close()
	})

	t.Run("reload", func(t *testing.T) {
		served := func() string { return servedCN(t, n0.Addr, p.clientConfig(p.client)) }
		if cn := served(); cn != "node" {
			t.Fatalf("served certificate %q, want node", cn)
		}
		rotated, err := p.ca.Issue("node-rotated")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := rotated.Write(p.dir, "node"); err != nil {
			t.Fatal(err)
		}
		if cn := served(); cn != "node-rotated" {
			t.Fatalf("after replacing the files: served certificate %q, want node-rotated", cn)
		}
		if v, err := cl1.Get(ctx, "k").Result(); err != nil || v != "v" {
			t.Fatalf("GET on a connection opened before the rotation: %q %v", v, err)
		}
	})
}

// TestPeerMTLS forms a three-node cluster whose raft traffic is mutual
// TLS, then plays a stranger on the network sending raft messages to a
// member: without a certificate, with one from an untrusted CA, and with
// a certificate the peer CA signed but the wrong cluster id or a sender
// that is not a member. Every attempt is refused and counted, and the
// member's term and data are unchanged.
func TestPeerMTLS(t *testing.T) {
	ctx := testContext(t, time.Minute)
	p := newTestPKI(t)
	c := NewCluster(ctx, t, ClusterOptions{ExtraArgs: []string{
		"--peer-tls-cert", p.certFile, "--peer-tls-key", p.keyFile, "--peer-tls-ca", p.caFile}})
	n0 := c.Nodes[0]
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := "127.0.0.1:" + strconv.Itoa(ports[0])
	if err := n0.StopProxy(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	n0.ExtraArgs = []string{"--metrics-listen", metricsAddr}
	if err := n0.StartProxy(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Form(ctx); err != nil {
		t.Fatalf("forming a cluster over peer mTLS: %v", err)
	}
	if err := n0.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if err := waitForReads(ctx, n, map[string]string{"k": "v"}); err != nil {
			t.Fatal(err)
		}
	}
	info, err := n0.RaftInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	term, nodeID := info.Int("current_term"), info.Get("node_id")

	// A message that would raise the term of whoever steps it.
	msg, err := proto.Marshal(&raftpb.Message{Type: raftpb.MsgApp.Enum(), From: proto.Uint64(0xbad), To: proto.Uint64(mustHex(t, nodeID)),
		Term: proto.Uint64(uint64(term) + 100)})
	if err != nil {
		t.Fatal(err)
	}
	send := func(cfg *tls.Config, method, path, cluster, from string) (int, error) {
		cl := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		defer cl.CloseIdleConnections()
		req, err := http.NewRequestWithContext(ctx, method, "https://"+n0.PeerAddr+path, bytes.NewReader(msg))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/protobuf")
		req.Header.Set("X-Etcd-Cluster-ID", cluster)
		req.Header.Set("X-Server-From", from)
		req.Header.Set("X-Raft-To", nodeID)
		// What a real member sends, so that only the sender's identity
		// stands between this message and raft.
		req.Header.Set("X-Server-Version", version.Version)
		req.Header.Set("X-Min-Cluster-Version", version.MinClusterVersion)
		resp, err := cl.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for _, tc := range []struct {
		name                        string
		cfg                         *tls.Config
		method, path, cluster, from string
		want                        int // 0: the TLS handshake fails
	}{
		{"no certificate", p.clientConfig(), "POST", "/raft", c.ClusterID, "bad", 0},
		{"untrusted CA", p.clientConfig(p.stranger), "POST", "/raft", c.ClusterID, "bad", 0},
		{"wrong cluster id", p.clientConfig(p.client), "POST", "/raft", "c0ffee", "bad", http.StatusPreconditionFailed},
		{"not a member", p.clientConfig(p.client), "POST", "/raft", c.ClusterID, "bad", http.StatusNotFound},
		{"not a member: snapshot", p.clientConfig(p.client), "POST", "/raft/snapshot", c.ClusterID, "bad", http.StatusNotFound},
		{"not a member: stream", p.clientConfig(p.client), "GET", "/raft/stream/message/bad", c.ClusterID, "bad", http.StatusNotFound},
		{"not a member: step-down", p.clientConfig(p.client), "POST", "/raftproxy/stepdown?cluster=" + c.ClusterID + "&from=bad&term=1&last=1", c.ClusterID, "bad", http.StatusForbidden},
	} {
		code, err := send(tc.cfg, tc.method, tc.path, tc.cluster, tc.from)
		if tc.want == 0 && err == nil || tc.want != 0 && code != tc.want {
			t.Errorf("%s: got status %d, error %v; want %d (0: no TLS session)", tc.name, code, err, tc.want)
		}
	}
	// Plain HTTP to the peer port gets no raft handler either.
	if resp, err := http.Post("http://"+n0.PeerAddr+"/raft", "application/protobuf", bytes.NewReader(msg)); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the peer port: status %d, want 400 or a refused connection", resp.StatusCode)
		}
	}

	after, err := n0.RaftInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := after.Int("current_term"); got != term {
		t.Errorf("term went from %d to %d: a stranger's message was stepped", term, got)
	}
	if v, err := n0.Client().Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Errorf("GET k after the stranger: %q %v", v, err)
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for reason, least := range map[string]int{"no_cert": 1, "bad_cert": 1, "cluster_id": 1, "not_member": 4} {
		m := regexp.MustCompile(`(?m)^raftproxy_peer_refused_total\{reason="` + reason + `"\} (\d+)$`).FindSubmatch(body)
		if m == nil {
			t.Errorf("no raftproxy_peer_refused_total{reason=%q} in /metrics", reason)
			continue
		}
		if n, _ := strconv.Atoi(string(m[1])); n < least {
			t.Errorf("raftproxy_peer_refused_total{reason=%q} = %d, want at least %d", reason, n, least)
		}
	}

	// Rotating the peer certificate needs no restart: new peer connections
	// get the new one, and replication goes on.
	rotated, err := p.ca.Issue("node-rotated")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := rotated.Write(p.dir, "node"); err != nil {
		t.Fatal(err)
	}
	if cn := servedCN(t, n0.PeerAddr, p.clientConfig(p.client)); cn != "node-rotated" {
		t.Errorf("peer port serves %q after rotation, want node-rotated", cn)
	}
	if err := n0.Client().Set(ctx, "k2", "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if err := waitForReads(ctx, n, map[string]string{"k": "v", "k2": "v2"}); err != nil {
			t.Fatal(err)
		}
	}
}

// servedCN is the common name of the certificate addr presents.
func servedCN(t *testing.T, addr string, cfg *tls.Config) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func mustHex(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		t.Fatalf("parse hex id %q: %v", s, err)
	}
	return v
}

// TestPeerSecret forms a cluster whose peers authenticate with a shared
// secret instead of a CA, and checks that a stranger with another secret,
// or none, cannot open a raft connection to a member.
func TestPeerSecret(t *testing.T) {
	ctx := testContext(t, time.Minute)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("3f1c9a7d5e2b8c4a6f0e1d2c3b4a5968\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := StartCluster(ctx, t, ClusterOptions{Nodes: 2, ExtraArgs: []string{"--peer-secret-file", secretFile}})
	if err := c.Nodes[0].Client().Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := waitForReads(ctx, c.Nodes[1], map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	// The peer port speaks TLS, and a holder of the secret gets in.
	goodCert, goodKey, err := tlsfiles.WriteSecretCert([]byte("3f1c9a7d5e2b8c4a6f0e1d2c3b4a5968"), filepath.Join(dir, "friend"))
	if err != nil {
		t.Fatal(err)
	}
	friend, err := tlsfiles.Load(goodCert, goodKey, goodCert)
	if err != nil {
		t.Fatal(err)
	}
	if cn := servedCN(t, c.Nodes[0].PeerAddr, friend.ClientConfig(tlsfiles.SecretServerName)); cn != tlsfiles.SecretServerName {
		t.Errorf("peer port serves %q, want the secret's certificate", cn)
	}
	cert, key, err := tlsfiles.WriteSecretCert([]byte("another secret, 16+ bytes"), filepath.Join(dir, "stranger"))
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	for name, certs := range map[string][]tls.Certificate{"another secret": {wrong}, "no certificate": nil} {
		// The stranger skips checking the server: it only wants in.
		cfg := &tls.Config{InsecureSkipVerify: true, Certificates: certs}
		cl := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := cl.Post("https://"+c.Nodes[0].PeerAddr+"/raft", "application/protobuf", strings.NewReader("x"))
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: raft POST answered %s, want the TLS handshake refused", name, resp.Status)
		}
		cl.CloseIdleConnections()
	}
}
