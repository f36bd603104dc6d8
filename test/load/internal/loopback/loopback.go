// Package loopback keeps the load tools on this machine: every address they
// dial, listen on or scrape must be a loopback address (127.0.0.0/8, ::1 or
// "localhost"). A typo in a flag must fail loudly instead of sending a load
// test to some other host.
package loopback

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// CheckHostPort returns an error unless hostport ("host:port") names a
// loopback host. An empty host is rejected: for a listener it would mean
// every interface.
func CheckHostPort(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("address %q: %w", hostport, err)
	}
	return checkHost(host, hostport)
}

// CheckURL returns an error unless raw is an http(s) URL whose host is
// loopback.
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("url %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("url %q: scheme must be http or https", raw)
	}
	return checkHost(u.Hostname(), raw)
}

func checkHost(host, orig string) error {
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address; load tools only target 127.0.0.0/8, ::1 or localhost", orig)
	}
	return nil
}
