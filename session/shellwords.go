package session

import (
	"strings"

	"github.com/tokengate/tokengate/audit"
)

// shellWord is one word of an exec command after quote removal.
type shellWord struct {
	text string
	// tilde is set when the word began with an unquoted "~" that a shell
	// would expand to the login's home, which for a token is its root.
	tilde bool
	// glob is set when the word holds an unquoted *, ? or [ that a shell
	// would expand. escaped is the text with every quoted *, ?, [ and
	// backslash escaped, the form rsync's own glob matching reads.
	glob    bool
	escaped string
}

// globChars are the bytes a shell and rsync's own glob matching expand.
const globChars = "*?["

// forbiddenHint ends every refusal of a command that is not plain
// `rsync --server`.
const forbiddenHint = `only "rsync --server" commands are accepted`

// mkpathHint is added when the refused command involves rsync: the usual
// reason for one is --rsync-path="mkdir -p d && rsync".
const mkpathHint = `; to create the destination directory use --mkpath`

// withHint adds mkpathHint to a command refusal whose command names rsync.
func withHint(d *audit.Denial, raw string) *audit.Denial {
	if d != nil && d.Reason == audit.ReasonCommandForbidden && strings.Contains(raw, "rsync") {
		d.Message += mkpathHint
	}
	return d
}

// splitShellWords splits raw the way a POSIX shell splits a simple command,
// for the subset an rsync client produces: blanks, backslash escapes, '...'
// and "...". Anything that would make a shell do more than run one program
// (operators, redirections, expansions, comments, brace lists) is refused,
// because the gateway never runs a shell and must not guess what one would do.
// Glob characters stay literal: rsync's sender expands them itself.
func splitShellWords(raw string) ([]shellWord, *audit.Denial) {
	var (
		words  []shellWord
		cur    strings.Builder
		esc    strings.Builder
		inWord bool
		tilde  bool
		glob   bool
	)
	endWord := func() {
		if inWord {
			words = append(words, shellWord{text: cur.String(), tilde: tilde, glob: glob,
				escaped: esc.String()})
		}
		cur.Reset()
		esc.Reset()
		inWord, tilde, glob = false, false, false
	}
	// quoted copies bytes a shell would take literally.
	quoted := func(b string) {
		cur.WriteString(b)
		for i := 0; i < len(b); i++ {
			if strings.IndexByte(globChars+`\`, b[i]) >= 0 {
				esc.WriteByte('\\')
			}
			esc.WriteByte(b[i])
		}
		inWord = true
	}
	unquoted := func(c byte) {
		cur.WriteByte(c)
		esc.WriteByte(c)
		glob = glob || strings.IndexByte(globChars, c) >= 0
		inWord = true
	}

	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == ' ' || c == '\t':
			endWord()

		case c == '\\':
			if i+1 == len(raw) {
				return nil, audit.Deny(audit.ReasonArgumentInvalid,
					"the command ends with a lone backslash")
			}
			i++
			// A backslash-newline pair is a line continuation and vanishes.
			if raw[i] != '\n' {
				quoted(raw[i : i+1])
			}

		case c == '\'':
			end := strings.IndexByte(raw[i+1:], '\'')
			if end < 0 {
				return nil, audit.Deny(audit.ReasonArgumentInvalid,
					"the command has an unterminated ' quote")
			}
			quoted(raw[i+1 : i+1+end])
			i += end + 1

		case c == '"':
			body, next, denial := readDoubleQuoted(raw, i+1)
			if denial != nil {
				return nil, denial
			}
			quoted(body)
			i = next

		case c == '#' && !inWord:
			return nil, shellSyntaxDenial("#")

		case c == '~' && !inWord && tildePrefix(raw, i):
			unquoted(c)
			tilde = true

		case isShellSpecial(c):
			return nil, shellSyntaxDenial(string(c))

		default:
			unquoted(c)
		}
	}
	endWord()
	return words, nil
}

// readDoubleQuoted returns the body of a "..." string starting at raw[start]
// and the index of the closing quote. Inside double quotes a shell still
// expands $ and `, so those are refused unless escaped.
func readDoubleQuoted(raw string, start int) (string, int, *audit.Denial) {
	var body strings.Builder
	for i := start; i < len(raw); i++ {
		switch c := raw[i]; c {
		case '"':
			return body.String(), i, nil
		case '$', '`':
			return "", 0, shellSyntaxDenial(string(c))
		case '\\':
			if i+1 < len(raw) {
				switch n := raw[i+1]; n {
				case '$', '`', '"', '\\':
					body.WriteByte(n)
					i++
					continue
				case '\n':
					i++
					continue
				}
			}
			body.WriteByte(c)
		default:
			body.WriteByte(c)
		}
	}
	return "", 0, audit.Deny(audit.ReasonArgumentInvalid, `the command has an unterminated " quote`)
}

// tildePrefix reports whether the "~" at raw[i] is a whole tilde-prefix naming
// the login's own home ("~" or "~/..."). "~name" would be another user's home
// in a shell; here it stays a literal file name inside the root.
func tildePrefix(raw string, i int) bool {
	if i+1 == len(raw) {
		return true
	}
	switch raw[i+1] {
	case '/', ' ', '\t':
		return true
	}
	return false
}

// isShellSpecial reports the unquoted bytes that make a shell do something
// other than pass a word to the program: control operators, redirections,
// subshells, expansions, brace lists and a newline (a second command).
func isShellSpecial(c byte) bool {
	switch c {
	case ';', '&', '|', '<', '>', '(', ')', '$', '`', '\n', '\r', '{', '}':
		return true
	}
	return false
}

func shellSyntaxDenial(what string) *audit.Denial {
	if what == "\n" || what == "\r" {
		what = "a line break"
	} else {
		what = `"` + what + `"`
	}
	return audit.Deny(audit.ReasonCommandForbidden,
		"shell syntax (%s) is not accepted: %s", what, forbiddenHint)
}
