package auth

import (
	"fmt"
	"strings"
)

// Scope is the set of things a token allows. Scopes combine as bits.
type Scope uint8

const (
	// ScopeRead lets the client pull: rsync runs as the sender.
	ScopeRead Scope = 1 << iota
	// ScopeWrite lets the client push: rsync runs as the receiver.
	ScopeWrite
	// ScopeDelete lets a transfer remove files (--delete*, --remove-source-files).
	ScopeDelete
	// ScopeIssue lets the holder mint narrower child tokens over SSH.
	ScopeIssue
)

var scopeNames = []struct {
	scope Scope
	name  string
}{
	{ScopeRead, "read"},
	{ScopeWrite, "write"},
	{ScopeDelete, "delete"},
	{ScopeIssue, "issue"},
}

// ParseScopes reads a comma-separated list such as "read,write".
// An empty list, an unknown name or a repeated name is an error.
func ParseScopes(list string) (Scope, error) {
	var s Scope
	if strings.TrimSpace(list) == "" {
		return 0, fmt.Errorf("no scope given (want a list of read, write, delete, issue)")
	}
	for _, part := range strings.Split(list, ",") {
		name := strings.TrimSpace(part)
		found := false
		for _, sn := range scopeNames {
			if sn.name == name {
				if s&sn.scope != 0 {
					return 0, fmt.Errorf("scope %q given twice", name)
				}
				s |= sn.scope
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown scope %q (want read, write, delete or issue)", name)
		}
	}
	return s, nil
}

// Has reports whether every scope in want is granted.
func (s Scope) Has(want Scope) bool { return s&want == want }

// String lists the scopes in a fixed order, comma-separated, as ParseScopes reads them.
func (s Scope) String() string {
	var names []string
	for _, sn := range scopeNames {
		if s&sn.scope != 0 {
			names = append(names, sn.name)
		}
	}
	return strings.Join(names, ",")
}
