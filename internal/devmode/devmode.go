// Package devmode prepares the working files of Tollgate's development
// mode (`make run`): an example policy to edit and the admin token of the
// session API. The dev issuer's key is internal/devissuer's. Nothing here
// runs unless a config's dev section names these files, which only the
// embedded development config does.
package devmode

import (
	"crypto/rand"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

//go:embed example/*.rego
var example embed.FS

// EnsurePolicy writes the example policy and its Rego tests into dir when
// dir does not exist. An existing dir is left alone: it holds the user's
// edits. created reports whether the files were written.
func EnsurePolicy(dir string) (created bool, err error) {
	if _, err := os.Stat(dir); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("dev policy: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("dev policy: %w", err)
	}
	files, err := fs.ReadDir(example, "example")
	if err != nil {
		return false, err
	}
	for _, f := range files {
		b, err := example.ReadFile("example/" + f.Name())
		if err != nil {
			return false, err
		}
		if err := os.WriteFile(filepath.Join(dir, f.Name()), b, 0o644); err != nil {
			return false, fmt.Errorf("dev policy: %w", err)
		}
	}
	return true, nil
}

// EnsureToken writes a random admin token (256 bits, base64url) to path,
// mode 0600, when the file does not exist.
func EnsureToken(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("dev admin token: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("dev admin token: %w", err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("dev admin token: %w", err)
	}
	if _, err := f.WriteString(base64.RawURLEncoding.EncodeToString(b) + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("dev admin token: %w", err)
	}
	return f.Close()
}
