package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/authz"
	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/internal/redisclient"
	"github.com/tollgate-dev/tollgate/jwks/keyring"
	"github.com/tollgate-dev/tollgate/policy"
	"github.com/tollgate-dev/tollgate/session"
)

// NewRedisClient builds a go-redis UniversalClient: one address is a single
// node, several a cluster, and master_name selects Sentinel.
func NewRedisClient(r config.Redis) (redis.UniversalClient, error) {
	return redisclient.New(redisclient.Config{
		Addrs: r.Addrs, MasterName: r.MasterName, Username: r.Username,
		PasswordFile: r.PasswordFile, DB: r.DB, TLS: r.TLS.Enabled, CAFile: r.TLS.CAFile,
		Timeout: r.Timeout.D(),
	})
}

// KeyringConfig maps the internal_token and keys sections.
func KeyringConfig(cfg *config.Config) keyring.Config {
	it := cfg.InternalToken
	base := it.PublicURL
	if base == "" {
		base, _ = cfg.Server.LocalHTTPURL()
	}
	return keyring.Config{
		Issuer:         it.Issuer,
		TTL:            it.TTL.D(),
		Algorithm:      keyring.Algorithm(it.Algorithm),
		Claims:         it.Claims,
		RotationPeriod: cfg.Keys.RotationPeriod.D(),
		GracePeriod:    cfg.Keys.GracePeriod.D(),
		PublishAhead:   cfg.Keys.PublishAhead.D(),
		PollInterval:   cfg.Keys.PollInterval.D(),
		BaseURL:        base,
	}
}

