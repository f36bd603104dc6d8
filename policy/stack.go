package policy

// growStack makes the calling goroutine's stack at least about twice
// stackReserve in one step, while the stack is still shallow and cheap to
// copy.
//
// OPA's evaluator recurses deeply. gRPC runs a Check on a fresh goroutine
// whenever none of its stream workers is parked at that instant (on a
// small machine under load: most of the time), and a fresh goroutine
// starts with a few KiB of stack; the evaluation then grew it by repeated
// doubling, each time copying and re-walking an ever deeper stack, which
// profiled at over a third of a policy Check's CPU. A 48 KiB reserve
// measured best (24 KiB: 82 us of server CPU per Check, 48 KiB: 60 us,
// 96 KiB: 65 us; the simple RBAC policy at 64 concurrent Checks). Handing
// evaluations to a pool of long-lived goroutines instead cost about the
// same CPU but added a wake-up to every evaluation's latency.
//
//go:noinline
func growStack() {
	var reserve [stackReserve]byte
	sink(reserve[:])
}

const stackReserve = 48 << 10

//go:noinline
func sink([]byte) {}
