package console

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"sync"
	"time"
)

// A session is known by the SHA-256 of its cookie's 256-bit secret: a copy of the server's
// memory (or a log line) holds nothing that signs anyone in.
type session struct {
	admin    string
	csrf     string // sent in every form, compared in constant time
	created  time.Time
	lastSeen time.Time
}

type sessions struct {
	mu   sync.Mutex
	m    map[string]*session
	ttl  time.Duration
	idle time.Duration
	rand io.Reader
}

func randomToken(r io.Reader) (string, error) {
	b := make([]byte, 32)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func sessionKey(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// create starts a session for admin and returns the cookie's secret.
func (s *sessions) create(admin string, now time.Time) (string, *session, error) {
	secret, err := randomToken(s.rand)
	if err != nil {
		return "", nil, err
	}
	csrf, err := randomToken(s.rand)
	if err != nil {
		return "", nil, err
	}
	se := &session{admin: admin, csrf: csrf, created: now, lastSeen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prune(now)
	s.m[sessionKey(secret)] = se
	return secret, se, nil
}

// get returns the live session of secret and marks it used; an expired one is dropped.
// The result is a copy, safe to read without the lock.
func (s *sessions) get(secret string, now time.Time) (session, bool) {
	if secret == "" {
		return session{}, false
	}
	k := sessionKey(secret)
	s.mu.Lock()
	defer s.mu.Unlock()
	se, ok := s.m[k]
	if !ok {
		return session{}, false
	}
	if s.expired(se, now) {
		delete(s.m, k)
		return session{}, false
	}
	se.lastSeen = now
	return *se, true
}

func (s *sessions) expired(se *session, now time.Time) bool {
	return now.Sub(se.created) >= s.ttl || now.Sub(se.lastSeen) >= s.idle
}

func (s *sessions) end(secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, sessionKey(secret))
}

// endAdmin ends every session of admin (the account was removed).
func (s *sessions) endAdmin(admin string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, se := range s.m {
		if se.admin == admin {
			delete(s.m, k)
		}
	}
}

func (s *sessions) prune(now time.Time) {
	for k, se := range s.m {
		if s.expired(se, now) {
			delete(s.m, k)
		}
	}
}

// limiter is a token bucket per key (a source address, an account name): burst attempts at
// once, then one every per. Keys whose bucket is full again are forgotten.
type limiter struct {
	mu    sync.Mutex
	per   time.Duration
	burst float64
	m     map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(burst int, per time.Duration) *limiter {
	return &limiter{per: per, burst: float64(burst), m: map[string]*bucket{}}
}

// allow takes one token from every key's bucket, or none if any of them is empty.
func (l *limiter) allow(now time.Time, keys ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.m) > 10000 {
		for k, b := range l.m {
			if l.level(b, now) >= l.burst {
				delete(l.m, k)
			}
		}
	}
	for _, k := range keys {
		if b, ok := l.m[k]; ok && l.level(b, now) < 1 {
			return false
		}
	}
	for _, k := range keys {
		b, ok := l.m[k]
		if !ok {
			b = &bucket{tokens: l.burst, last: now}
			l.m[k] = b
		}
		b.tokens, b.last = l.level(b, now)-1, now
	}
	return true
}

func (l *limiter) level(b *bucket, now time.Time) float64 {
	return min(l.burst, b.tokens+float64(now.Sub(b.last))/float64(l.per))
}
