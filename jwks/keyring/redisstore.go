package keyring

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis store defaults.
const (
	DefaultRedisPrefix  = "tollgate:{keyring}:"
	DefaultRedisLockTTL = 30 * time.Second
)

// RedisStoreConfig configures a RedisStore.
type RedisStoreConfig struct {
	// Client is the Redis connection, shared with the rest of the
	// process. Required; the store never closes it.
	Client redis.UniversalClient
	// KEK is the 32-byte AES-256-GCM key-encryption key every replica
	// shares (see LoadKEK). Required.
	KEK []byte
	// Prefix starts every Redis key and channel name. Its {hash tag}
	// keeps the keys in one Redis Cluster slot. Default
	// "tollgate:{keyring}:".
	Prefix string
	// LockTTL is the expiry of the update lock, so a replica that dies
	// holding it blocks the others no longer than that. Default 30s.
	LockTTL time.Duration
}

// RedisStore keeps keys in Redis, shared by every replica: they all sign
// with the same active key and publish the same set. Layout (P = Prefix):
//
//	P keys    HASH  kid → JSON Record + "sealed_key": base64(nonce ‖
//	                AES-256-GCM(KEK, nonce, PKCS #8 DER, additional data =
//	                kid)), a fresh random 96-bit nonce per seal; revoked
//	                keys keep their record without sealed_key
//	P lock    STRING random token, SET NX PX LockTTL; released only by its
//	                holder (token compared in a Lua script); Updates commit
//	                in a WATCH/MULTI transaction that checks the token
//	                again, so a holder whose lock expired cannot overwrite
//	                a newer commit
//	P events  pub/sub channel; "changed" is published with every commit
//
// The private key never reaches Redis in clear.
type RedisStore struct {
	c       redis.UniversalClient
	aead    cipher.AEAD
	keys    string
	lock    string
	channel string
	lockTTL time.Duration

	mu    sync.Mutex
	cache map[string]redisKey // kid → key, while its ciphertext is unchanged
}

type redisKey struct {
	sealed string
	signer crypto.Signer
}

type redisRecord struct {
	Record
	Sealed string `json:"sealed_key,omitempty"`
}

var (
	_ Store   = (*RedisStore)(nil)
	_ Watcher = (*RedisStore)(nil)
)

// NewRedisStore returns a store on cfg.Client. It does no I/O.
func NewRedisStore(cfg RedisStoreConfig) (*RedisStore, error) {
	if cfg.Client == nil {
		return nil, errors.New("keyring: redis store: client is required")
	}
	if len(cfg.KEK) != 32 {
		return nil, fmt.Errorf("keyring: redis store: KEK must be 32 bytes, got %d", len(cfg.KEK))
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultRedisPrefix
	}
	if cfg.LockTTL == 0 {
		cfg.LockTTL = DefaultRedisLockTTL
	}
	if cfg.LockTTL < time.Second {
		return nil, errors.New("keyring: redis store: lock TTL must be at least 1s")
	}
	block, err := aes.NewCipher(cfg.KEK)
	if err != nil {
		return nil, fmt.Errorf("keyring: redis store: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("keyring: redis store: %w", err)
	}
	return &RedisStore{
		c:       cfg.Client,
		aead:    aead,
		keys:    cfg.Prefix + "keys",
		lock:    cfg.Prefix + "lock",
		channel: cfg.Prefix + "events",
		lockTTL: cfg.LockTTL,
		cache:   map[string]redisKey{},
	}, nil
}

// LoadKEK reads a 32-byte key-encryption key from file or from the
// environment variable env (exactly one must be given). The value is
// either the 32 raw bytes (file only) or their standard or URL-safe
// base64 encoding, surrounding whitespace ignored.
func LoadKEK(file, env string) ([]byte, error) {
	var raw []byte
	switch {
	case file != "" && env != "":
		return nil, errors.New("keyring: KEK: set either kek_file or kek_env, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("keyring: KEK: %w", err)
		}
		if len(b) == 32 {
			return b, nil
		}
		raw = b
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok {
			return nil, fmt.Errorf("keyring: KEK: environment variable %s is not set", env)
		}
		raw = []byte(v)
	default:
		return nil, errors.New("keyring: KEK: kek_file or kek_env is required")
	}
	s := strings.TrimSpace(string(raw))
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) != 32 {
				return nil, fmt.Errorf("keyring: KEK: decodes to %d bytes, want 32", len(k))
			}
			return k, nil
		}
	}
	return nil, errors.New("keyring: KEK: want 32 raw bytes or their base64 encoding")
}

func (s *RedisStore) seal(kid string, der []byte) string {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(der)+s.aead.Overhead())
	_, _ = rand.Read(nonce)
	out := s.aead.Seal(nonce, nonce, der, []byte(kid))
	return base64.StdEncoding.EncodeToString(out)
}

func (s *RedisStore) open(kid, sealed string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(b) < s.aead.NonceSize()+s.aead.Overhead() {
		return nil, errors.New("malformed sealed key")
	}
	n := s.aead.NonceSize()
	der, err := s.aead.Open(nil, b[:n], b[n:], []byte(kid))
	if err != nil {
		return nil, errors.New("cannot decrypt the key (wrong KEK, or the value was moved to another kid)")
	}
	return der, nil
}

// Close releases nothing (the client belongs to the caller); it exists so
// every store is an io.Closer.
func (s *RedisStore) Close() error { return nil }

// Load implements Store.
func (s *RedisStore) Load(ctx context.Context) ([]StoredKey, error) {
	keys, _, err := s.load(ctx, s.c)
	return keys, err
}

