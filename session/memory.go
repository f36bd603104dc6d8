package session

import (
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// MemoryStore keeps sessions in process memory: for a single replica and
// development. Sessions die with the process. Its semantics (validation,
// expiry, throttled sliding, eviction, error codes) are RedisStore's.
type MemoryStore struct {
	pol policy
	now func() time.Time
	log *slog.Logger
	m   *metrics

	mu   sync.RWMutex
	recs map[[32]byte]*memEntry
	subs map[[32]byte]map[[32]byte]*memEntry // subject hash → its sessions
	seq  uint64                              // orders sessions created in the same instant

	life     sync.Mutex
	stopJan  context.CancelFunc
	janDone  chan struct{}
	interval time.Duration
}

type memEntry struct {
	rec  Record
	subj [32]byte
	seq  uint64
}

// NewMemory returns an in-memory store. Options: WithClock, WithLogger,
// WithRegisterer.
func NewMemory(cfg Config, opts ...Option) (*MemoryStore, error) {
	if err := cfg.validate(false); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	cfg = cfg.withDefaults()
	o := buildOptions(opts)
	s := &MemoryStore{
		pol:      newPolicy(cfg, o),
		now:      o.now,
		log:      o.logger,
		recs:     make(map[[32]byte]*memEntry),
		subs:     make(map[[32]byte]map[[32]byte]*memEntry),
		interval: min(max(cfg.IdleRefreshInterval, time.Second), time.Minute),
	}
	var err error
	if s.m, err = newMetrics(o.registry, string(StoreMemory), gauges{}); err != nil {
		return nil, err
	}
	return s, nil
}

// Create implements Store.
func (s *MemoryStore) Create(_ context.Context, ns NewSession) (string, Record, error) {
	now := s.now()
	pr, err := s.pol.prepare(ns, now)
	if err != nil {
		return "", Record{}, err
	}
	id, h := newID()
	rec := pr.rec
	rec.IDHash = hashHex(h)
	sh := sha256.Sum256([]byte(ns.Subject))

	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	if s.seq%purgeEvery == 0 { // bounded memory even without Start's janitor
		s.purgeLocked(now)
	}
	e := &memEntry{rec: rec, subj: sh, seq: s.seq}
	s.recs[h] = e
	set := s.subs[sh]
	if set == nil {
		set = make(map[[32]byte]*memEntry)
		s.subs[sh] = set
	}
	set[h] = e
	if limit := s.pol.maxPerSubject; limit > 0 && len(set) > limit {
		live := make([]*memEntry, 0, len(set))
		for k, o := range set {
			if s.pol.expired(&o.rec, now) {
				// Out of the index, like RedisStore's pruning; the
				// record stays (it reads "expired") until purged.
				delete(set, k)
				continue
			}
			live = append(live, o)
		}
		slices.SortFunc(live, byAge)
		n := 0
		for _, o := range live[:max(len(live)-limit, 0)] {
			hh, _ := parseHashHex(o.rec.IDHash)
			s.deleteLocked(hh, o)
			n++
		}
		s.m.evicted(n)
	}
	return id, rec, nil
}

func byAge(a, b *memEntry) int {
	if c := a.rec.CreatedAt.Compare(b.rec.CreatedAt); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}

func (s *MemoryStore) deleteLocked(h [32]byte, e *memEntry) {
	delete(s.recs, h)
	if set := s.subs[e.subj]; set != nil {
		delete(set, h)
		if len(set) == 0 {
			delete(s.subs, e.subj)
		}
	}
}

// Lookup implements Store.
func (s *MemoryStore) Lookup(_ context.Context, id string) (Record, error) {
	rec, err := s.read(id, true)
	s.m.lookup(err)
	return rec, err
}

// Get implements Store.
func (s *MemoryStore) Get(_ context.Context, id string) (Record, error) {
	return s.read(id, false)
}

func (s *MemoryStore) read(id string, slide bool) (Record, error) {
	h, ok := parseID(id)
	if !ok {
		return Record{}, errMalformed
	}
	now := s.now()
	s.mu.RLock()
	e := s.recs[h]
	var rec Record
	if e != nil {
		rec = e.rec
	}
	s.mu.RUnlock()
	if e == nil {
		return Record{}, errNotFound
	}
	if s.pol.expired(&rec, now) {
		if !now.Before(s.pol.purgeAt(&rec)) {
			return Record{}, errNotFound
		}
		return Record{}, errExpired
	}
	if !slide || !s.pol.refreshDue(&rec, now) {
		return rec, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recs[h] != e { // revoked meanwhile
		return Record{}, errNotFound
	}
	if s.pol.refreshDue(&e.rec, now) && !s.pol.expired(&e.rec, now) {
		s.pol.slide(&e.rec, msTime(now))
		s.m.refreshed()
	}
	return e.rec, nil
}

// Revoke implements Store.
func (s *MemoryStore) Revoke(_ context.Context, id string) error {
	h, ok := parseID(id)
	if !ok {
		return errMalformed
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.recs[h]
	if e == nil {
		return errNotFound
	}
	s.deleteLocked(h, e)
	switch {
	case !now.Before(s.pol.purgeAt(&e.rec)):
		return errNotFound
	case s.pol.expired(&e.rec, now):
		return errExpired
	}
	return nil
}

// RevokeSubject implements Store.
func (s *MemoryStore) RevokeSubject(_ context.Context, subject string) (int, error) {
	sh := sha256.Sum256([]byte(subject))
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for h, e := range s.subs[sh] {
		if !s.pol.expired(&e.rec, now) {
			n++
		}
		s.deleteLocked(h, e)
	}
	return n, nil
}

// ListSubject implements Store.
func (s *MemoryStore) ListSubject(_ context.Context, subject string) ([]Record, error) {
	sh := sha256.Sum256([]byte(subject))
	now := s.now()
	s.mu.RLock()
	live := make([]*memEntry, 0, len(s.subs[sh]))
	for _, e := range s.subs[sh] {
		if !s.pol.expired(&e.rec, now) {
			live = append(live, e)
		}
	}
	slices.SortFunc(live, byAge)
	out := make([]Record, len(live))
	for i, e := range live {
		out[i] = e.rec
	}
	s.mu.RUnlock()
	return out, nil
}

// Start implements Store: it starts the janitor that forgets expired
// sessions (expiry + grace). Calling Start twice is an error.
func (s *MemoryStore) Start(context.Context) error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.janDone != nil {
		return fmt.Errorf("session: memory store already started")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopJan = cancel
	s.janDone = make(chan struct{})
	go s.janitor(ctx, s.janDone)
	return nil
}

func (s *MemoryStore) janitor(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.purge()
		}
	}
}

// purgeEvery is how many creates trigger a purge when no janitor runs.
const purgeEvery = 1024

// purge forgets records past expiry + grace.
func (s *MemoryStore) purge() int {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.purgeLocked(now)
}

func (s *MemoryStore) purgeLocked(now time.Time) int {
	n := 0
	for h, e := range s.recs {
		if !now.Before(s.pol.purgeAt(&e.rec)) {
			s.deleteLocked(h, e)
			n++
		}
	}
	return n
}

// Stop implements Store.
func (s *MemoryStore) Stop(ctx context.Context) error {
	s.life.Lock()
	cancel, done := s.stopJan, s.janDone
	s.life.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
