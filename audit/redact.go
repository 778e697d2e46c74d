package audit

import (
	"regexp"
	"strings"
)

// tokenPattern matches a whole tokengate token (see auth/token.go for the
// format). Clients do paste tokens where they do not belong: as the SSH user
// name, inside a command or a path. Every string an event carries passes
// through RedactTokens, so such a token reaches no log and no SIEM; its ID
// stays, to say whose token leaked.
var tokenPattern = regexp.MustCompile(`tg_([a-z0-9]{12})_[A-Za-z0-9]{38}`)

// RedactTokens replaces each token in s by its ID and a marker.
func RedactTokens(s string) string {
	if !strings.Contains(s, "tg_") {
		return s
	}
	return tokenPattern.ReplaceAllString(s, "tg_${1}_[REDACTED]")
}

// redactValue applies RedactTokens to the string kinds events carry.
func redactValue(v any) any {
	switch x := v.(type) {
	case string:
		return RedactTokens(x)
	case []string:
		out := make([]string, len(x))
		for i, s := range x {
			out[i] = RedactTokens(s)
		}
		return out
	}
	return v
}