// OpenKeyStore opens the configured signing-key store. close releases it
// (and the Redis client it owns).
func OpenKeyStore(cfg *config.Config) (store keyring.Store, close func(), err error) {
	k := cfg.Keys
	switch k.Store {
	case "file":
		s, err := keyring.NewFileStore(k.Dir)
		if err != nil {
			return nil, nil, fmt.Errorf("keys.dir: %w", err)
		}
		return s, func() { _ = s.Close() }, nil
	case "redis":
		kek, err := keyring.LoadKEK(k.Redis.KEKFile, k.Redis.KEKEnv)
		if err != nil {
			return nil, nil, fmt.Errorf("keys.redis: %w", err)
		}
		client, err := NewRedisClient(k.Redis.Redis)
		if err != nil {
			return nil, nil, fmt.Errorf("keys.redis: %w", err)
		}
		s, err := keyring.NewRedisStore(keyring.RedisStoreConfig{Client: client, KEK: kek})
		if err != nil {
			_ = client.Close()
			return nil, nil, fmt.Errorf("keys.redis: %w", err)
		}
		return s, func() { _ = s.Close(); _ = client.Close() }, nil
	case "pkcs11":
		s, err := keyring.NewPKCS11Store(keyring.PKCS11Config{
			Module: k.PKCS11.Module, TokenLabel: k.PKCS11.TokenLabel,
			PinFile: k.PKCS11.PINFile, StateFile: k.PKCS11.StateFile,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("keys.pkcs11: %w", err)
		}
		return s, func() { _ = s.Close() }, nil
	}
	return nil, nil, fmt.Errorf("keys.store: unknown store %q", k.Store)
}

// SessionConfig maps the sessions section.
func SessionConfig(cfg *config.Config) session.Config {
	s := cfg.Sessions
	return session.Config{
		Store: session.StoreKind(s.Store),
		Redis: session.RedisConfig{
			Addrs: s.Redis.Addrs, MasterName: s.Redis.MasterName, Username: s.Redis.Username,
			PasswordFile: s.Redis.PasswordFile, DB: s.Redis.DB,
			TLS:     session.TLSConfig{Enabled: s.Redis.TLS.Enabled, CAFile: s.Redis.TLS.CAFile},
			Timeout: s.Redis.Timeout.D(),
		},
		Cookie:          s.Cookie,
		Header:          s.Header,
		IdleTimeout:     s.IdleTimeout.D(),
		AbsoluteTimeout: s.AbsoluteTimeout.D(),
		MaxPerSubject:   s.MaxPerSubject,
		OnStoreError:    session.StoreErrorMode(s.OnStoreError),
		Cache:           session.CacheConfig{Enabled: s.LocalCache, TTL: s.LocalCacheTTL.D()},
	}
}

// PolicyConfig maps the policy section and the services' policy_query.
func PolicyConfig(cfg *config.Config) (policy.Config, error) {
	p := cfg.Policy
	pc := policy.Config{
		Paths:             p.Paths,
		Query:             p.Query,
		Timeout:           p.Timeout.D(),
		RegoVersion:       p.RegoVersion,
		ExposeCredentials: p.ExposeCredentials,
		TestOnReload:      p.TestOnReload,
		DecisionLog:       policy.DecisionLogConfig{Enabled: p.DecisionLog.Enabled, Path: p.DecisionLog.Path},
		DecisionCache: policy.DecisionCacheConfig{
			Disabled:   p.DecisionCache.Enabled != nil && !*p.DecisionCache.Enabled,
			MaxEntries: p.DecisionCache.MaxEntries,
			MaxBytes:   p.DecisionCache.MaxBytes,
		},
	}
	for _, s := range cfg.Services {
		if s.PolicyQuery != "" {
			if pc.ServiceQueries == nil {
				pc.ServiceQueries = map[string]string{}
			}
			pc.ServiceQueries[s.Name] = s.PolicyQuery
		}
	}
	if b := p.Bundle; b != nil {
		bc := &policy.BundleConfig{URL: b.URL, PollInterval: b.PollInterval.D(), KeyID: b.KeyID, Algorithm: b.Algorithm, Scope: b.Scope}
		if b.VerificationKeyFile != "" {
			pem, err := os.ReadFile(b.VerificationKeyFile)
			if err != nil {
				return pc, fmt.Errorf("policy.bundle.verification_key_file: %w", err)
			}
			bc.VerificationKey = string(pem)
		}
		pc.Bundle = bc
	}
	return pc, nil
}

// pipelineParts builds the optional stages and returns the authz options
// that plug them in.
func (a *App) pipelineParts(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) ([]authz.Option, error) {
	var opts []authz.Option
	if cfg.Policy.Enabled() {
		pc, err := PolicyConfig(cfg)
		if err != nil {
			return nil, err
		}
		eng, err := policy.New(pc, policy.WithLogger(log), policy.WithRegisterer(reg))
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		a.policy = eng
		opts = append(opts, authz.WithPolicy(eng))
	}
	if cfg.InternalToken.Enabled {
		store, closeStore, err := OpenKeyStore(cfg)
		if err != nil {
			return nil, err
		}
		a.closers = append(a.closers, closeStore)
		kr, err := keyring.New(KeyringConfig(cfg), store, keyring.WithLogger(log), keyring.WithRegisterer(reg))
		if err != nil {
			return nil, fmt.Errorf("internal_token/keys: %w", err)
		}
		a.keyring = kr
		opts = append(opts, authz.WithMinter(kr, authz.MintConfig{Header: cfg.InternalToken.Header, ForJWT: *cfg.InternalToken.ForJWT}))
	}
	if cfg.Sessions.Enabled() {
		st, err := session.New(SessionConfig(cfg), session.WithLogger(log), session.WithRegisterer(reg))
		if err != nil {
			return nil, fmt.Errorf("sessions: %w", err)
		}
		a.sessions = st
		opts = append(opts, authz.WithSessions(st, authz.SessionConfig{
			Cookie:                cfg.Sessions.Cookie,
			Header:                cfg.Sessions.Header,
			PreferJWT:             cfg.Sessions.Precedence == "jwt",
			AnonymousOnStoreError: cfg.Sessions.OnStoreError == "anonymous",
		}))
		switch {
		case cfg.Server.AdminAddress != "" && cfg.Admin.TokenFile == "":
			// The admin API never runs unauthenticated.
			log.Warn("admin API not started: server.admin_address is set but admin.token_file is not")
		case cfg.Server.AdminAddress != "":
			tok, err := os.ReadFile(cfg.Admin.TokenFile)
			if err != nil {
				return nil, fmt.Errorf("admin.token_file: %w", err)
			}
			h, err := session.NewAdminHandler(st, strings.TrimRight(string(tok), "\r\n"), session.WithLogger(log))
			if err != nil {
				return nil, fmt.Errorf("admin.token_file: %w", err)
			}
			a.adminHandler = h
		}
	} else if cfg.Server.AdminAddress != "" {
		log.Warn("server.admin_address is set but sessions are not enabled: the admin API does not start")
	}
	return opts, nil
}

// startParts starts the optional stages in dependency order; signing keys
// must be loaded before the first Check can mint.
func (a *App) startParts(ctx context.Context) error {
	if a.keyring != nil {
		if err := a.keyring.Start(ctx); err != nil {
			return fmt.Errorf("start signing keys: %w", err)
		}
		a.started = append(a.started, a.keyring.Stop)
	}
	if a.sessions != nil {
		if err := a.sessions.Start(ctx); err != nil {
			return fmt.Errorf("start session store: %w", err)
		}
		a.started = append(a.started, a.sessions.Stop)
	}
	if a.policy != nil {
		if err := a.policy.Start(ctx); err != nil {
			return fmt.Errorf("start policy engine: %w", err)
		}
		a.started = append(a.started, a.policy.Stop)
	}
	return nil
}

// stopParts stops what startParts started, in reverse, then releases
// stores.
func (a *App) stopParts(ctx context.Context) error {
	var errs []error
	for i := len(a.started) - 1; i >= 0; i-- {
		if err := a.started[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	a.started = nil
	for _, c := range a.closers {
		c()
	}
	a.closers = nil
	return errors.Join(errs...)
}

// CheckReport is what Check found beyond errors.
type CheckReport struct {
	// Queries describes each policy query (decision caching), in load
	// order; empty without local policy files.
	Queries []policy.QueryInfo
}

// Check validates what `tollgate serve` would build from cfg without
// side effects: no listener, no network, no key or session store opened.
// Policies are compiled, so their errors name file and line.
func Check(cfg *config.Config) (CheckReport, error) {
	var rep CheckReport
	var errs []error
	if cfg.Policy.Enabled() {
		pc, err := PolicyConfig(cfg)
		if err == nil {
			rep.Queries, err = policy.Check(pc)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("policy: %w", err))
		}
	}
	if cfg.InternalToken.Enabled {
		if err := KeyringConfig(cfg).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("internal_token/keys: %w", err))
		}
	}
	if cfg.Sessions.Enabled() {
		if err := SessionConfig(cfg).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("sessions: %w", err))
		}
	}
	return rep, errors.Join(errs...)
}

// RedisLogger adapts go-redis's process-wide logger (connection errors
// while Redis is down) to slog, so those lines are structured like the
// rest. Install it once with redis.SetLogger from main.
func RedisLogger(log *slog.Logger) interface {
	Printf(ctx context.Context, format string, v ...any)
} {
	return redisLogger{log}
}

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis client", "message", fmt.Sprintf(format, v...))
}
