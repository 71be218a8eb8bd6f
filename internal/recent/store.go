package recent

import (
	"slices"
	"strings"
	"sync"
)

// Store is the set of open rings of one program: Kind.Open adds a ring,
// its Close removes it. The admin web view reads through it.
type Store struct {
	mu    sync.Mutex
	rings []*Ring
}

// NewStore makes an empty Store.
func NewStore() *Store { return &Store{} }

func (s *Store) add(r *Ring) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rings = append(s.rings, r)
}

func (s *Store) remove(r *Ring) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rings = slices.DeleteFunc(s.rings, func(x *Ring) bool { return x == r })
}

func (s *Store) open() []*Ring {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.rings)
}

// Open reports whether a ring is open.
func (s *Store) Open() bool { return len(s.open()) > 0 }

// SessionFrames returns a session's frames from the open ring that holds
// the most of them (two recent sinks fed by the same rules hold the same
// frames; one fed by a narrower rule holds fewer), oldest first.
func (s *Store) SessionFrames(id string) []Frame {
	var best []Frame
	for _, r := range s.open() {
		if f := r.SessionFrames(id); len(f) > len(best) {
			best = f
		}
	}
	return best
}

// Sessions lists the sessions the open rings hold frames of, the most
// recently active first, at most max (max <= 0: all).
func (s *Store) Sessions(max int) []Session {
	byID := map[string]Session{}
	for _, r := range s.open() {
		for _, x := range r.Sessions(0) {
			if y, ok := byID[x.ID]; !ok || x.Frames > y.Frames {
				byID[x.ID] = x
			}
		}
	}
	out := make([]Session, 0, len(byID))
	for _, x := range byID {
		out = append(out, x)
	}
	sortSessions(out)
	if max > 0 && len(out) > max {
		out = out[:max]
	}
	return out
}

func sortSessions(s []Session) {
	slices.SortFunc(s, func(a, b Session) int {
		if c := b.Last.Compare(a.Last); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}
