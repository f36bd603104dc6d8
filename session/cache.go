package session

import (
	"sync"
	"sync/atomic"
	"time"
)

// lookupCache holds recent successful lookups of one RedisStore.
//
// Correctness rests on three rules. Entries are served only while active,
// which is true only between a confirmed subscription to the invalidation
// channel and the first sign of its loss; every change of active clears
// the cache. Every invalidation and every change of active bumps gen, and
// put discards a record whose fetch began under an older gen, so a fetch
// racing an invalidation never fills the cache. An entry is served for at
// most ttl, and never once its session is past an expiry or due for an
// idle refresh (so sliding keeps happening in Redis).
type lookupCache struct {
	ttl time.Duration
	max int

	active atomic.Bool
	gen    atomic.Uint64

	mu sync.RWMutex
	m  map[[32]byte]cacheEntry
}

type cacheEntry struct {
	rec      Record
	storedAt time.Time
}

func newLookupCache(cfg CacheConfig) *lookupCache {
	return &lookupCache{ttl: cfg.TTL, max: cfg.MaxEntries, m: make(map[[32]byte]cacheEntry)}
}

// get returns a servable entry for h. It does not allocate.
func (c *lookupCache) get(h [32]byte, now time.Time, p *policy) (Record, bool) {
	if !c.active.Load() {
		return Record{}, false
	}
	c.mu.RLock()
	e, ok := c.m[h]
	c.mu.RUnlock()
	if !ok {
		return Record{}, false
	}
	if age := now.Sub(e.storedAt); age < 0 || age >= c.ttl || p.expired(&e.rec, now) || p.refreshDue(&e.rec, now) {
		return Record{}, false
	}
	return e.rec, true
}

// generation is read before a fetch and handed to put.
func (c *lookupCache) generation() uint64 { return c.gen.Load() }

// put stores rec unless an invalidation or a change of state happened
// since gen was read.
func (c *lookupCache) put(h [32]byte, rec Record, now time.Time, gen uint64) {
	if !c.active.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen.Load() != gen || !c.active.Load() {
		return
	}
	if _, exists := c.m[h]; !exists && len(c.m) >= c.max {
		c.evictLocked(now)
	}
	c.m[h] = cacheEntry{rec: rec, storedAt: now}
}

// evictLocked makes room: stale entries among the first few visited (map
// order is random), else one arbitrary entry.
func (c *lookupCache) evictLocked(now time.Time) {
	visited, removed := 0, 0
	var victim [32]byte
	for k, e := range c.m {
		if now.Sub(e.storedAt) >= c.ttl {
			delete(c.m, k)
			removed++
		}
		victim = k
		if visited++; visited >= 16 {
			break
		}
	}
	if removed == 0 {
		delete(c.m, victim)
	}
}

// invalidate drops h and fences out fetches in flight.
func (c *lookupCache) invalidate(h [32]byte) {
	c.mu.Lock()
	delete(c.m, h)
	c.gen.Add(1)
	c.mu.Unlock()
}

// setActive clears the cache and turns serving on or off.
func (c *lookupCache) setActive(on bool) {
	c.mu.Lock()
	c.active.Store(on)
	clear(c.m)
	c.gen.Add(1)
	c.mu.Unlock()
}

func (c *lookupCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
