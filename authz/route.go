package authz

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"strings"
)

// router finds the service a request is for. The most specific match wins:
// an exact host beats "*", then the longest path prefix. Declaration order
// breaks remaining ties, so the outcome never depends on map iteration.
type router struct {
	exact    map[string][]route // lower-case host → routes, longest prefix first
	wildcard []route            // host "*", longest prefix first
}

type route struct {
	prefix string
	svc    *Service
}

func newRouter(services []Service) (*router, error) {
	r := &router{exact: map[string][]route{}}
	for i := range services {
		s := &services[i]
		if s.Name == "" {
			return nil, fmt.Errorf("authz: services[%d] has no name", i)
		}
		prefixes := s.PathPrefixes
		if len(prefixes) == 0 {
			prefixes = []string{"/"}
		}
		for _, h := range s.Hosts {
			for _, p := range prefixes {
				rt := route{prefix: p, svc: s}
				if h == "*" {
					r.wildcard = append(r.wildcard, rt)
				} else {
					h = strings.ToLower(h)
					r.exact[h] = append(r.exact[h], rt)
				}
			}
		}
	}
	byLen := func(a, b route) int { return cmp.Compare(len(b.prefix), len(a.prefix)) }
	for h := range r.exact {
		slices.SortStableFunc(r.exact[h], byLen)
	}
	slices.SortStableFunc(r.wildcard, byLen)
	return r, nil
}

// match returns the service for host and path, or nil.
func (r *router) match(host, path string) *Service {
	h := hostOnly(host)
	if routes, ok := r.exact[h]; ok {
		if s := matchPath(routes, path); s != nil {
			return s
		}
	} else if hasUpper(h) {
		if routes, ok := r.exact[strings.ToLower(h)]; ok {
			if s := matchPath(routes, path); s != nil {
				return s
			}
		}
	}
	return matchPath(r.wildcard, path)
}

func matchPath(routes []route, path string) *Service {
	for _, rt := range routes {
		if strings.HasPrefix(path, rt.prefix) {
			return rt.svc
		}
	}
	return nil
}

// hostOnly strips the port from a host[:port] or [v6]:port authority.
func hostOnly(authority string) string {
	if authority == "" {
		return ""
	}
	if authority[0] == '[' {
		if h, _, err := net.SplitHostPort(authority); err == nil {
			return h
		}
		return strings.Trim(authority, "[]")
	}
	if i := strings.LastIndexByte(authority, ':'); i >= 0 && strings.IndexByte(authority[:i], ':') < 0 {
		return authority[:i]
	}
	return authority
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 'A' && s[i] <= 'Z' {
			return true
		}
	}
	return false
}
