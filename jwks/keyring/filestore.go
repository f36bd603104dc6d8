package keyring

import (
	"context"
	"crypto"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// FileStore keeps keys in a local directory. Layout:
//
//	DIR/              0700 (created if missing)
//	DIR/keyring.json  0600  metadata: {"version":1,"keys":[Record...]},
//	                        replaced atomically (temp file, fsync, rename)
//	DIR/KID.pem       0600  PKCS #8 "PRIVATE KEY" of each key that still
//	                        has material (next, active, retiring)
//	DIR/.lock         0600  flock(2) serialising Updates of all processes
//
// A key file readable or writable by group or others is refused. Removed
// keys' files are deleted (a file system cannot promise the bytes are
// gone: use the pkcs11 store where that matters).
type FileStore struct {
	dir  string
	meta metaFile

	mu    sync.Mutex
	cache map[string]fileKey // kid → parsed key, while its file is unchanged
}

type fileKey struct {
	signer  crypto.Signer
	modTime time.Time
	size    int64
}

var (
	_ Store = (*FileStore)(nil)
)

// NewFileStore returns a store over dir. It does no I/O; the directory is
// created (0700) by the first Update.
func NewFileStore(dir string) (*FileStore, error) {
	if dir == "" {
		return nil, errors.New("keyring: file store: dir is required")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("keyring: file store: %w", err)
	}
	return &FileStore{
		dir:   abs,
		meta:  metaFile{path: filepath.Join(abs, "keyring.json"), lockPath: filepath.Join(abs, ".lock")},
		cache: map[string]fileKey{},
	}, nil
}

// Close releases nothing; it exists so every store is an io.Closer.
func (s *FileStore) Close() error { return nil }

// Load implements Store.
func (s *FileStore) Load(ctx context.Context) ([]StoredKey, error) {
	out, err := s.load()
	if errors.Is(err, fs.ErrNotExist) {
		// An Update of another process may have removed a key file
		// between our reading the metadata and the file: read again.
		out, err = s.load()
	}
	return out, err
}

func (s *FileStore) load() ([]StoredKey, error) {
	recs, err := s.meta.read()
	if err != nil {
		return nil, fmt.Errorf("file store: %w", err)
	}
	out := make([]StoredKey, 0, len(recs))
	live := map[string]bool{}
	for _, r := range recs {
		sk := StoredKey{Record: r.Record}
		if r.State != StateRevoked {
			if sk.Signer, err = s.loadKey(r.Record); err != nil {
				return nil, fmt.Errorf("file store: key %s: %w", r.KID, err)
			}
			live[r.KID] = true
		}
		out = append(out, sk)
	}
	s.mu.Lock()
	maps.DeleteFunc(s.cache, func(kid string, _ fileKey) bool { return !live[kid] })
	s.mu.Unlock()
	return out, nil
}

func (s *FileStore) keyPath(kid string) string { return filepath.Join(s.dir, kid+".pem") }

func (s *FileStore) loadKey(r Record) (crypto.Signer, error) {
	path := s.keyPath(r.KID)
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %v: a private key must not be accessible to group or others; chmod 600 it", path, perm)
	}
	s.mu.Lock()
	c, ok := s.cache[r.KID]
	s.mu.Unlock()
	if ok && c.modTime.Equal(fi.ModTime()) && c.size == fi.Size() {
		return c.signer, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: no PKCS #8 PEM block", path)
	}
	signer, err := parsePrivate(blk.Bytes, r.Alg, r.KID)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s.mu.Lock()
	s.cache[r.KID] = fileKey{signer: signer, modTime: fi.ModTime(), size: fi.Size()}
	s.mu.Unlock()
	return signer, nil
}

