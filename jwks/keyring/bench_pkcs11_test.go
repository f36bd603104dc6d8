//go:build cgo

package keyring

import (
	"path/filepath"
	"testing"
)

// BenchmarkMintPKCS11 measures fresh ES256 mints signed inside SoftHSM2.
func BenchmarkMintPKCS11(b *testing.B) {
	s := newPKCS11Store(b, "tollgate-bench", filepath.Join(b.TempDir(), "state.json"))
	benchFresh(b, benchKeyring(b, ES256, s))
}
