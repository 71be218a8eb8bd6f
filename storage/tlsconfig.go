package storage

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// TLSFiles names the files of a TLS connection to ClickHouse (the native
// protocol's secure port, 9440), as a config file gives them.
type TLSFiles struct {
	CA         string // PEM CA bundle to verify the server; "" = the system roots
	Cert, Key  string // PEM client certificate and key, both or neither
	ServerName string // "" = the host of the address dialled
	Insecure   bool   // do not verify the server (tests only)
}

// Config builds the tls.Config.
func (f TLSFiles) Config() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName, InsecureSkipVerify: f.Insecure}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("storage: tls ca: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("storage: tls ca %s: no PEM certificate", f.CA)
		}
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, fmt.Errorf("storage: tls: cert and key go together")
	}
	if f.Cert != "" {
		kp, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("storage: tls client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	return c, nil
}
