package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/rest"
)

// bundlePoller drives OPA's downloader in manual-trigger mode on its own
// interval (OPA's periodic mode counts in whole seconds): the downloader
// does the HTTP request with If-None-Match, the 304 handling, the tarball
// reading and the signature verification; the poller decides when, and
// hands new bundles to Engine.reload.
type bundlePoller struct {
	e        *Engine
	d        *download.Downloader
	interval time.Duration
}

const authPluginName = "tollgate-http-client"

// clientPlugin hands the Engine's http.Client to OPA's REST client.
type clientPlugin struct{ c *http.Client }

func (p clientPlugin) NewClient(rest.Config) (*http.Client, error) { return p.c, nil }
func (clientPlugin) Prepare(*http.Request) error                   { return nil }

func newBundlePoller(e *Engine, cfg BundleConfig) (*bundlePoller, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, err
	}
	bundlePath := u.EscapedPath()
	if u.RawQuery != "" {
		bundlePath += "?" + u.RawQuery
	}
	u.Path, u.RawPath, u.RawQuery = "", "", ""
	name := authPluginName
	restCfg, err := json.Marshal(map[string]any{
		"url":         u.String(),
		"credentials": map[string]any{"plugin": name},
	})
	if err != nil {
		return nil, err
	}
	plugin := clientPlugin{c: e.http}
	client, err := rest.New(restCfg, nil,
		rest.Logger(slogAdapter{l: e.log}),
		rest.AuthPluginLookup(func(n string) rest.HTTPAuthPlugin {
			if n == name {
				return plugin
			}
			return nil
		}))
	if err != nil {
		return nil, err
	}
	trigger := plugins.TriggerManual
	dcfg := download.Config{Trigger: &trigger}
	if err := dcfg.ValidateAndInjectDefaults(); err != nil {
		return nil, err
	}
	p := &bundlePoller{e: e, interval: cfg.PollInterval}
	p.d = download.New(dcfg, client, strings.TrimPrefix(bundlePath, "/")).
		WithBundleName("tollgate").
		WithBundleParserOpts(ast.ParserOptions{RegoVersion: e.regoVer, ProcessAnnotation: true}).
		WithCallback(p.update)
	if cfg.VerificationKey != "" {
		keys := map[string]*bundle.KeyConfig{cfg.KeyID: {Key: cfg.VerificationKey, Algorithm: cfg.Algorithm, Scope: cfg.Scope}}
		p.d = p.d.WithBundleVerificationConfig(bundle.NewVerificationConfig(keys, cfg.KeyID, cfg.Scope, nil))
	}
	return p, nil
}

// run downloads at once, then every interval (±10% jitter) until ctx ends.
func (p *bundlePoller) run(ctx context.Context) {
	for {
		// Errors reach update() too; Trigger's return is only for callers
		// that do not have a callback.
		_ = p.d.Trigger(ctx)
		jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(p.interval))
		t := time.NewTimer(p.interval + jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// update is the downloader's callback, once per poll.
func (p *bundlePoller) update(ctx context.Context, u download.Update) error {
	e := p.e
	now := e.now()
	switch {
	case u.Error != nil:
		e.metrics.downloads.WithLabelValues("failure").Inc()
		e.setBundleStatus(func(b *BundleStatus) { b.LastError = u.Error.Error() })
		e.log.Error("policy bundle download failed; the previous policy keeps serving",
			"url", e.cfg.Bundle.URL, "error", u.Error.Error())
		return nil
	case u.Bundle == nil:
		e.metrics.downloads.WithLabelValues("not_modified").Inc()
		e.setBundleStatus(func(b *BundleStatus) { b.LastDownload, b.LastError = now, "" })
		return nil
	}
	e.metrics.downloads.WithLabelValues("updated").Inc()
	if err := e.reload(ctx, "bundle "+u.ETag, u.Bundle); err != nil {
		e.setBundleStatus(func(b *BundleStatus) { b.LastDownload, b.LastError = now, err.Error() })
		e.log.Error("policy bundle rejected; the previous policy keeps serving",
			"url", e.cfg.Bundle.URL, "etag", u.ETag, "error", err.Error())
		return nil
	}
	e.setBundleStatus(func(b *BundleStatus) { b.ETag, b.LastDownload, b.LastError = u.ETag, now, "" })
	return nil
}

// slogAdapter lets OPA's downloader log through the Engine's logger.
type slogAdapter struct {
	l     *slog.Logger
	attrs []any
}

var _ logging.Logger = slogAdapter{}

func (a slogAdapter) log(level slog.Level, f string, args []any) {
	if !a.l.Enabled(context.Background(), level) {
		return
	}
	a.l.Log(context.Background(), level, "opa: "+fmt.Sprintf(f, args...), a.attrs...)
}

func (a slogAdapter) Debug(f string, args ...any) { a.log(slog.LevelDebug, f, args) }
func (a slogAdapter) Info(f string, args ...any)  { a.log(slog.LevelInfo, f, args) }
func (a slogAdapter) Warn(f string, args ...any)  { a.log(slog.LevelWarn, f, args) }
func (a slogAdapter) Error(f string, args ...any) { a.log(slog.LevelError, f, args) }

func (a slogAdapter) WithFields(fields map[string]any) logging.Logger {
	attrs := append([]any(nil), a.attrs...)
	for k, v := range fields {
		attrs = append(attrs, k, v)
	}
	return slogAdapter{l: a.l, attrs: attrs}
}

func (a slogAdapter) GetLevel() logging.Level {
	ctx := context.Background()
	switch {
	case a.l.Enabled(ctx, slog.LevelDebug):
		return logging.Debug
	case a.l.Enabled(ctx, slog.LevelInfo):
		return logging.Info
	case a.l.Enabled(ctx, slog.LevelWarn):
		return logging.Warn
	}
	return logging.Error
}

func (slogAdapter) SetLevel(logging.Level) {}
