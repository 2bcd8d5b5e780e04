package cert

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File is one file for WriteFiles.
type File struct {
	Path string
	Data []byte
	Perm os.FileMode
}

// WriteFileAtomic writes data to path so that readers see either the old file or the whole
// new one: a temporary file in the same directory is written, synced and then moved into
// place. Without force an existing path is never replaced, even one created meanwhile.
// Errors name the file.
func WriteFileAtomic(path string, data []byte, perm os.FileMode, force bool) error {
	return WriteFiles([]File{{Path: path, Data: data, Perm: perm}}, force)
}

// WriteFiles writes several files all-or-nothing as far as the filesystem allows: every
// file is staged as a synced temporary first, then all are moved into place; if one fails,
// the ones already placed are removed, so no partial output (a key without its cert) is
// left behind.
//
// With force, existing files are replaced by rename; should a later rename fail, the files
// already placed are removed too, so the set is never left half old and half new.
func WriteFiles(files []File, force bool) error {
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		abs, err := filepath.Abs(f.Path)
		if err != nil {
			return fmt.Errorf("%s: %w", f.Path, err)
		}
		if seen[abs] {
			return fmt.Errorf("%s: %w: the same path is given for two files", f.Path, fs.ErrInvalid)
		}
		seen[abs] = true
	}
	if !force {
		for _, f := range files {
			if _, err := os.Lstat(f.Path); err == nil {
				return fmt.Errorf("%s: %w (use --force to overwrite)", f.Path, fs.ErrExist)
			}
		}
	}
	temps := make([]string, 0, len(files))
	defer func() {
		for _, t := range temps {
			os.Remove(t)
		}
	}()
	for _, f := range files {
		t, err := stage(f)
		if err != nil {
			return err
		}
		temps = append(temps, t)
	}
	placed := make([]string, 0, len(files))
	for i, f := range files {
		var err error
		if force {
			err = os.Rename(temps[i], f.Path)
		} else {
			// link fails if the path exists, so a file that appeared since the check survives.
			err = os.Link(temps[i], f.Path)
			if err != nil && !errors.Is(err, fs.ErrExist) {
				// Some filesystems have no hard links; fall back to a checked rename.
				if _, serr := os.Lstat(f.Path); errors.Is(serr, fs.ErrNotExist) {
					err = os.Rename(temps[i], f.Path)
				}
			}
		}
		if err != nil {
			for _, p := range placed {
				os.Remove(p)
			}
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s: %w (use --force to overwrite)", f.Path, fs.ErrExist)
			}
			return fmt.Errorf("%s: %w", f.Path, unwrapPathError(err))
		}
		placed = append(placed, f.Path)
	}
	for _, f := range files {
		syncDir(filepath.Dir(f.Path))
	}
	return nil
}

func stage(f File) (string, error) {
	dir, base := filepath.Split(f.Path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("%s: %w", f.Path, unwrapPathError(err))
	}
	name := tmp.Name()
	fail := func(err error) (string, error) {
		tmp.Close()
		os.Remove(name)
		return "", fmt.Errorf("%s: %w", f.Path, unwrapPathError(err))
	}
	if err := tmp.Chmod(f.Perm); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(f.Data); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(name)
		return "", fmt.Errorf("%s: %w", f.Path, unwrapPathError(err))
	}
	return name, nil
}

// unwrapPathError drops the temp-file name from *PathError/*LinkError so the message names
// the file the user asked for, not our staging file.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// syncDir makes the renames durable; failure only weakens durability, so it is ignored.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
