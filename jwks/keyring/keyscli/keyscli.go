// Package keyscli implements `tollgate keys`: list, rotate and revoke the
// internal-token signing keys directly in their store, whether or not a
// server is running (running servers see the change through the store's
// notifications or their next poll).
package keyscli

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/jwks/keyring"
)

const usage = `usage: tollgate keys <list|rotate|revoke KID> [flags]

  list          print every key with its state and times
  rotate        promote the next key if it has been published for at least
                --publish-ahead, else publish a next key (see Keyring.Rotate)
  revoke KID    withdraw KID at once; a fresh key signs if KID was active

store flags:
  --store file|redis|pkcs11
  file:   --dir DIR
  redis:  --redis-addr HOST:PORT (repeatable) [--redis-username U]
          [--redis-password-file F] [--redis-db N] [--redis-tls]
          [--redis-prefix P] --kek-file F | --kek-env VAR
  pkcs11: --module PATH --token-label L --pin-file F --state-file F

schedule flags (must match the server's config; defaults are its defaults):
  --algorithm ES256|RS256|EdDSA  --rsa-bits N  --ttl D
  --rotation-period D  --grace-period D  --publish-ahead D
  --timeout D (default 30s)
`

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type flags struct {
	store string
	dir   string

	redisAddrs    listFlag
	redisUser     string
	redisPassFile string
	redisDB       int
	redisTLS      bool
	redisPrefix   string
	kekFile       string
	kekEnv        string

	module     string
	tokenLabel string
	pinFile    string
	stateFile  string

	alg            string
	rsaBits        int
	ttl            time.Duration
	rotationPeriod time.Duration
	gracePeriod    time.Duration
	publishAhead   time.Duration
	timeout        time.Duration
}

// Run executes `tollgate keys` with args (after "keys") and returns the
// process exit code: 0 success, 1 failure, 2 usage error.
func Run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := args[0]
	switch cmd {
	case "list", "rotate", "revoke":
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "tollgate keys: unknown command %q\n%s", cmd, usage)
		return 2
	}
	var f flags
	fs := flag.NewFlagSet("keys "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.store, "store", "", "file, redis or pkcs11")
	fs.StringVar(&f.dir, "dir", "", "file store directory")
	fs.Var(&f.redisAddrs, "redis-addr", "redis address (repeatable)")
	fs.StringVar(&f.redisUser, "redis-username", "", "redis ACL user")
	fs.StringVar(&f.redisPassFile, "redis-password-file", "", "file holding the redis password")
	fs.IntVar(&f.redisDB, "redis-db", 0, "redis database")
	fs.BoolVar(&f.redisTLS, "redis-tls", false, "connect to redis over TLS")
	fs.StringVar(&f.redisPrefix, "redis-prefix", "", "redis key prefix (default "+keyring.DefaultRedisPrefix+")")
	fs.StringVar(&f.kekFile, "kek-file", "", "file holding the 32-byte KEK (raw or base64)")
	fs.StringVar(&f.kekEnv, "kek-env", "", "environment variable holding the base64 KEK")
	fs.StringVar(&f.module, "module", "", "PKCS #11 module path")
	fs.StringVar(&f.tokenLabel, "token-label", "", "PKCS #11 token label")
	fs.StringVar(&f.pinFile, "pin-file", "", "file holding the token user PIN")
	fs.StringVar(&f.stateFile, "state-file", "", "pkcs11 store metadata file")
	fs.StringVar(&f.alg, "algorithm", string(keyring.DefaultAlgorithm), "algorithm of new keys")
	fs.IntVar(&f.rsaBits, "rsa-bits", keyring.DefaultRSABits, "RSA key size for RS256")
	fs.DurationVar(&f.ttl, "ttl", keyring.DefaultTTL, "internal token lifetime")
	fs.DurationVar(&f.rotationPeriod, "rotation-period", keyring.DefaultRotationPeriod, "rotation period")
	fs.DurationVar(&f.gracePeriod, "grace-period", keyring.DefaultGracePeriod, "grace period")
	fs.DurationVar(&f.publishAhead, "publish-ahead", keyring.DefaultPublishAhead, "publish-ahead time")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "bound on the whole command")

	// Flags may come before or after the positional KID. A kid is
	// base64url and may start with "-": for revoke, the first argument
	// that names no defined flag is the KID, not a flag error.
	var pos []string
	var rest []string
	for _, a := range args[1:] {
		if cmd == "revoke" && len(pos) == 0 && isUndefinedFlag(fs, a) {
			pos = append(pos, a)
			continue
		}
		rest = append(rest, a)
	}
	for {
		if err := fs.Parse(rest); err != nil {
			fmt.Fprintf(stderr, "tollgate keys %s: %v\n%s", cmd, err, usage)
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	want := 0
	if cmd == "revoke" {
		want = 1
	}
	if len(pos) != want {
		fmt.Fprintf(stderr, "tollgate keys %s: want %d argument(s), got %d\n%s", cmd, want, len(pos), usage)
		return 2
	}

	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	store, closeStore, err := openStore(&f)
	if err != nil {
		fmt.Fprintln(stderr, "tollgate keys:", err)
		return 1
	}
	defer closeStore()
	kr, err := keyring.New(keyring.Config{
		// The CLI never mints: the issuer only satisfies validation.
		Issuer:         "https://keys-cli.invalid",
		Algorithm:      keyring.Algorithm(f.alg),
		RSABits:        f.rsaBits,
		TTL:            f.ttl,
		RotationPeriod: f.rotationPeriod,
		GracePeriod:    f.gracePeriod,
		PublishAhead:   f.publishAhead,
	}, store, keyring.WithLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))))
	if err != nil {
		fmt.Fprintln(stderr, "tollgate keys:", err)
		return 2
	}
	switch cmd {
	case "rotate":
		ki, err := kr.Rotate(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "tollgate keys:", err)
			return 1
		}
		if ki.State == keyring.StateActive {
			fmt.Fprintf(stdout, "key %s is now active\n\n", ki.KID)
		} else {
			fmt.Fprintf(stdout, "key %s is published and becomes active at %s (or run rotate again then)\n\n", ki.KID, ki.ActivateAt.UTC().Format(time.RFC3339))
		}
	case "revoke":
		if err := kr.Revoke(ctx, pos[0]); err != nil {
			fmt.Fprintln(stderr, "tollgate keys:", err)
			return 1
		}
		fmt.Fprintf(stdout, "key %s revoked\n\n", pos[0])
	}
	keys, err := kr.List(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "tollgate keys:", err)
		return 1
	}
	WriteTable(stdout, keys)
	return 0
}

