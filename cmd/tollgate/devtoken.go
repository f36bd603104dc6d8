package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/internal/devissuer"
)

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func devToken(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("dev-token", flag.ContinueOnError)
	path := fs.String("config", "", "config file whose dev section to use (default: embedded development config)")
	sub := fs.String("sub", "dev-user", "subject")
	ttl := fs.Duration("ttl", time.Hour, "lifetime")
	var aud, claims listFlag
	fs.Var(&aud, "aud", "audience (repeatable; default dev)")
	fs.Var(&claims, "claim", "extra claim name=value (repeatable; value parsed as JSON when it is JSON, e.g. roles=[\"admin\"])")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if !cfg.Dev.Enabled {
		return errors.New("dev-token: dev.enabled is false in this config")
	}
	if len(aud) == 0 {
		aud = listFlag{"dev"}
	}
	extra := map[string]any{}
	for _, c := range claims {
		k, v, ok := strings.Cut(c, "=")
		if !ok || k == "" {
			return fmt.Errorf("dev-token: --claim %q: want name=value", c)
		}
		var j any
		if json.Unmarshal([]byte(v), &j) == nil {
			extra[k] = j
		} else {
			extra[k] = v
		}
	}
	iss, err := devissuer.LoadOrCreate(cfg.Dev.Issuer, cfg.Dev.KeyFile)
	if err != nil {
		return err
	}
	tok, err := iss.Mint(*sub, aud, *ttl, extra, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
