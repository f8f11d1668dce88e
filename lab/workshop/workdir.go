package workshop

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// StudentFile is the name of the student's copy of a starter.
const StudentFile = "lesson.bpf.c"

// DefaultDir is where the student's lessons go, relative to where they run
// lab workshop.
const DefaultDir = "workshop"

// Source is the student's file of lesson l under dir.
func (l *Lesson) Source(dir string) string { return filepath.Join(dir, l.Dir(), StudentFile) }

// ErrEdited refuses to overwrite a student's work.
var ErrEdited = errors.New("already started and edited")

// Start copies the lesson's starter (as StudentFile) and README into
// dir/NN-slug and returns the starter's path. A student file that differs
// from the starter is kept unless force. Run under sudo, the files go to
// the user who ran sudo, so they can edit them.
func (l *Lesson) Start(dir string, force bool) (string, error) {
	starter, err := l.File(StarterFile)
	if err != nil {
		return "", err
	}
	readme, err := l.File(ReadmeFile)
	if err != nil {
		return "", err
	}
	src := l.Source(dir)
	if old, err := os.ReadFile(src); err == nil && !bytes.Equal(old, starter) && !force {
		return src, fmt.Errorf("%s: %w (start it afresh with --force, which overwrites it)", src, ErrEdited)
	}
	ldir := filepath.Dir(src)
	if err := os.MkdirAll(ldir, 0o755); err != nil {
		return "", err
	}
	for name, b := range map[string][]byte{src: starter, filepath.Join(ldir, ReadmeFile): readme} {
		if err := os.WriteFile(name, b, 0o644); err != nil {
			return "", err
		}
	}
	return src, chownToSudoer(dir, ldir, src, filepath.Join(ldir, ReadmeFile))
}

// chownToSudoer gives paths to $SUDO_UID:$SUDO_GID when root runs us
// through sudo; otherwise the files are already the caller's.
func chownToSudoer(paths ...string) error {
	uid, err1 := strconv.Atoi(os.Getenv("SUDO_UID"))
	gid, err2 := strconv.Atoi(os.Getenv("SUDO_GID"))
	if err1 != nil || err2 != nil || os.Geteuid() != 0 {
		return nil
	}
	for _, p := range paths {
		if err := os.Chown(p, uid, gid); err != nil {
			return err
		}
	}
	return nil
}
