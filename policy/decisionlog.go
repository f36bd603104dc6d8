package policy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/internal/reason"
	"github.com/tollgate-dev/tollgate/policy/internal/envoyinput"
)

// decisionLog writes one JSON line per decision.
//
// Choice for the hot path: each line is encoded by hand (no reflection)
// into a buffer and copied into a 64 KiB bufio.Writer under a mutex, so an
// Eval pays a memcpy and, once per 64 KiB, the write system call. A
// background loop flushes every second (started by Start); Stop flushes
// the rest. A slow disk therefore stalls at most the Eval that fills the
// buffer. The line holds no input document and no header: only the
// request id, service, the identity's type, issuer and subject, the
// decision and the evaluation time, so no credential can reach it.
type decisionLog struct {
	mu     sync.Mutex
	w      *bufio.Writer
	closer io.Closer // nil for stdout
	buf    []byte
	failed bool // a write failed; further lines are dropped
}

func openDecisionLog(path string) (*decisionLog, error) {
	if path == "-" {
		return &decisionLog{w: bufio.NewWriterSize(os.Stdout, 64<<10)}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	return &decisionLog{w: bufio.NewWriterSize(f, 64<<10), closer: f}, nil
}

type decisionRecord struct {
	ts        time.Time
	requestID string
	service   string
	query     string
	identity  *Identity
	res       Result
	err       error
	eval      time.Duration
	cached    bool // answered by the decision cache
}

func (d *decisionLog) write(r *decisionRecord) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failed {
		return
	}
	b := d.buf[:0]
	b = append(b, `{"timestamp":"`...)
	b = r.ts.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","request_id":`...)
	b = appendJSONString(b, r.requestID)
	b = append(b, `,"service":`...)
	b = appendJSONString(b, r.service)
	b = append(b, `,"query":`...)
	b = appendJSONString(b, r.query)
	typ := r.identity.Type
	if typ == "" {
		typ = IdentityAnonymous
	}
	b = append(b, `,"identity":{"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"issuer":`...)
	b = appendJSONString(b, r.identity.Issuer)
	b = append(b, `,"subject":`...)
	b = appendJSONString(b, r.identity.Subject)
	b = append(b, `},"decision":{"defined":`...)
	b = strconv.AppendBool(b, r.res.Defined)
	b = append(b, `,"allowed":`...)
	b = strconv.AppendBool(b, r.res.Allowed)
	b = append(b, `,"http_status":`...)
	b = strconv.AppendInt(b, int64(r.res.HTTPStatus), 10)
	b = append(b, '}')
	if r.err != nil {
		// The code and OPA's location only: messages may quote input.
		code := string(reason.Of(r.err))
		if errors.Is(r.err, envoyinput.ErrRequest) {
			code = "invalid_request"
		}
		b = append(b, `,"error":`...)
		b = appendJSONString(b, code)
		var ee *EvalError
		if errors.As(r.err, &ee) {
			b = append(b, `,"error_code":`...)
			b = appendJSONString(b, ee.Code)
			if ee.Location != "" {
				b = append(b, `,"error_location":`...)
				b = appendJSONString(b, ee.Location)
			}
		}
	}
	b = append(b, `,"eval_duration_ns":`...)
	b = strconv.AppendInt(b, int64(r.eval), 10)
	if r.cached {
		b = append(b, `,"cached":true`...)
	}
	b = append(b, "}\n"...)
	d.buf = b
	if _, err := d.w.Write(b); err != nil {
		d.failed = true
	}
}

func (d *decisionLog) flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.w.Flush()
}

func (d *decisionLog) flushLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = d.flush()
		}
	}
}

func (d *decisionLog) close() error {
	err := d.flush()
	if d.closer != nil {
		err = errors.Join(err, d.closer.Close())
	}
	return err
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes
// U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// logDecision records one decision when decision logs are enabled.
func (e *Engine) logDecision(start time.Time, in *Input, query string, res Result, err error) {
	e.logRecord(start, in, query, res, err, false)
}

func (e *Engine) logRecord(start time.Time, in *Input, query string, res Result, err error, cached bool) {
	if e.dlog == nil {
		return
	}
	e.dlog.write(&decisionRecord{
		ts: start, requestID: in.RequestID, service: in.Service.Name, query: query,
		identity: &in.Identity, res: res, err: err, eval: e.now().Sub(start), cached: cached,
	})
}
