package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// An HTTPS admin API: trusted with --cacert, refused in one line without.
func TestAdminTLS(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	caFile, certFile, keyFile := writeCerts(t, dir)
	d := startDaemon(t, fmt.Sprintf(`
listen: [{transport: msrp, addr: "127.0.0.1:0"}]
admin: {addr: "127.0.0.1:0", token: s3cret, tls_cert: %q, tls_key: %q}
`, certFile, keyFile))
	https := strings.Replace(d.admin, "http://", "https://", 1)
	t.Setenv("MSRPSCOPE_TOKEN", "s3cret")
	if out := ok(t, "--admin", https, "--cacert", caFile, "trace", "status"); !strings.HasPrefix(out, "tracing: on\n") {
		t.Fatalf("trace status over HTTPS:\n%s", out)
	}
	fails(t, exitFail, `^msrpctl: admin API at `+https+`: its certificate is not trusted \(.*\): give its CA with --cacert$`,
		"--admin", https, "trace", "status")
	fails(t, exitFail, `^msrpctl: --cacert: no PEM certificate in `, "--admin", https, "--cacert", filepath.Join(dir, "ca.key"), "stats")
}

// writeCerts writes a CA and a server certificate for 127.0.0.1 signed by it.
func writeCerts(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "msrpctl test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("ca.key", "EC PRIVATE KEY", caKeyDER)
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", der), write("key.pem", "EC PRIVATE KEY", keyDER)
}
