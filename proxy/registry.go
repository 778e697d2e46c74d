package proxy

import (
	"sort"
	"sync"
)

// Registry knows every running session by token, so that a revocation can
// end them all at once.
type Registry struct {
	mu      sync.Mutex
	byToken map[string]map[*liveSession]struct{}
}

// liveSession is one running rsync. cut ends it, telling the client why.
type liveSession struct {
	id      string
	tokenID string
	cut     func(message string)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byToken: map[string]map[*liveSession]struct{}{}}
}

func (r *Registry) add(l *liveSession) {
	r.mu.Lock()
	defer r.mu.Unlock()
	set := r.byToken[l.tokenID]
	if set == nil {
		set = map[*liveSession]struct{}{}
		r.byToken[l.tokenID] = set
	}
	set[l] = struct{}{}
}

func (r *Registry) remove(l *liveSession) {
	r.mu.Lock()
	defer r.mu.Unlock()
	set := r.byToken[l.tokenID]
	delete(set, l)
	if len(set) == 0 {
		delete(r.byToken, l.tokenID)
	}
}

// Tokens lists the token IDs that have at least one live session.
func (r *Registry) Tokens() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.byToken))
	for id := range r.byToken {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Count is the number of live sessions.
func (r *Registry) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, set := range r.byToken {
		n += len(set)
	}
	return n
}

// Cut ends every live session of a token with message and returns their IDs.
func (r *Registry) Cut(tokenID, message string) []string {
	r.mu.Lock()
	var victims []*liveSession
	for l := range r.byToken[tokenID] {
		victims = append(victims, l)
	}
	r.mu.Unlock()

	ids := make([]string, 0, len(victims))
	for _, l := range victims {
		l.cut(message)
		ids = append(ids, l.id)
	}
	sort.Strings(ids)
	return ids
}

// CutAll ends every live session, at shutdown.
func (r *Registry) CutAll(message string) {
	for _, id := range r.Tokens() {
		r.Cut(id, message)
	}
}
