//go:build !cgo

package keyring

import (
	"context"
	"errors"
)

// PKCS11Config configures a PKCS11Store. See the cgo build for the fields'
// meaning.
type PKCS11Config struct {
	Module     string
	TokenLabel string
	PinFile    string
	PIN        string
	StateFile  string
}

// PKCS11Store needs cgo; this build has none.
type PKCS11Store struct{}

// NewPKCS11Store always fails: the PKCS #11 store needs a cgo build.
func NewPKCS11Store(PKCS11Config) (*PKCS11Store, error) {
	return nil, errors.New("keyring: the pkcs11 store needs a build with cgo enabled")
}

// Close does nothing.
func (s *PKCS11Store) Close() error { return nil }

// Load implements Store.
func (s *PKCS11Store) Load(context.Context) ([]StoredKey, error) {
	return nil, errors.New("keyring: pkcs11 store unavailable")
}

// Update implements Store.
func (s *PKCS11Store) Update(context.Context, UpdateFunc) ([]StoredKey, error) {
	return nil, errors.New("keyring: pkcs11 store unavailable")
}