func (s *RedisStore) load(ctx context.Context, c redis.Cmdable) ([]StoredKey, map[string]string, error) {
	m, err := c.HGetAll(ctx, s.keys).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("redis store: %w", err)
	}
	out := make([]StoredKey, 0, len(m))
	sealed := make(map[string]string, len(m))
	for field, val := range m {
		var r redisRecord
		if err := json.Unmarshal([]byte(val), &r); err != nil {
			return nil, nil, fmt.Errorf("redis store: key %q: %w", field, err)
		}
		if r.KID != field || !validKID(r.KID) || !r.Alg.valid() {
			return nil, nil, fmt.Errorf("redis store: key %q: malformed record", field)
		}
		sk := StoredKey{Record: r.Record}
		if r.State != StateRevoked {
			if sk.Signer, err = s.signer(r.KID, r.Alg, r.Sealed); err != nil {
				return nil, nil, fmt.Errorf("redis store: key %s: %w", r.KID, err)
			}
			sealed[r.KID] = r.Sealed
		}
		out = append(out, sk)
	}
	s.mu.Lock()
	maps.DeleteFunc(s.cache, func(kid string, _ redisKey) bool { _, ok := sealed[kid]; return !ok })
	s.mu.Unlock()
	return out, sealed, nil
}

func (s *RedisStore) signer(kid string, alg Algorithm, sealed string) (crypto.Signer, error) {
	s.mu.Lock()
	c, ok := s.cache[kid]
	s.mu.Unlock()
	if ok && c.sealed == sealed {
		return c.signer, nil
	}
	der, err := s.open(kid, sealed)
	if err != nil {
		return nil, err
	}
	defer clear(der)
	signer, err := parsePrivate(der, alg, kid)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.cache[kid] = redisKey{sealed: sealed, signer: signer}
	s.mu.Unlock()
	return signer, nil
}

var releaseLock = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)

var errLockLost = errors.New("redis store: update lock lost (expired) before commit")

// acquire takes the update lock, retrying until ctx ends.
func (s *RedisStore) acquire(ctx context.Context) (token string, err error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token = hex.EncodeToString(b[:])
	wait := 10 * time.Millisecond
	for {
		ok, err := s.c.SetNX(ctx, s.lock, token, s.lockTTL).Result()
		if err != nil {
			return "", fmt.Errorf("redis store: lock: %w", err)
		}
		if ok {
			return token, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("redis store: lock: %w", ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

func (s *RedisStore) release(token string) {
	// Release even when the caller's context has ended.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = releaseLock.Run(ctx, s.c, []string{s.lock}, token).Err()
}

// Update implements Store.
func (s *RedisStore) Update(ctx context.Context, fn UpdateFunc) ([]StoredKey, error) {
	token, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer s.release(token)
	cur, sealed, err := s.load(ctx, s.c)
	if err != nil {
		return nil, err
	}
	signers := map[string]crypto.Signer{}
	for _, c := range cur {
		if c.Signer != nil {
			signers[c.KID] = c.Signer
		}
	}
	gen := func(spec KeySpec) (StoredKey, error) {
		signer, err := generateSoftware(spec)
		if err != nil {
			return StoredKey{}, err
		}
		kid, err := Thumbprint(signer.Public())
		if err != nil {
			return StoredKey{}, err
		}
		signers[kid] = signer
		return StoredKey{Record: Record{KID: kid, Alg: spec.Alg}, Signer: signer}, nil
	}
	recs, err := fn(cur, gen)
	if err != nil {
		return nil, err
	}
	out, err := committed(recs, signers)
	if err != nil {
		return nil, fmt.Errorf("redis store: %w", err)
	}
	fields := make([]any, 0, 2*len(out))
	for _, k := range out {
		r := redisRecord{Record: k.Record}
		if k.Signer != nil {
			if r.Sealed = sealed[k.KID]; r.Sealed == "" {
				der, err := marshalPrivate(k.Signer)
				if err != nil {
					return nil, fmt.Errorf("redis store: %w", err)
				}
				r.Sealed = s.seal(k.KID, der)
				clear(der)
			}
		}
		b, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("redis store: %w", err)
		}
		fields = append(fields, k.KID, string(b))
	}
	err = s.c.Watch(ctx, func(tx *redis.Tx) error {
		holder, err := tx.Get(ctx, s.lock).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if holder != token {
			return errLockLost
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, s.keys)
			if len(fields) > 0 {
				p.HSet(ctx, s.keys, fields...)
			}
			p.Publish(ctx, s.channel, "changed")
			return nil
		})
		return err
	}, s.lock)
	if err != nil {
		if errors.Is(err, redis.TxFailedErr) {
			err = errLockLost
		}
		return nil, fmt.Errorf("redis store: commit: %w", err)
	}
	return out, nil
}

// Watch implements Watcher with Redis pub/sub. go-redis reconnects a
// broken subscription by itself; messages published meanwhile are lost,
// which the Keyring's polling covers.
func (s *RedisStore) Watch(ctx context.Context) (<-chan struct{}, error) {
	ps := s.c.Subscribe(ctx, s.channel)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := ps.Receive(rctx) // the subscription confirmation
	cancel()
	if err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("redis store: subscribe: %w", err)
	}
	out := make(chan struct{}, 1)
	msgs := ps.Channel()
	go func() {
		defer close(out)
		defer ps.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-msgs:
				if !ok {
					return
				}
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out, nil
}
