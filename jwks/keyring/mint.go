package keyring

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

// MintRequest asks for an internal token.
type MintRequest struct {
	// CacheKey identifies the caller's identity, e.g. a hash of the
	// outside credential. A token minted for the same (CacheKey, Subject,
	// Audience, copied claims) is reused until half its lifetime has
	// passed. "" disables reuse for this request.
	CacheKey string
	// Subject becomes "sub"; omitted when empty.
	Subject string
	// Audience becomes "aud", a single string: the destination service's
	// internal audience. "" and "*" are refused.
	Audience string
	// Claims are the caller's identity claims. Only the names in
	// Config.Claims are copied, in that order; everything else, including
	// registered claim names, is ignored.
	Claims map[string]any
}

var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Mint returns a compact JWS internal token for req, signed by the active
// key: protected header {alg, kid, typ: JWT}; claims iss, sub, aud, iat,
// nbf (= iat), exp (= iat + TTL), jti (random 128-bit, base64url) and the
// configured identity claims. Every error is a *reason.Error with code
// reason.SigningUnavailable; its cause may be ErrInvalidAudience,
// ErrNoActiveKey, a context error or a signer failure.
//
// Mint never returns a token signed by a key that has been revoked by the
// time Mint returns.
func (k *Keyring) Mint(ctx context.Context, req MintRequest) (string, error) {
	if req.Audience == "" || req.Audience == "*" {
		return "", k.mintError(ErrInvalidAudience)
	}
	if err := ctx.Err(); err != nil {
		return "", k.mintError(err)
	}
	v := k.view.Load()
	if v == nil || v.active == nil {
		return "", k.mintError(ErrNoActiveKey)
	}

	bp := scratchPool.Get().(*[]byte)
	defer scratchPool.Put(bp)
	buf := (*bp)[:0]

	cache := k.cache.Load()
	useCache := cache != nil && req.CacheKey != ""
	if useCache {
		// Unambiguous: lengths prefix the caller-controlled strings.
		buf = strconv.AppendInt(buf, int64(len(req.CacheKey)), 10)
		buf = append(buf, ':')
		buf = append(buf, req.CacheKey...)
		buf = strconv.AppendInt(buf, int64(len(req.Subject)), 10)
		buf = append(buf, ':')
		buf = append(buf, req.Subject...)
		buf = strconv.AppendInt(buf, int64(len(req.Audience)), 10)
		buf = append(buf, ':')
		buf = append(buf, req.Audience...)
	}
	off := len(buf)
	buf, err := k.appendClaims(buf, req.Claims)
	*bp = buf
	if err != nil {
		return "", k.mintError(err)
	}
	now := k.now()
	var id [32]byte
	if useCache {
		id = sha256.Sum256(buf)
		if tok, ok := cache.get(id, v.active.KID, now.UnixNano()); ok {
			k.metrics.cacheHit()
			k.metrics.minted(mintReused)
			return tok, nil
		}
		k.metrics.cacheMiss()
	}
	claims := buf[off:]
	for attempt := 0; ; attempt++ {
		key := v.active
		tok, refreshAt, err := k.signToken(key, now, &req, claims)
		if err != nil {
			// Perhaps another process destroyed the key (a revocation
			// through the CLI on a store without notifications): have the
			// owner goroutine re-read the store now rather than at the
			// next poll.
			select {
			case k.refresh <- struct{}{}:
			default:
			}
			return "", k.mintError(err)
		}
		// A revocation may have completed while we signed: never hand out
		// a token whose key has left the published set.
		if v2 := k.view.Load(); v2 != v {
			if nk := v2.byKID[key.KID]; nk == nil || !nk.State.published() {
				if v2.active == nil || attempt >= 2 {
					return "", k.mintError(ErrNoActiveKey)
				}
				v = v2
				continue
			}
		}
		if useCache {
			// The current cache, which may have been cleared meanwhile;
			// entries carry their kid, so a stale one is never served.
			if c := k.cache.Load(); c != nil {
				c.put(id, mintEntry{token: tok, kid: key.KID, refreshAt: refreshAt}, now.UnixNano())
			}
		}
		k.metrics.minted(mintSigned)
		return tok, nil
	}
}

func (k *Keyring) mintError(err error) error {
	k.metrics.minted(mintError)
	return reason.Wrap(reason.SigningUnavailable, err)
}

