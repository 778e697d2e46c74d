package session

import (
	"errors"
	"slices"
	"strings"

	"github.com/tokengate/tokengate/audit"
	"github.com/tokengate/tokengate/auth"
)

// Plan is an approved rsync server invocation, ready for the jail.
type Plan struct {
	// Argv is the jail's command: "rsync", "--server", ... It always holds
	// --munge-links, and "--" before the "." so no path can pass for an option.
	Argv []string
	// Stdin, when not nil, is the argument list rsync reads from its stdin
	// (Argv then holds -s): to be written before any byte of the client's.
	// It is set for an -s client, with its approved list re-serialized, and
	// for a pull whose paths hold wildcards, which only rsync can expand.
	Stdin     []byte
	Direction Direction
	// Deletes is set when the transfer can remove files inside the root.
	Deletes bool
}

// Authorize applies the policy for the token's scopes to inv and returns what
// to run. A refusal is an *audit.Denial. Calling it on an -s invocation whose
// argument list was not read yet is a caller bug, returned as a plain error.
func Authorize(inv *Invocation, scopes auth.Scope) (*Plan, error) {
	if inv == nil {
		return nil, errors.New("session: Authorize without an invocation")
	}
	if inv.Protected && !inv.listRead {
		return nil, errors.New("session: Authorize before the -s argument list was read")
	}
	plan, denial := authorize(inv, scopes)
	if denial != nil {
		return nil, denial
	}
	return plan, nil
}

func authorize(inv *Invocation, scopes auth.Scope) (*Plan, *audit.Denial) {
	if denial := checkDirection(inv, scopes); denial != nil {
		return nil, denial
	}
	paths, dest, denial := mapPaths(inv)
	if denial != nil {
		return nil, denial
	}

	plan := &Plan{Direction: inv.Direction}
	head := []string{"rsync", "--server"}
	if inv.Direction == DirectionPull {
		head = append(head, "--sender")
	}
	var list []string
	for _, opt := range inv.options {
		word, deletes, denial := approveOption(inv.Direction, opt, dest, scopes)
		if denial != nil {
			return nil, denial
		}
		plan.Deletes = plan.Deletes || deletes
		if opt.inList {
			list = append(list, word)
		} else {
			head = append(head, word)
		}
	}

	stdinMode := inv.Protected
	if !stdinMode && needsRsyncGlob(inv) {
		for i, w := range inv.paths {
			paths[i] = globPattern(w, paths[i])
		}
		head = append(head, "-s")
		stdinMode = true
	}

	// The client's own --munge-links, if any, was dropped while parsing; this
	// one is added in the head and, in stdin mode, again in the list, so
	// whichever rsync reads last still has it.
	head = append(head, "--munge-links")
	tail := append([]string{"--", "."}, paths...)
	if !stdinMode {
		plan.Argv = append(head, tail...)
		return plan, nil
	}
	plan.Argv = head
	list = append(list, "--munge-links")
	plan.Stdin = encodeNulList(append(list, tail...))
	return plan, nil
}

// needsRsyncGlob reports a pull whose paths hold unquoted wildcards. rsync
// expands wildcards in its arguments only when it reads them from stdin, as
// for -s; otherwise it counts on the remote shell, which the gateway does not
// run. Such a pull is handed to rsync the -s way, every path in rsync's glob
// syntax. Not with --iconv, under which rsync would also convert the names.
func needsRsyncGlob(inv *Invocation) bool {
	if inv.Direction != DirectionPull {
		return false
	}
	for _, opt := range inv.options {
		if opt.spec.value == valueCharset {
			return false
		}
	}
	return slices.ContainsFunc(inv.paths, func(w shellWord) bool { return w.glob })
}

// checkDirection asks for the scope the direction needs.
func checkDirection(inv *Invocation, scopes auth.Scope) *audit.Denial {
	switch inv.Direction {
	case DirectionPull:
		if !scopes.Has(auth.ScopeRead) {
			return audit.Deny(audit.ReasonScopeMissing, "lacks read scope")
		}
	case DirectionPush:
		if !scopes.Has(auth.ScopeWrite) {
			return audit.Deny(audit.ReasonScopeMissing, "lacks write scope")
		}
	default:
		return audit.Deny(audit.ReasonArgumentInvalid, "the transfer has no direction")
	}
	return nil
}

// mapPaths rewrites the path arguments into the root. A pull names one or
// more sources; a push names exactly one destination, which it also returns
// because some options resolve against it.
func mapPaths(inv *Invocation) ([]string, string, *audit.Denial) {
	switch {
	case len(inv.paths) == 0 && inv.Direction == DirectionPull:
		return nil, "", audit.Deny(audit.ReasonArgumentInvalid, "the command names no source path")
	case len(inv.paths) == 0:
		return nil, "", audit.Deny(audit.ReasonArgumentInvalid,
			"the command names no destination path")
	case len(inv.paths) > 1 && inv.Direction == DirectionPush:
		return nil, "", audit.Deny(audit.ReasonArgumentInvalid,
			"a push names exactly one destination, not %d paths", len(inv.paths))
	}

	paths := make([]string, 0, len(inv.paths))
	for _, w := range inv.paths {
		p, denial := mapArgPath(w)
		if denial != nil {
			return nil, "", denial
		}
		paths = append(paths, p)
	}
	dest := "."
	if inv.Direction == DirectionPush {
		dest = paths[0]
	}
	return paths, dest, nil
}

