package policy

import (
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watcher turns file-system events under the policy paths into debounced
// reloads. fsnotify watches single directories, so every directory below
// a path is watched and new ones are added as they appear; a path that is
// a file is watched through its parent, which also sees editors that save
// by writing a new file and renaming it over the old one.
type watcher struct {
	fs       *fsnotify.Watcher
	roots    []string // cleaned, absolute paths
	files    map[string]bool
	debounce time.Duration
	log      *slog.Logger
}

func newWatcher(paths []string, debounce time.Duration, log *slog.Logger) (*watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	w := &watcher{fs: fw, files: map[string]bool{}, debounce: debounce, log: log}
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			fw.Close()
			return nil, err
		}
		w.roots = append(w.roots, abs)
		info, err := os.Stat(abs)
		if err != nil {
			fw.Close()
			return nil, err
		}
		if info.IsDir() {
			err = w.addTree(abs)
		} else {
			w.files[abs] = true
			err = fw.Add(filepath.Dir(abs))
		}
		if err != nil {
			fw.Close()
			return nil, err
		}
	}
	return w, nil
}

// addTree watches dir and every non-hidden directory below it.
func (w *watcher) addTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			return nil // vanished meanwhile: its removal is an event too
		}
		if !d.IsDir() {
			return nil
		}
		if p != dir && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		return w.fs.Add(p)
	})
}

// relevant reports whether an event on name can change what load reads.
func (w *watcher) relevant(name string) bool {
	if w.files[name] {
		return true
	}
	base := filepath.Base(name)
	if base == "..data" {
		// A Kubernetes ConfigMap or Secret volume swaps this symlink to
		// publish new contents atomically.
		return true
	}
	if strings.HasPrefix(base, ".") {
		return false
	}
	inRoot := false
	for _, r := range w.roots {
		if !w.files[r] && (name == r || strings.HasPrefix(name, r+string(filepath.Separator))) {
			inRoot = true
			break
		}
	}
	if !inRoot {
		return false // a sibling of a watched file
	}
	switch strings.ToLower(filepath.Ext(base)) {
	case ".rego", ".json", ".yaml", ".yml":
		return true
	case "":
		return true // possibly a directory that was removed or renamed
	}
	return false
}

// run calls reload after each burst of relevant events has been quiet for
// the debounce interval, until ctx ends.
func (w *watcher) run(ctx context.Context, reload func()) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			if ev.Has(fsnotify.Create) {
				if info, err := os.Stat(ev.Name); err == nil && info.IsDir() && w.relevant(ev.Name) {
					if err := w.addTree(ev.Name); err != nil {
						w.log.Warn("policy watcher cannot watch new directory", "dir", ev.Name, "error", err.Error())
					}
					timer.Reset(w.debounce)
					continue
				}
			}
			if ev.Op == fsnotify.Chmod || !w.relevant(ev.Name) {
				continue
			}
			timer.Reset(w.debounce)
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			w.log.Warn("policy watcher error", "error", err.Error())
		case <-timer.C:
			reload()
		}
	}
}

func (w *watcher) close() { _ = w.fs.Close() }
