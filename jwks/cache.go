package jwks

import (
	"encoding/binary"
	"sync"
)

// tokenCache remembers verified tokens by the SHA-256 of their compact
// serialisation, so a token is verified once per lifetime rather than once
// per request. It never stores the raw token.
//
// The cache is split into shards, each guarded by its own RWMutex; a hit
// takes only a read lock. Each shard bounds its entry count and the
// approximate bytes of its claims, and evicts in insertion order (FIFO),
// which for tokens of similar lifetime approximates "soonest to expire" at
// O(1) cost. Entries signed by a key that has left its key set are ignored
// on lookup (verifyKey.revoked) and swept by purgeRevoked.
type tokenCache struct {
	shards []cacheShard
	mask   uint64
}

type cacheShard struct {
	mu         sync.RWMutex
	m          map[[32]byte]*cacheEntry
	head, tail *cacheEntry // FIFO: head is the oldest
	bytes      int64
	maxEntries int
	maxBytes   int64
	_          [64]byte // keep hot shards on separate cache lines
}

type cacheEntry struct {
	sum        [32]byte
	tok        *Token
	key        *verifyKey
	expiresAt  int64 // unix nanoseconds of exp + leeway: served while now < expiresAt
	size       int64
	prev, next *cacheEntry
}

const (
	maxCacheShards     = 64
	minEntriesPerShard = 64
	// entryOverhead approximates the fixed memory of one entry: the entry,
	// the Token, the map bucket slot and the claims map header.
	entryOverhead = 512
)

// newTokenCache sizes the cache so that the sum over all shards never
// exceeds maxEntries or maxBytes: small caches get fewer shards.
func newTokenCache(maxEntries int, maxBytes int64) *tokenCache {
	n := maxCacheShards
	for n > 1 && maxEntries/n < minEntriesPerShard {
		n /= 2
	}
	c := &tokenCache{shards: make([]cacheShard, n), mask: uint64(n - 1)}
	for i := range c.shards {
		s := &c.shards[i]
		s.m = make(map[[32]byte]*cacheEntry)
		s.maxEntries = maxEntries / n
		s.maxBytes = maxBytes / int64(n)
	}
	return c
}

// approxEntrySize estimates the memory an entry holds for a token of
// tokenLen bytes: decoded claims take roughly twice their JSON size, and
// the payload is most of the token.
func approxEntrySize(tokenLen int) int64 {
	return entryOverhead + 2*int64(tokenLen)
}

func (c *tokenCache) shard(sum *[32]byte) *cacheShard {
	return &c.shards[binary.LittleEndian.Uint64(sum[:8])&c.mask]
}

// get returns the live entry for sum, or nil. An entry whose key has been
// revoked is removed and not returned. The caller checks expiry.
func (c *tokenCache) get(sum *[32]byte) *cacheEntry {
	s := c.shard(sum)
	s.mu.RLock()
	e := s.m[*sum]
	s.mu.RUnlock()
	if e != nil && e.key.revoked.Load() {
		c.remove(e)
		return nil
	}
	return e
}

// remove deletes e if it is still the entry stored under its hash.
func (c *tokenCache) remove(e *cacheEntry) {
	s := c.shard(&e.sum)
	s.mu.Lock()
	if s.m[e.sum] == e {
		s.unlink(e)
	}
	s.mu.Unlock()
}

// add stores tok under sum unless an entry already exists or the token is
// larger than a shard's byte budget. It evicts the oldest entries as needed.
func (c *tokenCache) add(sum *[32]byte, tok *Token, key *verifyKey, expiresAt, size int64) {
	s := c.shard(sum)
	if s.maxEntries == 0 || size > s.maxBytes {
		return
	}
	e := &cacheEntry{sum: *sum, tok: tok, key: key, expiresAt: expiresAt, size: size}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[*sum]; ok {
		return
	}
	for s.head != nil && (len(s.m) >= s.maxEntries || s.bytes+size > s.maxBytes) {
		s.unlink(s.head)
	}
	s.m[*sum] = e
	s.bytes += size
	e.prev = s.tail
	if s.tail != nil {
		s.tail.next = e
	} else {
		s.head = e
	}
	s.tail = e
}

// unlink removes e from the shard. The caller holds s.mu for writing.
func (s *cacheShard) unlink(e *cacheEntry) {
	delete(s.m, e.sum)
	s.bytes -= e.size
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

// purgeRevoked removes every entry whose signing key has been revoked. It
// runs after a key set refresh removed keys, off the request path.
func (c *tokenCache) purgeRevoked() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for e := s.head; e != nil; {
			next := e.next
			if e.key.revoked.Load() {
				s.unlink(e)
			}
			e = next
		}
		s.mu.Unlock()
	}
}

// len returns the number of entries.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// bytes returns the approximate bytes held.
func (c *tokenCache) size() int64 {
	var n int64
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += s.bytes
		s.mu.RUnlock()
	}
	return n
}