// approveOption checks one option against the direction and scopes and
// returns the word to pass on, and whether it lets the transfer delete.
func approveOption(dir Direction, opt option, dest string, scopes auth.Scope) (
	string, bool, *audit.Denial) {
	spec := opt.spec
	if spec == flagSpec {
		return "-" + opt.letters + opt.value, false, nil
	}
	if spec.role == roleProtect {
		return spec.name, false, nil
	}
	if spec.pushOnly && dir == DirectionPull {
		return "", false, audit.Deny(audit.ReasonOptionForbidden,
			"option %s is not allowed on a pull", quoteArg(opt.given))
	}

	deletes := spec.deletes == deletesAlways ||
		(spec.deletes == deletesOnPull && dir == DirectionPull) ||
		(spec.deletes == deletesOnPush && dir == DirectionPush)
	if deletes && !scopes.Has(auth.ScopeDelete) {
		return "", false, audit.Deny(audit.ReasonScopeMissing,
			"lacks delete scope (needed by %s)", quoteArg(opt.given))
	}
	// A list file named on a push is read by the server and its lines are
	// echoed back as file names: that is reading the root.
	if spec.value == valueFilesFrom && dir == DirectionPush && opt.value != "-" &&
		!scopes.Has(auth.ScopeRead) {
		return "", false, audit.Deny(audit.ReasonScopeMissing,
			"lacks read scope (needed by --files-from on a push)")
	}

	value, denial := approveValue(opt, dest)
	if denial != nil {
		return "", false, denial
	}
	switch {
	case spec.value == valueNone:
		return spec.name, deletes, nil
	case strings.HasPrefix(spec.name, "--"):
		return spec.name + "=" + value, deletes, nil
	default:
		return spec.name + value, deletes, nil
	}
}

// approveValue checks an option's value by its kind and maps paths.
func approveValue(opt option, dest string) (string, *audit.Denial) {
	v := opt.value
	switch opt.spec.value {
	case valueNone:
		return "", nil
	case valuePartialDir:
		return mapPartialDir(v, opt.tilde)
	case valueDestDir:
		if v == "" {
			return "", audit.Deny(audit.ReasonArgumentInvalid,
				"option %s needs a value", quoteArg(opt.given))
		}
		return mapDestDir(v, opt.tilde, dest)
	case valueFilesFrom:
		return mapFilesFrom(v, opt.tilde)
	case valueCharset:
		if !knownCharset(v) {
			return "", valueDenial(opt)
		}
		return v, nil
	case valueLogFormat:
		switch v {
		case "X", "%i", "%i%I", "%o":
			return v, nil
		}
		return "", valueDenial(opt)
	}

	if opt.tilde || !valueFits(opt.spec.value, v) {
		return "", valueDenial(opt)
	}
	return v, nil
}

// valueFits checks a value that is not a path against the characters its kind
// can hold. None of these reach a file name, so the check only keeps the
// values to what rsync documents and out of anything a parser could trip on.
func valueFits(kind valueKind, v string) bool {
	limit, allowed := 1024, func(c byte) bool { return c >= ' ' && c != 0x7f }
	switch kind {
	case valueNumber:
		if !strings.ContainsAny(v, "0123456789") {
			return false
		}
		limit, allowed = 32, func(c byte) bool { return isAlnum(c) || strings.IndexByte(".+-", c) >= 0 }
	case valueFlagWords:
		limit, allowed = 512, func(c byte) bool { return isAlnum(c) || c == ',' || c == '_' }
	case valueNames:
		limit, allowed = 128, func(c byte) bool {
			return isAlnum(c) || strings.IndexByte("._:,+-", c) >= 0
		}
	case valueSuffix:
		if strings.IndexByte(v, '/') >= 0 {
			return false
		}
	}
	if len(v) > limit || (v == "" && kind != valueSuffix) {
		return false
	}
	for i := 0; i < len(v); i++ {
		if !allowed(v[i]) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func valueDenial(opt option) *audit.Denial {
	return audit.Deny(audit.ReasonArgumentInvalid, "option %s does not accept the value %s",
		quoteArg(opt.given), quoteArg(opt.value))
}

// encodeNulList writes an -s argument list the way rsync's client does, and
// the way the server reads it: "rsync", each argument, then an empty one.
func encodeNulList(args []string) []byte {
	size := len("rsync") + 2
	for _, a := range args {
		size += len(a) + 1
	}
	buf := make([]byte, 0, size)
	buf = append(buf, "rsync"...)
	buf = append(buf, 0)
	for _, a := range args {
		buf = append(buf, a...)
		buf = append(buf, 0)
	}
	return append(buf, 0)
}

// knownCharset accepts the --iconv charsets that agree with ASCII on every
// byte below 0x80, and none of iconv's "//TRANSLIT"-style suffixes. With -s,
// rsync converts the argument list with this charset after the policy has
// checked it; a charset such as UTF-7 or an EBCDIC page could turn bytes that
// passed as a plain name into "../" there.
func knownCharset(v string) bool {
	if v == "." || v == "-" {
		return true
	}
	for _, name := range strings.Split(v, ",") {
		n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		ok := n == "utf8" || n == "utf-8" || n == "ascii" || n == "us-ascii"
		for _, prefix := range []string{"iso-8859-", "iso8859-", "latin", "cp125", "windows-125"} {
			if rest, found := strings.CutPrefix(n, prefix); found && rest != "" &&
				len(rest) <= 2 && strings.Trim(rest, "0123456789") == "" {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
