package authority

import (
	"bytes"
	"maps"
	"slices"
	"sync"
)

// MemStore is a Store in memory, for tests and tools: the same semantics as BoltStore
// (atomic, isolated transactions that leave nothing behind on error) without durability.
type MemStore struct {
	mu     sync.RWMutex
	data   map[string]map[string][]byte
	seqs   map[string]uint64
	closed bool
}

// NewMemStore returns an empty in-memory store.
func NewMemStore() *MemStore {
	return &MemStore{data: map[string]map[string][]byte{}, seqs: map[string]uint64{}}
}

// View implements Store.
func (s *MemStore) View(fn func(Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrStoreClosed
	}
	// A read-only view still gets a copy, so a misbehaving fn cannot write through it.
	return fn(typedTx{s.snapshot()})
}

// Update implements Store.
func (s *MemStore) Update(fn func(Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrStoreClosed
	}
	w := s.snapshot()
	if err := fn(typedTx{w}); err != nil {
		return err
	}
	s.data, s.seqs = w.data, w.seqs
	return nil
}

// Close implements Store.
func (s *MemStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// snapshot copies the maps (values are never modified in place, only replaced).
func (s *MemStore) snapshot() *memKV {
	w := &memKV{data: make(map[string]map[string][]byte, len(s.data)), seqs: maps.Clone(s.seqs)}
	for b, m := range s.data {
		w.data[b] = maps.Clone(m)
	}
	return w
}

type memKV struct {
	data map[string]map[string][]byte
	seqs map[string]uint64
}

func (m *memKV) get(bucket, key []byte) []byte { return m.data[string(bucket)][string(key)] }

func (m *memKV) put(bucket, key, v []byte) error {
	b := m.data[string(bucket)]
	if b == nil {
		b = map[string][]byte{}
		m.data[string(bucket)] = b
	}
	b[string(key)] = slices.Clone(v)
	return nil
}

func (m *memKV) del(bucket, key []byte) error {
	delete(m.data[string(bucket)], string(key))
	return nil
}

// forEach visits keys in byte order, as bbolt does.
func (m *memKV) forEach(bucket []byte, fn func(k, v []byte) error) error {
	b := m.data[string(bucket)]
	for _, k := range slices.Sorted(maps.Keys(b)) {
		if err := fn([]byte(k), b[k]); err != nil {
			return err
		}
	}
	return nil
}

func (m *memKV) forEachPrefix(bucket, prefix []byte, fn func(k, v []byte) error) error {
	return m.forEach(bucket, func(k, v []byte) error {
		if !bytes.HasPrefix(k, prefix) {
			return nil
		}
		return fn(k, v)
	})
}

func (m *memKV) nextSeq(bucket []byte) (uint64, error) {
	m.seqs[string(bucket)]++
	return m.seqs[string(bucket)], nil
}
