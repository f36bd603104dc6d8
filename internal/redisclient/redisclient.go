// Package redisclient builds the go-redis client every Tollgate Redis user
// shares (session store, signing-key store), so timeouts, retries, TLS and
// password handling are the same everywhere.
package redisclient

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Config selects and bounds a Redis deployment.
type Config struct {
	// Addrs: one address is a single node, several a cluster.
	Addrs []string
	// MasterName selects Sentinel, with Addrs the sentinels.
	MasterName   string
	Username     string
	PasswordFile string
	DB           int
	TLS          bool
	CAFile       string
	// Timeout bounds each call (reads, writes, pool waits).
	Timeout time.Duration
}

// New builds a UniversalClient: one address is a single node,
// several a cluster, a master name sentinel.
func New(rc Config) (redis.UniversalClient, error) {
	var password string
	if rc.PasswordFile != "" {
		b, err := os.ReadFile(rc.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("redis.password_file: %w", err)
		}
		password = strings.TrimSpace(string(b))
	}
	var tlsConf *tls.Config
	if rc.TLS {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
		if rc.CAFile != "" {
			pem, err := os.ReadFile(rc.CAFile)
			if err != nil {
				return nil, fmt.Errorf("redis.tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("redis.tls.ca_file: no PEM certificates")
			}
			tlsConf.RootCAs = pool
		}
		if len(rc.Addrs) == 1 && rc.MasterName == "" {
			if host, _, err := net.SplitHostPort(rc.Addrs[0]); err == nil {
				tlsConf.ServerName = host
			}
		}
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:      rc.Addrs,
		MasterName: rc.MasterName,
		Username:   rc.Username,
		Password:   password,
		DB:         rc.DB,
		ClientName: "tollgate",
		TLSConfig:  tlsConf,
		// The per-call context deadline is the real bound; socket
		// timeouts match it, dials get longer for background redials.
		ContextTimeoutEnabled: true,
		DialTimeout:           max(20*rc.Timeout, time.Second),
		ReadTimeout:           rc.Timeout,
		WriteTimeout:          rc.Timeout,
		PoolTimeout:           rc.Timeout,
		MinIdleConns:          2,
		// One quick retry absorbs a pooled connection that died with
		// a Redis restart.
		MaxRetries:               2,
		MinRetryBackoff:          time.Millisecond,
		MaxRetryBackoff:          10 * time.Millisecond,
		DialerRetries:            2,
		DialerRetryTimeout:       10 * time.Millisecond,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}), nil
}