// Update implements Store.
func (s *FileStore) Update(ctx context.Context, fn UpdateFunc) ([]StoredKey, error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("file store: %w", err)
	}
	unlock, err := lockFile(ctx, s.meta.lockPath)
	if err != nil {
		return nil, fmt.Errorf("file store: lock: %w", err)
	}
	defer unlock()
	cur, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	signers := map[string]crypto.Signer{}
	for _, c := range cur {
		if c.Signer != nil {
			signers[c.KID] = c.Signer
		}
	}
	generated := map[string]bool{}
	gen := func(spec KeySpec) (StoredKey, error) {
		signer, err := generateSoftware(spec)
		if err != nil {
			return StoredKey{}, err
		}
		kid, err := Thumbprint(signer.Public())
		if err != nil {
			return StoredKey{}, err
		}
		signers[kid], generated[kid] = signer, true
		return StoredKey{Record: Record{KID: kid, Alg: spec.Alg}, Signer: signer}, nil
	}
	recs, err := fn(cur, gen)
	if err != nil {
		return nil, err
	}
	out, err := committed(recs, signers)
	if err != nil {
		return nil, fmt.Errorf("file store: %w", err)
	}
	for _, k := range out {
		if generated[k.KID] && k.Signer != nil {
			if err := s.writeKey(k.KID, k.Signer); err != nil {
				return nil, fmt.Errorf("file store: %w", err)
			}
		}
	}
	mrecs := make([]metaRecord, len(recs))
	for i, r := range recs {
		mrecs[i] = metaRecord{Record: r}
	}
	if err := s.meta.write(mrecs); err != nil {
		return nil, fmt.Errorf("file store: %w", err)
	}
	// Committed. Destroy the material of every key that no longer needs it,
	// including files left behind by an Update that failed half way.
	keep := map[string]bool{}
	for _, k := range out {
		if k.Signer != nil {
			keep[k.KID] = true
		}
	}
	if ents, err := os.ReadDir(s.dir); err == nil {
		for _, e := range ents {
			name := e.Name()
			if kid, ok := strings.CutSuffix(name, ".pem"); ok && validKID(kid) && !keep[kid] {
				_ = os.Remove(filepath.Join(s.dir, name))
				s.mu.Lock()
				delete(s.cache, kid)
				s.mu.Unlock()
			}
			// Temporary files are only written under the lock we hold: any
			// left is from a writer that crashed, and may hold a key.
			if strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-") {
				_ = os.Remove(filepath.Join(s.dir, name))
			}
		}
	}
	return out, nil
}

// committed pairs the records an UpdateFunc returned with their material:
// published keys must have a signer; revoked ones get none.
func committed(recs []Record, signers map[string]crypto.Signer) ([]StoredKey, error) {
	out := make([]StoredKey, 0, len(recs))
	seen := map[string]bool{}
	for _, r := range recs {
		if !validKID(r.KID) {
			return nil, fmt.Errorf("invalid kid %q", r.KID)
		}
		if seen[r.KID] {
			return nil, fmt.Errorf("key %s listed twice", r.KID)
		}
		seen[r.KID] = true
		sk := StoredKey{Record: r}
		if r.State != StateRevoked {
			if sk.Signer = signers[r.KID]; sk.Signer == nil {
				return nil, fmt.Errorf("key %s has no material", r.KID)
			}
		}
		out = append(out, sk)
	}
	return out, nil
}

func (s *FileStore) writeKey(kid string, signer crypto.Signer) error {
	der, err := marshalPrivate(signer)
	if err != nil {
		return err
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	defer clear(b)
	return writeFileAtomic(s.keyPath(kid), b)
}

// writeFileAtomic writes b to path with mode 0600 through a temporary file
// in the same directory, fsyncs it, renames it into place and fsyncs the
// directory, so readers see the old or the new content, never a mix.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// metaFile is the JSON metadata file of the file and pkcs11 stores.
type metaFile struct {
	path     string
	lockPath string
}

type metaDoc struct {
	Version int          `json:"version"`
	Keys    []metaRecord `json:"keys"`
}

type metaRecord struct {
	Record
	// PKCS11ID is the hex CKA_ID of the key pair in the token (pkcs11
	// store only).
	PKCS11ID string `json:"pkcs11_id,omitempty"`
}

const metaVersion = 1

// read returns the records, or none when the file does not exist yet.
func (m metaFile) read() ([]metaRecord, error) {
	b, err := os.ReadFile(m.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var doc metaDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", m.path, err)
	}
	if doc.Version != metaVersion {
		return nil, fmt.Errorf("%s: unsupported version %d", m.path, doc.Version)
	}
	for _, r := range doc.Keys {
		if !validKID(r.KID) {
			return nil, fmt.Errorf("%s: invalid kid %q", m.path, r.KID)
		}
		if !r.Alg.valid() {
			return nil, fmt.Errorf("%s: key %s: unsupported alg %q", m.path, r.KID, r.Alg)
		}
	}
	return doc.Keys, nil
}

func (m metaFile) write(recs []metaRecord) error {
	if recs == nil {
		recs = []metaRecord{}
	}
	b, err := json.MarshalIndent(metaDoc{Version: metaVersion, Keys: recs}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(m.path, append(b, '\n'))
}
