package authz

import (
	"context"
	"errors"
	"testing"
	"time"
)

var errInternal = errors.New("boom")

func contextWithDeadline(t *testing.T, d time.Time) (context.Context, context.CancelFunc) {
	t.Helper()
	return context.WithDeadline(t.Context(), d)
}
