// Package tlsfiles builds TLS configurations from PEM files that are read
// again whenever they change on disk, so an operator rotates certificates
// (and CA bundles) by replacing the files, without restarting raftproxy.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// ClientAuth says whether a server asks its clients for certificates.
type ClientAuth int

const (
	// NoClientCert: clients are not asked for a certificate.
	NoClientCert ClientAuth = iota
	// RequestClientCert: a client may present a certificate; one that does
	// must present one signed by the CA.
	RequestClientCert
	// RequireClientCert: every client must present a certificate signed by
	// the CA.
	RequireClientCert
)

// ParseClientAuth parses the --tls-client-auth values none, request, require.
func ParseClientAuth(s string) (ClientAuth, error) {
	switch s {
	case "none", "":
		return NoClientCert, nil
	case "request":
		return RequestClientCert, nil
	case "require":
		return RequireClientCert, nil
	}
	return 0, fmt.Errorf("invalid client certificate mode %q: want none, request or require", s)
}

// Refusal reasons passed to a server's refused callback.
const (
	RefusedNoCert  = "no_cert"  // the client presented no certificate but one is required
	RefusedBadCert = "bad_cert" // the client's certificate does not verify against the CA
)

// Files is a certificate, its key and an optional CA bundle on disk.
type Files struct {
	certFile, keyFile, caFile string

	mu  sync.Mutex
	cur *loaded
}

type loaded struct {
	stamps [3]stamp
	cert   *tls.Certificate
	pool   *x509.CertPool // nil when there is no CA file: the system roots
}

// stamp identifies one version of a file: a replaced or rewritten file
// differs in inode, size or modification time.
type stamp struct {
	info os.FileInfo
}

func (s stamp) same(o stamp) bool {
	if s.info == nil || o.info == nil {
		return s.info == o.info
	}
	return os.SameFile(s.info, o.info) && s.info.Size() == o.info.Size() && s.info.ModTime().Equal(o.info.ModTime())
}

// Load reads the files once, so that a bad path or PEM fails at start.
// certFile and keyFile may both be empty (a client without a certificate);
// caFile may be empty (verify against the system roots).
func Load(certFile, keyFile, caFile string) (*Files, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("certificate %q and key %q: give both or neither", certFile, keyFile)
	}
	f := &Files{certFile: certFile, keyFile: keyFile, caFile: caFile}
	if _, err := f.current(); err != nil {
		return nil, err
	}
	return f, nil
}

// current returns the files' content, reading them again if any changed.
// A failed reload keeps the previous content: a half-written file during
// rotation must not take the node off the network.
func (f *Files) current() (*loaded, error) {
	var st [3]stamp
	for i, name := range []string{f.certFile, f.keyFile, f.caFile} {
		if name == "" {
			continue
		}
		fi, err := os.Stat(name)
		if err != nil {
			if cur := f.get(); cur != nil {
				return cur, nil
			}
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		st[i] = stamp{fi}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cur != nil && f.cur.stamps[0].same(st[0]) && f.cur.stamps[1].same(st[1]) && f.cur.stamps[2].same(st[2]) {
		return f.cur, nil
	}
	l := &loaded{stamps: st}
	if f.certFile != "" {
		c, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
		if err != nil {
			if f.cur != nil {
				return f.cur, nil
			}
			return nil, fmt.Errorf("load certificate %s with key %s: %w", f.certFile, f.keyFile, err)
		}
		l.cert = &c
	}
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err == nil {
			l.pool = x509.NewCertPool()
			if !l.pool.AppendCertsFromPEM(pem) {
				err = errors.New("no PEM certificate in it")
			}
		}
		if err != nil {
			if f.cur != nil {
				return f.cur, nil
			}
			return nil, fmt.Errorf("load CA file %s: %w", f.caFile, err)
		}
	}
	f.cur = l
	return l, nil
}

func (f *Files) get() *loaded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur
}

// ServerConfig returns a server configuration that presents the current
// certificate and checks client certificates against the current CA as
// auth says. refused, if not nil, is called with a Refused* reason for
// every client turned away for its certificate. nextProtos are the ALPN
// protocols offered (nil for RESP).
func (f *Files) ServerConfig(auth ClientAuth, refused func(reason string), nextProtos []string) *tls.Config {
	if refused == nil {
		refused = func(string) {}
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// A configuration per handshake picks up rotated files; verifying
		// client certificates here rather than through ClientCAs lets the
		// CA rotate too, and lets refusals be counted.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			l, err := f.current()
			if err != nil {
				return nil, err
			}
			if l.cert == nil {
				return nil, errors.New("no server certificate configured")
			}
			cfg := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*l.cert},
				NextProtos:   nextProtos,
			}
			if auth == NoClientCert {
				return cfg, nil
			}
			cfg.ClientAuth = tls.RequestClientCert
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					if auth == RequireClientCert {
						refused(RefusedNoCert)
						return errors.New("a client certificate is required")
					}
					return nil
				}
				if err := verify(cs.PeerCertificates, l.pool, "", x509.ExtKeyUsageClientAuth); err != nil {
					refused(RefusedBadCert)
					return fmt.Errorf("client certificate: %w", err)
				}
				return nil
			}
			return cfg, nil
		},
	}
}

// ClientConfig returns a client configuration that presents the current
// certificate (if any) and verifies servers against the current CA (the
// system roots when there is no CA file). serverName is the host the
// server's certificate must name.
func (f *Files) ClientConfig(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			l, err := f.current()
			if err != nil {
				return nil, err
			}
			if l.cert == nil {
				return &tls.Certificate{}, nil
			}
			return l.cert, nil
		},
		// Go checks RootCAs fixed at configuration time; verifying here
		// instead uses the CA as it is now.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			l, err := f.current()
			if err != nil {
				return err
			}
			return verify(cs.PeerCertificates, l.pool, serverName, x509.ExtKeyUsageServerAuth)
		},
	}
}

// ClientConfigFor is ClientConfig for a HOST:PORT address.
func (f *Files) ClientConfigFor(addr string) *tls.Config {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return f.ClientConfig(host)
}

func verify(chain []*x509.Certificate, roots *x509.CertPool, name string, usage x509.ExtKeyUsage) error {
	if len(chain) == 0 {
		return errors.New("no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		DNSName:       name,
		CurrentTime:   time.Now(),
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	return err
}
