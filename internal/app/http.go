package app

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tollgate-dev/tollgate/policy"
)

func (a *App) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	if a.cfg.Server.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	}
	if a.keyring != nil {
		// /.well-known/jwks.json and /.well-known/openid-configuration
		mux.Handle("GET /.well-known/", a.keyring.Publisher())
	}
	if a.dev != nil {
		mux.Handle("GET /dev/jwks.json", a.dev.JWKSHandler())
	}
	return mux
}

// readyz is 503 until every issuer's keys loaded or the start-up timeout
// passed; the body always names the issuers still missing.
func (a *App) readyz(w http.ResponseWriter, _ *http.Request) {
	missing := a.missing()
	if missing == nil {
		missing = []string{}
	}
	ready := a.ready()
	body := struct {
		Ready          bool           `json:"ready"`
		MissingIssuers []string       `json:"missing_issuers"`
		Policy         *policy.Status `json:"policy,omitempty"`
	}{Ready: ready, MissingIssuers: missing}
	if a.policy != nil {
		st := a.policy.Status()
		body.Policy = &st
	}
	w.Header().Set("Content-Type", "application/json")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(body)
}
