package storage

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
	"strconv"
	"testing"
	"time"

	chtest "github.com/msrpscope/msrpscope/internal/clickhouse"
)

// writeCert writes a self-signed certificate for 127.0.0.1 and its key.
func writeCert(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ch"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

func TestTLSFiles(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := writeCert(t, dir)
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}

	c, err := TLSFiles{CA: certPath, Cert: certPath, Key: keyPath, ServerName: "ch.example"}.Config()
	if err != nil {
		t.Fatal(err)
	}
	if c.RootCAs == nil || len(c.Certificates) != 1 || c.ServerName != "ch.example" || c.InsecureSkipVerify {
		t.Errorf("config: %+v", c)
	}
	for name, f := range map[string]TLSFiles{
		"missing ca":       {CA: filepath.Join(dir, "none")},
		"ca without pem":   {CA: junk},
		"cert without key": {Cert: certPath},
		"bad key pair":     {Cert: certPath, Key: junk},
	} {
		if _, err := f.Config(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestWriterTLS: the writer stores rows over the native protocol's TLS
// port of 18.16, verifying the server against the CA file.
func TestWriterTLS(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := writeCert(t, dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := chtest.Start(t, chtest.Options{ExtraConfig: fmt.Sprintf(`
    <tcp_port_secure>%d</tcp_port_secure>
    <openSSL><server>
        <certificateFile>%s</certificateFile><privateKeyFile>%s</privateKeyFile>
        <verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile>
        <disableProtocols>sslv2,sslv3</disableProtocols>
    </server></openSSL>`, port, certPath, keyPath)})
	tlsCfg, err := TLSFiles{CA: certPath}.Config()
	if err != nil {
		t.Fatal(err)
	}
	w := newTestWriter(t, Config{Addr: []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}, TLS: tlsCfg,
		BatchRows: 100, BatchAge: 10 * time.Millisecond, BufferRows: 250})
	for i := range 250 {
		w.Add(testFrame(i))
	}
	closeWriter(t, w)
	if got := queryUint(t, openConn(t, srv.Addr()), "SELECT count() FROM msrpscope.frames"); got != 250 {
		t.Errorf("rows over TLS = %d, want 250 (stats %+v)", got, w.Stats())
	}
}
