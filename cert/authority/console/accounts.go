package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"
)

// Argon2Params are the cost of one password hash. Each account keeps the parameters it was
// hashed with, so raising the defaults does not lock anyone out.
type Argon2Params struct {
	Time    uint32
	Memory  uint32 // KiB
	Threads uint8
}

// DefaultArgon2 is OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane): about 40 ms
// here, and logins are rate limited and run at most two at a time.
var DefaultArgon2 = Argon2Params{Time: 2, Memory: 19 * 1024, Threads: 1}

const (
	saltLen = 16
	hashLen = 32
	// MinPasswordLen is the shortest password admin add accepts.
	MinPasswordLen = 12
)

// Account is one console admin as stored: the password only as an argon2id hash in the
// PHC string format ($argon2id$v=19$m=...,t=...,p=...$salt$hash).
type Account struct {
	Name    string    `json:"name"`
	Hash    string    `json:"hash"`
	Created time.Time `json:"created"`
}

type accountsFile struct {
	Admins []Account `json:"admins"`
}

// Errors of the accounts file.
var (
	ErrAccountExists  = errors.New("admin account exists")
	ErrAccountUnknown = errors.New("no such admin account")
	ErrWeakPassword   = fmt.Errorf("password shorter than %d characters", MinPasswordLen)
	ErrAccountName    = errors.New("admin name: 1-64 characters of letters, digits, '.', '_', '-'")
)

var accountName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// HashPassword returns the PHC string of password under a fresh random salt.
func HashPassword(password string, p Argon2Params) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	h := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, hashLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(h)), nil
}

// checkPassword reports whether password matches the PHC string phc, in constant time.
func checkPassword(phc, password string) bool {
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return false
	}
	var p Argon2Params
	var m, t, th uint64
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return false
		}
		switch k {
		case "m":
			m = n
		case "t":
			t = n
		case "p":
			th = n
		}
	}
	// Bounds keep a tampered file from making a login cost gigabytes.
	if m < 8 || m > 1<<21 || t < 1 || t > 16 || th < 1 || th > 16 {
		return false
	}
	p = Argon2Params{Time: uint32(t), Memory: uint32(m), Threads: uint8(th)}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) < 16 || len(want) > 64 {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// dummyHash is checked when the name is unknown, so a wrong name costs as long as a wrong
// password and timing does not tell which names exist.
// Made at the first sign-in, not at start: every mesh-cert command links this package.
var dummyHash = sync.OnceValue(func() string {
	h, err := HashPassword("not a password of anyone", DefaultArgon2)
	if err != nil {
		panic(err)
	}
	return h
})

// LoadAccounts reads the accounts file; a missing file is no accounts.
func LoadAccounts(path string) ([]Account, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("admin accounts: %w", err)
	}
	var f accountsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("admin accounts %s: %w", path, err)
	}
	return f.Admins, nil
}

func saveAccounts(path string, as []Account) error {
	b, err := json.MarshalIndent(accountsFile{Admins: as}, "", "  ")
	if err != nil {
		return err
	}
	// The state directory may not exist before the service first starts.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("admin accounts: %w", err)
	}
	// Written beside and renamed over: a reader never sees half a file.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".admins-*")
	if err != nil {
		return fmt.Errorf("admin accounts: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// AddAccount adds (or, with replace, sets the password of) admin name.
func AddAccount(path, name, password string, replace bool, p Argon2Params, now time.Time) error {
	if !accountName.MatchString(name) {
		return ErrAccountName
	}
	if len(password) < MinPasswordLen {
		return ErrWeakPassword
	}
	as, err := LoadAccounts(path)
	if err != nil {
		return err
	}
	h, err := HashPassword(password, p)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(as, func(a Account) bool { return a.Name == name })
	switch {
	case i >= 0 && !replace:
		return fmt.Errorf("%w: %s", ErrAccountExists, name)
	case i >= 0:
		as[i].Hash = h
	default:
		as = append(as, Account{Name: name, Hash: h, Created: now.UTC()})
	}
	return saveAccounts(path, as)
}

// RemoveAccount deletes admin name; its sessions end at their next request.
func RemoveAccount(path, name string) error {
	as, err := LoadAccounts(path)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(as, func(a Account) bool { return a.Name == name })
	if i < 0 {
		return fmt.Errorf("%w: %s", ErrAccountUnknown, name)
	}
	return saveAccounts(path, slices.Delete(as, i, i+1))
}
