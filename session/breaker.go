package session

import (
	"sync"
	"sync/atomic"
	"time"
)

// Breaker states, also the values of tollgate_session_breaker_state.
const (
	breakerClosed   int32 = 0
	breakerHalfOpen int32 = 1
	breakerOpen     int32 = 2
)

// outcome concludes a call the breaker allowed.
type outcome uint8

const (
	outcomeSuccess outcome = iota
	outcomeFailure
	// outcomeNeutral: the call ended for a reason that says nothing
	// about Redis (the caller gave up).
	outcomeNeutral
)

// breaker is a consecutive-failure circuit breaker. Closed: calls pass;
// Threshold consecutive failures open it. Open: calls fail at once until
// Cooldown has passed, then exactly one probe passes (half-open); its
// success closes the breaker, its failure reopens it for another Cooldown.
// The closed path costs two atomic loads.
type breaker struct {
	threshold int32
	cooldown  time.Duration
	onChange  func(from, to int32)

	state atomic.Int32
	fails atomic.Int32

	mu       sync.Mutex
	openedAt time.Time // monotonic reading
}

func newBreaker(cfg BreakerConfig, onChange func(from, to int32)) *breaker {
	return &breaker{threshold: int32(cfg.Threshold), cooldown: cfg.Cooldown, onChange: onChange}
}

// allow reports whether a call may proceed. probe marks the half-open
// trial; every allowed call must be concluded with done.
func (b *breaker) allow() (ok, probe bool) {
	if b.state.Load() == breakerClosed {
		return true, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state.Load() {
	case breakerClosed:
		return true, false
	case breakerOpen:
		if time.Since(b.openedAt) >= b.cooldown {
			b.setLocked(breakerHalfOpen)
			return true, true
		}
	}
	return false, false
}

func (b *breaker) done(probe bool, o outcome) {
	switch o {
	case outcomeSuccess:
		if b.fails.Load() != 0 {
			b.fails.Store(0)
		}
		if b.state.Load() == breakerClosed {
			return
		}
		b.mu.Lock()
		b.fails.Store(0)
		b.setLocked(breakerClosed)
		b.mu.Unlock()
	case outcomeFailure:
		b.mu.Lock()
		switch st := b.state.Load(); {
		case probe:
			b.openedAt = time.Now()
			b.setLocked(breakerOpen)
		case st == breakerClosed:
			if b.fails.Add(1) >= b.threshold {
				b.openedAt = time.Now()
				b.setLocked(breakerOpen)
			}
		}
		b.mu.Unlock()
	case outcomeNeutral:
		if !probe {
			return
		}
		b.mu.Lock()
		if b.state.Load() == breakerHalfOpen {
			// Let the next call probe at once.
			b.openedAt = time.Now().Add(-b.cooldown)
			b.setLocked(breakerOpen)
		}
		b.mu.Unlock()
	}
}

func (b *breaker) setLocked(to int32) {
	from := b.state.Swap(to)
	if from != to && b.onChange != nil {
		b.onChange(from, to)
	}
}

func breakerStateName(s int32) string {
	switch s {
	case breakerClosed:
		return "closed"
	case breakerHalfOpen:
		return "half-open"
	default:
		return "open"
	}
}
