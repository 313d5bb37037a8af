package tlsfiles

import (
	"crypto/ed25519"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// SecretServerName is the name in a certificate derived from a shared
// secret; peers verify each other against it instead of an address.
const SecretServerName = "raftproxy-peer"

// MinSecretLen is the shortest shared secret accepted. The derived public
// key is visible to anyone who connects, so a guessable secret could be
// found offline; the slow derivation only raises the cost per guess.
const MinSecretLen = 16

// WriteSecretCert derives a key pair from secret and writes a self-signed
// certificate for it, with its key, to dir/peer-secret.{crt,key}. Every
// node holding the same secret derives byte-identical files (ed25519
// signatures are deterministic, and every field is fixed), so the
// certificate is at once each node's certificate and the CA it trusts:
// mutual TLS then proves that both ends know the secret, which never
// crosses the network, and encrypts the traffic.
func WriteSecretCert(secret []byte, dir string) (certFile, keyFile string, err error) {
	if len(secret) < MinSecretLen {
		return "", "", fmt.Errorf("peer secret is %d bytes; want at least %d (e.g. openssl rand -hex 32)", len(secret), MinSecretLen)
	}
	seed, err := pbkdf2.Key(sha256.New, string(secret), []byte("raftproxy peer secret v1"), 200_000, ed25519.SeedSize)
	if err != nil {
		return "", "", fmt.Errorf("derive key from peer secret: %w", err)
	}
	key := ed25519.NewKeyFromSeed(seed)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: SecretServerName},
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:              []string{SecretServerName},
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return "", "", fmt.Errorf("make certificate from peer secret: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("encode key derived from peer secret: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("create %s: %w", dir, err)
	}
	certFile, keyFile = filepath.Join(dir, "peer-secret.crt"), filepath.Join(dir, "peer-secret.key")
	for _, f := range []struct {
		path string
		pem  []byte
	}{
		{keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})},
		{certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
	} {
		if err := os.WriteFile(f.path, f.pem, 0o600); err != nil {
			return "", "", fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	return certFile, keyFile, nil
}