// signToken builds and signs the token. It returns the token and the
// instant (Unix ns) until which it may be reused.
func (k *Keyring) signToken(key *signingKey, now time.Time, req *MintRequest, claims []byte) (string, int64, error) {
	iat := now.Unix()
	ttl := int64(k.cfg.TTL / time.Second)
	var jti [16]byte
	_, _ = rand.Read(jti[:]) // never fails (crypto/rand crashes the program instead)

	pp := scratchPool.Get().(*[]byte)
	defer scratchPool.Put(pp)
	p := append((*pp)[:0], k.payloadHead...)
	if req.Subject != "" {
		p = append(p, `,"sub":`...)
		p = appendJSONString(p, req.Subject)
	}
	p = append(p, `,"aud":`...)
	p = appendJSONString(p, req.Audience)
	p = append(p, `,"iat":`...)
	p = strconv.AppendInt(p, iat, 10)
	p = append(p, `,"nbf":`...)
	p = strconv.AppendInt(p, iat, 10)
	p = append(p, `,"exp":`...)
	p = strconv.AppendInt(p, iat+ttl, 10)
	p = append(p, `,"jti":"`...)
	p = b64.AppendEncode(p, jti[:])
	p = append(p, '"')
	p = append(p, claims...)
	p = append(p, '}')
	*pp = p

	sigLen := 64
	if pub, ok := key.signer.Public().(*rsa.PublicKey); ok {
		sigLen = pub.Size()
	}
	tok := make([]byte, 0, len(key.header)+b64.EncodedLen(len(p))+1+b64.EncodedLen(sigLen))
	tok = append(tok, key.header...)
	tok = b64.AppendEncode(tok, p)
	start := time.Now()
	sig, err := sign(key.signer, key.Alg, tok)
	if err != nil {
		return "", 0, fmt.Errorf("signing with key %s: %w", key.KID, err)
	}
	k.metrics.signed(key.Alg, time.Since(start))
	tok = append(tok, '.')
	tok = b64.AppendEncode(tok, sig)
	return string(tok), iat*int64(time.Second) + int64(k.cfg.TTL/2), nil
}

// appendClaims appends `,"name":value` for every configured claim present
// in claims, in configuration order.
func (k *Keyring) appendClaims(buf []byte, claims map[string]any) ([]byte, error) {
	if len(claims) == 0 {
		return buf, nil
	}
	for i, name := range k.cfg.Claims {
		v, ok := claims[name]
		if !ok {
			continue
		}
		buf = append(buf, k.claimPrefix[i]...)
		var err error
		if buf, err = appendJSONValue(buf, v); err != nil {
			return buf, fmt.Errorf("claim %q: %w", name, err)
		}
	}
	return buf, nil
}

// appendJSONValue appends the JSON encoding of v. Common claim shapes are
// encoded directly; anything else goes through encoding/json (maps with
// sorted keys, so the encoding is deterministic).
func appendJSONValue(buf []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(buf, "null"...), nil
	case string:
		return appendJSONString(buf, x), nil
	case bool:
		return strconv.AppendBool(buf, x), nil
	case int:
		return strconv.AppendInt(buf, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(buf, x, 10), nil
	case []string:
		buf = append(buf, '[')
		for i, s := range x {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSONString(buf, s)
		}
		return append(buf, ']'), nil
	case []any:
		buf = append(buf, '[')
		for i, e := range x {
			if i > 0 {
				buf = append(buf, ',')
			}
			var err error
			if buf, err = appendJSONValue(buf, e); err != nil {
				return buf, err
			}
		}
		return append(buf, ']'), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return buf, err
	}
	return append(buf, b...), nil
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does; control characters, U+2028 and U+2029
// are escaped.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// mintCache holds minted tokens for reuse. It is bounded by entries,
// sharded to keep lock contention low, and replaced wholesale when the
// active key changes or a key is revoked.
type mintCache struct {
	perShard int
	shards   [mintShards]mintShard
}

const mintShards = 32

type mintShard struct {
	mu sync.Mutex
	m  map[[32]byte]mintEntry
	_  [40]byte // keep shards on separate cache lines
}

type mintEntry struct {
	token     string
	kid       string
	refreshAt int64 // Unix ns: iat + TTL/2
}

func newMintCache(maxEntries int) *mintCache {
	c := &mintCache{perShard: max(1, (maxEntries+mintShards-1)/mintShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[[32]byte]mintEntry)
	}
	return c
}

func (c *mintCache) get(id [32]byte, kid string, now int64) (string, bool) {
	s := &c.shards[id[0]%mintShards]
	s.mu.Lock()
	e, ok := s.m[id]
	if ok && (e.kid != kid || now >= e.refreshAt) {
		delete(s.m, id)
		ok = false
	}
	s.mu.Unlock()
	return e.token, ok
}

func (c *mintCache) put(id [32]byte, e mintEntry, now int64) {
	s := &c.shards[id[0]%mintShards]
	s.mu.Lock()
	if _, exists := s.m[id]; !exists && len(s.m) >= c.perShard {
		// Evict: stale entries among a few visited first, else the first
		// visited (map iteration starts at a random place).
		var victim [32]byte
		seen := 0
		for key, old := range s.m {
			if seen == 0 {
				victim = key
			}
			if now >= old.refreshAt {
				victim = key
				break
			}
			if seen++; seen >= 8 {
				break
			}
		}
		delete(s.m, victim)
	}
	s.m[id] = e
	s.mu.Unlock()
}

func (c *mintCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
