package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/jwks/keyring/keyscli"
)

// keysCmd runs `tollgate keys list|rotate|revoke KID`. With --config FILE
// the store and key policy come from the config's internal_token and keys
// sections (so the CLI and the server can never disagree); otherwise from
// the store flags. Exit code 0 ok, 1 failure, 2 usage.
func keysCmd(args []string, stdout, stderr io.Writer) int {
	var rest []string
	path := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--config" || a == "-config":
			if i+1 >= len(args) {
				fmt.Fprintln(stderr, "tollgate keys: --config needs a file")
				return 2
			}
			path = args[i+1]
			i++
		case strings.HasPrefix(a, "--config="):
			path = strings.TrimPrefix(a, "--config=")
		default:
			rest = append(rest, a)
		}
	}
	if path == "" {
		return keyscli.Run(args, stdout, stderr)
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, "tollgate keys:", err)
		return 1
	}
	if len(rest) == 0 {
		return keyscli.Run(rest, stdout, stderr)
	}
	return keyscli.Run(append([]string{rest[0]}, append(keyFlags(cfg), rest[1:]...)...), stdout, stderr)
}

// keyFlags renders the config's key settings as keyscli flags.
func keyFlags(cfg *config.Config) []string {
	k, it := cfg.Keys, cfg.InternalToken
	f := []string{
		"--store", k.Store,
		"--algorithm", it.Algorithm,
		"--ttl", it.TTL.D().String(),
		"--rotation-period", k.RotationPeriod.D().String(),
		"--grace-period", k.GracePeriod.D().String(),
		"--publish-ahead", k.PublishAhead.D().String(),
	}
	switch k.Store {
	case "file":
		f = append(f, "--dir", k.Dir)
	case "redis":
		for _, a := range k.Redis.Addrs {
			f = append(f, "--redis-addr", a)
		}
		if k.Redis.Username != "" {
			f = append(f, "--redis-username", k.Redis.Username)
		}
		if k.Redis.PasswordFile != "" {
			f = append(f, "--redis-password-file", k.Redis.PasswordFile)
		}
		f = append(f, "--redis-db", fmt.Sprint(k.Redis.DB))
		if k.Redis.TLS.Enabled {
			f = append(f, "--redis-tls")
		}
		if k.Redis.KEKFile != "" {
			f = append(f, "--kek-file", k.Redis.KEKFile)
		}
		if k.Redis.KEKEnv != "" {
			f = append(f, "--kek-env", k.Redis.KEKEnv)
		}
	case "pkcs11":
		f = append(f, "--module", k.PKCS11.Module, "--token-label", k.PKCS11.TokenLabel,
			"--pin-file", k.PKCS11.PINFile, "--state-file", k.PKCS11.StateFile)
	}
	return f
}