// WriteTable prints keys as an aligned table, times in UTC RFC 3339.
func WriteTable(w io.Writer, keys []keyring.KeyInfo) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tALG\tSTATE\tPUBLISHED\tCREATED\tACTIVATES\tACTIVATED\tRETIRED\tREVOKED\tEXPIRES")
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	for _, k := range keys {
		pub := "no"
		if k.Published {
			pub = "yes"
		}
		activates := k.ActivateAt
		if k.State != keyring.StateNext {
			activates = time.Time{}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.KID, k.Alg, k.State, pub,
			ts(k.CreatedAt), ts(activates), ts(k.ActivatedAt), ts(k.RetiredAt), ts(k.RevokedAt), ts(k.ExpiresAt))
	}
	_ = tw.Flush()
}

func openStore(f *flags) (keyring.Store, func(), error) {
	switch f.store {
	case "file":
		if f.dir == "" {
			return nil, nil, errors.New("--dir is required with --store file")
		}
		s, err := keyring.NewFileStore(f.dir)
		if err != nil {
			return nil, nil, err
		}
		return s, func() { _ = s.Close() }, nil
	case "redis":
		if len(f.redisAddrs) == 0 {
			return nil, nil, errors.New("--redis-addr is required with --store redis")
		}
		kek, err := keyring.LoadKEK(f.kekFile, f.kekEnv)
		if err != nil {
			return nil, nil, err
		}
		opts := &redis.UniversalOptions{
			Addrs:        f.redisAddrs,
			Username:     f.redisUser,
			DB:           f.redisDB,
			DialTimeout:  5 * time.Second,
			ReadTimeout:  5 * time.Second,
			WriteTimeout: 5 * time.Second,
		}
		if f.redisPassFile != "" {
			b, err := os.ReadFile(f.redisPassFile)
			if err != nil {
				return nil, nil, fmt.Errorf("--redis-password-file: %w", err)
			}
			opts.Password = strings.TrimSpace(string(b))
		}
		if f.redisTLS {
			opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		client := redis.NewUniversalClient(opts)
		s, err := keyring.NewRedisStore(keyring.RedisStoreConfig{Client: client, KEK: kek, Prefix: f.redisPrefix})
		if err != nil {
			_ = client.Close()
			return nil, nil, err
		}
		return s, func() { _ = client.Close() }, nil
	case "pkcs11":
		s, err := keyring.NewPKCS11Store(keyring.PKCS11Config{
			Module: f.module, TokenLabel: f.tokenLabel, PinFile: f.pinFile, StateFile: f.stateFile,
		})
		if err != nil {
			return nil, nil, err
		}
		return s, func() { _ = s.Close() }, nil
	case "":
		return nil, nil, errors.New("--store is required (file, redis or pkcs11)")
	}
	return nil, nil, fmt.Errorf("--store %q: want file, redis or pkcs11", f.store)
}

// isUndefinedFlag reports whether a looks like a flag but names none of
// fs's flags (e.g. a kid such as "-knavoGh0…").
func isUndefinedFlag(fs *flag.FlagSet, a string) bool {
	if len(a) < 2 || a[0] != '-' || a == "--" {
		return false
	}
	name := strings.TrimLeft(a, "-")
	name, _, _ = strings.Cut(name, "=")
	return fs.Lookup(name) == nil
}
