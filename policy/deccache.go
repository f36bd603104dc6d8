package policy

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"
)

// Default bounds of the decision cache of each query.
const (
	DefaultDecisionCacheEntries = 10_000
	DefaultDecisionCacheBytes   = 16 << 20
)

const decisionShards = 16

// decisionCache maps a key (appendKey) to the decision it produced. It
// belongs to one query of one generation: a reload starts empty caches,
// so a cached decision never outlives the policy and data that made it.
//
// A hit takes a read lock and allocates nothing: the map is indexed by a
// 64-bit hash and the entry holds the whole key, compared before use, so
// a hash collision is a miss, never another request's decision. Each
// shard evicts with CLOCK (second chance): an entry read since the hand
// last passed survives one more round. Each shard holds at most 1/16 of
// the entries and of the bytes (entrySize) allowed.
type decisionCache struct {
	seed   maphash.Seed
	shards [decisionShards]decisionShard
}

type decisionShard struct {
	mu       sync.RWMutex
	m        map[uint64]*decisionEntry
	ring     []*decisionEntry
	hand     int
	max      int
	bytes    int64
	maxBytes int64
}

type decisionEntry struct {
	key  string
	hash uint64
	slot int
	size int64
	used atomic.Bool
	res  Result
}

func newDecisionCache(maxEntries int, maxBytes int64) *decisionCache {
	c := &decisionCache{seed: maphash.MakeSeed()}
	per := max(1, (maxEntries+decisionShards-1)/decisionShards)
	perBytes := max(1, maxBytes/decisionShards)
	for i := range c.shards {
		c.shards[i] = decisionShard{m: make(map[uint64]*decisionEntry), max: per, maxBytes: perBytes}
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

// put caches res for key, evicting entries while the shard is over its
// bounds. A decision larger than a shard's byte bound is not cached.
func (c *decisionCache) put(key []byte, res Result) {
	h := maphash.Bytes(c.seed, key)
	s := &c.shards[h%decisionShards]
	e := &decisionEntry{key: string(key), hash: h, res: res, size: entrySize(key, &res)}
	if e.size > s.maxBytes {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.m[h]; old != nil {
		// The same key raced in from another Check, or a collision: the
		// newer one takes the slot.
		s.bytes += e.size - old.size
		e.slot = old.slot
		s.ring[e.slot] = e
		s.m[h] = e
		return
	}
	for len(s.ring) > 0 && (len(s.ring) >= s.max || s.bytes+e.size > s.maxBytes) {
		s.evict()
	}
	e.slot = len(s.ring)
	s.ring = append(s.ring, e)
	s.m[h] = e
	s.bytes += e.size
}

// evict removes the first entry under the hand not read since the hand
// last passed it, clearing the marks it passes; the last entry of the
// ring moves into the freed slot.
func (s *decisionShard) evict() {
	for {
		if s.hand >= len(s.ring) {
			s.hand = 0
		}
		v := s.ring[s.hand]
		if v.used.Swap(false) {
			s.hand++
			continue
		}
		last := s.ring[len(s.ring)-1]
		last.slot = s.hand
		s.ring[s.hand] = last
		s.ring[len(s.ring)-1] = nil
		s.ring = s.ring[:len(s.ring)-1]
		delete(s.m, v.hash)
		s.bytes -= v.size
		return
	}
}

// entrySize approximates what an entry holds on the heap: the key, the
// decision's strings and metadata, and fixed overhead (entry, map slot,
// slice headers).
func entrySize(key []byte, r *Result) int64 {
	n := 160 + len(key) + len(r.Body)
	for _, hs := range [][]Header{r.Headers, r.ResponseHeadersToAdd, r.QueryParametersToSet} {
		for _, h := range hs {
			n += 32 + len(h.Key) + len(h.Value)
		}
	}
	for _, ss := range [][]string{r.RequestHeadersToRemove, r.QueryParametersToRemove} {
		for _, v := range ss {
			n += 16 + len(v)
		}
	}
	if r.DynamicMetadata != nil {
		n += 2 * proto.Size(r.DynamicMetadata)
	}
	return int64(n)
}

// size counts the cached decisions and the approximate heap they hold.
func (c *decisionCache) size() (entries int, bytes int64) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		entries += len(s.m)
		bytes += s.bytes
		s.mu.RUnlock()
	}
	return entries, bytes
}
