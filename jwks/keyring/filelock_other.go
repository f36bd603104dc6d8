//go:build !unix

package keyring

import (
	"context"
	"errors"
)

func lockFile(context.Context, string) (func(), error) {
	return nil, errors.New("keyring: file locking is only supported on unix")
}
