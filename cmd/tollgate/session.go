package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tollgate-dev/tollgate/internal/config"
	"github.com/tollgate-dev/tollgate/session"
)

const sessionUsage = `usage: tollgate session <command> [flags] [ARG]

commands:
  create --subject S [--claim k=v]... [--claim-json k=JSON]... [--meta k=v]... [--ttl 1h]
                          create a session and print its ID
  get ID                  print a session's record
  revoke ID               log one session out
  revoke-subject SUBJECT  log a subject out of every device
  list SUBJECT            list a subject's live sessions

An ID argument of "-" is read from standard input, which keeps it out of
the process list and shell history.

flags of every command:
  --admin URL       session admin API base URL
  --token-file F    file holding the admin bearer token
                    (give both, or neither for the development mode's
                    http://127.0.0.1:8282 and .tollgate/admin-token)
  --timeout D       request timeout (default 10s)
  --json            print the API's JSON instead of text
`

var _ = sessionCmd // dispatched from main

// sessionCmd runs "tollgate session …" against the session admin API.
// Exit status: 0 success, 1 the request failed, 2 usage error.
func sessionCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, sessionUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("session "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, sessionUsage) }
	admin := fs.String("admin", "", "session admin API base URL")
	tokenFile := fs.String("token-file", "", "file holding the admin token")
	timeout := fs.Duration("timeout", 10*time.Second, "request timeout")
	asJSON := fs.Bool("json", false, "print JSON")
	var subject, ttl string
	var claims, claimsJSON, meta sessionKVList
	if cmd == "create" {
		fs.StringVar(&subject, "subject", "", "session subject (required)")
		fs.StringVar(&ttl, "ttl", "", "absolute lifetime such as 1h (default: the server's absolute timeout)")
		fs.Var(&claims, "claim", "string claim k=v (repeat a key for a list)")
		fs.Var(&claimsJSON, "claim-json", "claim k=JSON value")
		fs.Var(&meta, "meta", "metadata k=v")
	}
	pos, err := parseInterspersed(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "tollgate session %s: %s\n", cmd, fmt.Sprintf(format, a...))
		return 2
	}
	wantArgs := 1
	switch cmd {
	case "create":
		wantArgs = 0
	case "get", "revoke", "revoke-subject", "list":
	default:
		fmt.Fprintf(stderr, "tollgate session: unknown command %q\n%s", cmd, sessionUsage)
		return 2
	}
	if len(pos) != wantArgs {
		return usageErr("want %d argument(s), got %d", wantArgs, len(pos))
	}
	if *admin == "" && *tokenFile == "" {
		// The development mode's admin API, as `make run` starts it.
		dev := config.Development()
		*admin, *tokenFile = "http://"+dev.Server.AdminAddress, dev.Admin.TokenFile
	}
	if *admin == "" || *tokenFile == "" {
		return usageErr("--admin and --token-file go together")
	}
	token, err := os.ReadFile(*tokenFile)
	if err != nil {
		return usageErr("%v", err)
	}
	c := &session.AdminClient{BaseURL: *admin, Token: strings.TrimSpace(string(token))}
	if c.Token == "" {
		return usageErr("%s holds no token", *tokenFile)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	arg := ""
	if len(pos) == 1 {
		arg = pos[0]
		if arg == "-" && (cmd == "get" || cmd == "revoke") {
			line, err := bufio.NewReader(os.Stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return usageErr("reading the ID from stdin: %v", err)
			}
			arg = strings.TrimSpace(line)
		}
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "tollgate session %s: %v\n", cmd, err)
		return 1
	}
	switch cmd {
	case "create":
		if subject == "" {
			return usageErr("--subject is required")
		}
		req := session.AdminCreateRequest{Subject: subject, TTL: ttl}
		if req.Claims, err = sessionClaims(claims, claimsJSON); err != nil {
			return usageErr("%v", err)
		}
		if len(meta) > 0 {
			req.Metadata = map[string]string{}
			for _, kv := range meta {
				k, v, _ := strings.Cut(kv, "=")
				req.Metadata[k] = v
			}
		}
		out, err := c.Create(ctx, req)
		if err != nil {
			return fail(err)
		}
		if *asJSON {
			return sessionPrintJSON(stdout, out)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "session_id\t%s\nid_hash\t%s\nexpires_at\t%s\n", out.SessionID, out.IDHash, out.ExpiresAt.Format(time.RFC3339))
		_ = tw.Flush()
	case "get":
		rec, err := c.Get(ctx, arg)
		if err != nil {
			return fail(err)
		}
		return sessionPrintJSON(stdout, rec)
	case "revoke":
		if err := c.Revoke(ctx, arg); err != nil {
			return fail(err)
		}
		if !*asJSON {
			fmt.Fprintln(stdout, "revoked")
		}
	case "revoke-subject":
		if err := c.RevokeSubject(ctx, arg); err != nil {
			return fail(err)
		}
		if !*asJSON {
			fmt.Fprintf(stdout, "revoked every session of %q\n", arg)
		}
	case "list":
		recs, err := c.List(ctx, arg)
		if err != nil {
			return fail(err)
		}
		if *asJSON {
			return sessionPrintJSON(stdout, session.AdminSessions{Sessions: recs})
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID_HASH\tCREATED\tLAST_SEEN\tEXPIRES\tMETADATA")
		for _, r := range recs {
			md, _ := json.Marshal(r.Metadata)
			if r.Metadata == nil {
				md = []byte("-")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.IDHash[:12], r.CreatedAt.Format(time.RFC3339),
				r.LastSeen.Format(time.RFC3339), r.ExpiresAt.Format(time.RFC3339), md)
		}
		_ = tw.Flush()
	}
	return 0
}

// sessionKVList collects repeated k=v flags.
type sessionKVList []string

func (l *sessionKVList) String() string { return strings.Join(*l, ",") }

func (l *sessionKVList) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("want k=v, got %q", v)
	}
	*l = append(*l, v)
	return nil
}

// sessionClaims builds the claims: --claim values are strings (a repeated
// key becomes a list), --claim-json values are JSON.
func sessionClaims(plain, raw sessionKVList) (map[string]any, error) {
	if len(plain) == 0 && len(raw) == 0 {
		return nil, nil
	}
	out := map[string]any{}
	for _, kv := range plain {
		k, v, _ := strings.Cut(kv, "=")
		switch prev := out[k].(type) {
		case nil:
			out[k] = v
		case string:
			out[k] = []any{prev, v}
		case []any:
			out[k] = append(prev, v)
		}
	}
	for _, kv := range raw {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("claim %q given twice", k)
		}
		var x any
		if err := json.Unmarshal([]byte(v), &x); err != nil {
			return nil, fmt.Errorf("--claim-json %s: %v", k, err)
		}
		out[k] = x
	}
	return out, nil
}

func sessionPrintJSON(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return 1
	}
	return 0
}
