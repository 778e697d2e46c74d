package session

import (
	"path"
	"strings"

	"github.com/tokengate/tokengate/audit"
)

// The client sees its token's root as "/", and rsync runs with the root as
// its working directory (JailDataDir). So a path argument, absolute or not,
// becomes a path relative to the working directory, and a path-valued option
// that must stay absolute is moved under JailDataDir. Every check here is
// lexical: it catches ".." that climbs out. Symlinks are the jail's job, and
// --munge-links keeps a pushed symlink from becoming one.

// mapArgPath rewrites a path argument to a relative path inside the root,
// keeping the client's text otherwise: a trailing "/" (copy the contents)
// and "/./" (where -R starts the transmitted name) change what rsync does,
// and glob characters are for rsync's sender to expand.
func mapArgPath(w shellWord) (string, *audit.Denial) {
	p := w.text
	if w.tilde {
		if p == "~" {
			return ".", nil
		}
		p = p[1:]
	}
	if denial := checkNoNul(p); denial != nil {
		return "", denial
	}

	rel := strings.TrimLeft(p, "/")
	switch {
	case p == "":
		rel = "."
	case rel == "":
		rel = "./"
	}
	if climbsOut(rel) {
		return "", outsideDenial(w.text)
	}
	return rel, nil
}

// mapJailAbsolute moves an absolute client path under JailDataDir.
func mapJailAbsolute(p, given string) (string, *audit.Denial) {
	rel := strings.TrimLeft(p, "/")
	if climbsOut(rel) {
		return "", outsideDenial(given)
	}
	if rel == "" {
		return JailDataDir, nil
	}
	return JailDataDir + "/" + rel, nil
}

// mapDestDir maps a directory that rsync resolves against the destination
// directory (--temp-dir, --backup-dir, --link-dest and friends). A relative
// one is joined to the destination and made absolute under JailDataDir, so
// that what was checked is exactly what rsync opens.
func mapDestDir(value string, tilde bool, dest string) (string, *audit.Denial) {
	p := value
	if tilde {
		p = "/" + strings.TrimPrefix(p[1:], "/")
	}
	if denial := checkNoNul(p); denial != nil {
		return "", denial
	}
	if strings.HasPrefix(p, "/") {
		return mapJailAbsolute(p, value)
	}
	joined := dest + "/" + p
	if climbsOut(joined) {
		return "", outsideDenial(value)
	}
	return mapJailAbsolute(path.Clean("/"+joined), value)
}

// mapPartialDir maps --partial-dir. rsync resolves a relative one inside the
// directory of each file it receives, which may be anywhere in the tree, so no
// ".." is safe in it; an absolute one moves under JailDataDir.
func mapPartialDir(value string, tilde bool) (string, *audit.Denial) {
	p := value
	if tilde {
		p = "/" + strings.TrimPrefix(p[1:], "/")
	}
	if denial := checkNoNul(p); denial != nil {
		return "", denial
	}
	if strings.HasPrefix(p, "/") {
		return mapJailAbsolute(p, value)
	}
	if p == "" {
		return "", audit.Deny(audit.ReasonArgumentInvalid, "option --partial-dir needs a value")
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", outsideDenial(value)
		}
	}
	return p, nil
}

// mapFilesFrom maps --files-from: "-" is the list the client streams over
// the connection; anything else is a file the server reads, which must be
// inside the root. An absolute name moves under JailDataDir, so
// --files-from=/etc/passwd names the root's etc/passwd, never the host's.
func mapFilesFrom(value string, tilde bool) (string, *audit.Denial) {
	if value == "-" && !tilde {
		return value, nil
	}
	p := value
	if tilde {
		p = "/" + strings.TrimPrefix(p[1:], "/")
	}
	if denial := checkNoNul(p); denial != nil {
		return "", denial
	}
	if p == "" {
		return "", audit.Deny(audit.ReasonArgumentInvalid, "option --files-from needs a value")
	}
	if strings.HasPrefix(p, "/") {
		return mapJailAbsolute(p, value)
	}
	if climbsOut(p) {
		return "", outsideDenial(value)
	}
	return p, nil
}

// climbsOut reports whether a relative path, resolved lexically from the
// root, ever steps above it ("..", "a/../../b").
func climbsOut(rel string) bool {
	depth := 0
	for _, part := range strings.Split(rel, "/") {
		switch part {
		case "", ".":
		case "..":
			if depth--; depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}

func checkNoNul(p string) *audit.Denial {
	if strings.IndexByte(p, 0) >= 0 {
		return audit.Deny(audit.ReasonArgumentInvalid, "a path contains a NUL byte")
	}
	return nil
}

func outsideDenial(given string) *audit.Denial {
	return audit.Deny(audit.ReasonPathOutsideRoot,
		"path %s leaves the token's root", quoteArg(given))
}

// globPattern returns a mapped path argument in the form rsync's own glob
// matching reads, for a word whose unquoted wildcards a shell would have
// expanded. Components with a wildcard take the escaped spelling, so a
// quoted "*" stays a literal star; the others keep their text, because rsync
// reads a component without wildcards literally, backslashes and all.
func globPattern(w shellWord, rel string) string {
	esc := w.escaped
	if w.tilde {
		esc = esc[1:]
	}
	esc = strings.TrimLeft(esc, "/")
	relParts, escParts := strings.Split(rel, "/"), strings.Split(esc, "/")
	// "/" is never escaped, so the components line up.
	if len(relParts) != len(escParts) {
		return rel
	}
	for i, part := range relParts {
		if strings.ContainsAny(part, globChars) {
			relParts[i] = escParts[i]
		}
	}
	return strings.Join(relParts, "/")
}
