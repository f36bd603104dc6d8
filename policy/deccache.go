package policy

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// DefaultDecisionCacheEntries bounds the decision cache of each query.
const DefaultDecisionCacheEntries = 10_000

const decisionShards = 16

// decisionCache maps a key (appendKey) to the decision it produced. It
// belongs to one query of one generation: a reload starts empty caches,
// so a cached decision never outlives the policy and data that made it.
//
// A hit takes a read lock and allocates nothing: the map is indexed by a
// 64-bit hash and the entry holds the whole key, compared before use, so
// a hash collision is a miss, never another request's decision. Each
// shard evicts with CLOCK (second chance): an entry read since the hand
// last passed survives one more round.
type decisionCache struct {
	seed   maphash.Seed
	shards [decisionShards]decisionShard
}

type decisionShard struct {
	mu   sync.RWMutex
	m    map[uint64]*decisionEntry
	ring []*decisionEntry
	hand int
	max  int
}

type decisionEntry struct {
	key  string
	hash uint64
	slot int
	used atomic.Bool
	res  Result
}

func newDecisionCache(maxEntries int) *decisionCache {
	c := &decisionCache{seed: maphash.MakeSeed()}
	per := max(1, (maxEntries+decisionShards-1)/decisionShards)
	for i := range c.shards {
		c.shards[i] = decisionShard{m: make(map[uint64]*decisionEntry), max: per}
	}
	return c
}

// get returns the decision cached for key. The Result's slices are shared
// with every other hit: callers only read them.
func (c *decisionCache) get(key []byte) (Result, bool) {
	h := maphash.Bytes(c.seed, key)
	s := &c.shards[h%decisionShards]
	s.mu.RLock()
	e := s.m[h]
	s.mu.RUnlock()
	if e == nil || e.key != string(key) {
		return Result{}, false
	}
	if !e.used.Load() {
		e.used.Store(true)
	}
	return e.res, true
}

// put caches res for key, evicting an entry when the shard is full.
func (c *decisionCache) put(key []byte, res Result) {
	h := maphash.Bytes(c.seed, key)
	s := &c.shards[h%decisionShards]
	e := &decisionEntry{key: string(key), hash: h, res: res}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.m[h]; old != nil {
		// The same key raced in from another Check, or a collision: the
		// newer one takes the slot.
		e.slot = old.slot
		s.ring[e.slot] = e
		s.m[h] = e
		return
	}
	if len(s.ring) < s.max {
		e.slot = len(s.ring)
		s.ring = append(s.ring, e)
		s.m[h] = e
		return
	}
	for {
		victim := s.ring[s.hand]
		if victim.used.Swap(false) {
			s.hand = (s.hand + 1) % len(s.ring)
			continue
		}
		delete(s.m, victim.hash)
		e.slot = s.hand
		s.ring[s.hand] = e
		s.m[h] = e
		s.hand = (s.hand + 1) % len(s.ring)
		return
	}
}

// len counts the cached decisions.
func (c *decisionCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
