package client

import (
	"bytes"
	"io"
	"regexp"
	"strings"
	"sync"
)

// Refusal is the gateway saying no to a token itself, as opposed to a
// transfer it refused for another reason (scope, path, option). Only these
// can be cured by a fresh token.
type Refusal struct {
	// TokenID is the ID the gateway named; empty when its words name none.
	TokenID string
	// Words are the gateway's words without the "tokengate: " prefix,
	// such as "token 3k9w0c2hx1ab expired at 2026-12-05T07:14:00Z".
	Words string
}

// refusalPatterns match the lines the gateway sends when it refuses a
// token: through the SSH banner at login, or on stderr when it cuts a live
// session. A warning ("expires in") and a refused command ("lacks write
// scope") are deliberately not matched.
var refusalPatterns = []*regexp.Regexp{
	regexp.MustCompile(`^tokengate: token ([a-z0-9]{12}) expired\b`),
	regexp.MustCompile(`^tokengate: token ([a-z0-9]{12}) was revoked\b`),
	regexp.MustCompile(`^tokengate: token ([a-z0-9]{12}) was single-use and is spent\b`),
	regexp.MustCompile(`^tokengate: ()unknown token, or wrong secret\b`),
	regexp.MustCompile(`^tokengate: ()that is not a valid tokengate token\b`),
}

// ParseRefusal reports whether one line of ssh's or rsync's stderr is the
// gateway refusing a token.
func ParseRefusal(line string) (Refusal, bool) {
	line = strings.TrimSpace(line)
	for _, re := range refusalPatterns {
		if m := re.FindStringSubmatch(line); m != nil {
			return Refusal{TokenID: m[1], Words: strings.TrimPrefix(line, "tokengate: ")}, true
		}
	}
	return Refusal{}, false
}

// maxLine bounds the part of one stderr line that is kept for matching;
// the gateway's lines are far shorter, and rsync's output is unbounded.
const maxLine = 4096

// stderrWatch passes a child's stderr through unchanged while it remembers
// the last token refusal and the last other "tokengate:" line it carried.
type stderrWatch struct {
	out io.Writer

	mu      sync.Mutex
	line    []byte
	refusal *Refusal
	gateway string
}

func newStderrWatch(out io.Writer) *stderrWatch { return &stderrWatch{out: out} }

// Write never fails: a closed stderr must not stop the transfer, and the
// lines are still read for refusals.
func (w *stderrWatch) Write(p []byte) (int, error) {
	n := len(p)
	_, _ = w.out.Write(p)

	w.mu.Lock()
	defer w.mu.Unlock()
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.keep(p)
			break
		}
		w.keep(p[:i])
		w.endLine()
		p = p[i+1:]
	}
	return n, nil
}

func (w *stderrWatch) keep(p []byte) {
	room := maxLine - len(w.line)
	if room > 0 {
		w.line = append(w.line, p[:min(len(p), room)]...)
	}
}

func (w *stderrWatch) endLine() {
	line := strings.TrimSpace(string(w.line))
	w.line = w.line[:0]
	if r, ok := ParseRefusal(line); ok {
		w.refusal = &r
	} else if strings.HasPrefix(line, "tokengate: ") {
		w.gateway = strings.TrimPrefix(line, "tokengate: ")
	}
}

// result reads the last line too, and returns the last token refusal (nil
// when there was none) and the gateway's last other words.
func (w *stderrWatch) result() (*Refusal, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.line) > 0 {
		w.endLine()
	}
	return w.refusal, w.gateway
}
