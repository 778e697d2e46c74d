package session

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/audit"
	"github.com/tokengate/tokengate/auth"
)

// FuzzAuthorize feeds arbitrary exec commands and -s argument lists through
// the parser and the policy. The seed corpus in testdata/fuzz/FuzzAuthorize
// holds the real client lines; the table cases are added here too. Whatever
// is accepted must be an rsync server command that cannot leave the root.
func FuzzAuthorize(f *testing.F) {
	for _, tc := range acceptCases {
		f.Add(tc.raw, []byte(nil))
	}
	for _, tc := range refuseCases {
		f.Add(tc.raw, []byte(tc.list))
	}

	f.Fuzz(func(t *testing.T, raw string, list []byte) {
		inv, err := ParseCommand(raw)
		if err != nil {
			mustBeDenial(t, err)
			return
		}
		if inv.Protected {
			r := bytes.NewReader(list)
			if err := inv.ReadProtectedArgs(r); err != nil {
				mustBeDenial(t, err)
				return
			}
			end := bytes.Index(list, []byte{0, 0}) + 2
			if read := len(list) - r.Len(); read != end {
				t.Fatalf("read %d bytes of the -s list, want exactly %d", read, end)
			}
		}

		for scopes := auth.Scope(0); scopes <= scopeAll; scopes++ {
			plan, err := Authorize(inv, scopes)
			if err != nil {
				mustBeDenial(t, err)
				continue
			}
			checkPlan(t, plan, inv.Protected)
			need := auth.ScopeWrite
			if plan.Direction == DirectionPull {
				need = auth.ScopeRead
			}
			if plan.Deletes {
				need |= auth.ScopeDelete
			}
			if !scopes.Has(need) {
				t.Fatalf("accepted with scopes %q, the plan needs %q: %q", scopes, need, plan.Argv)
			}
		}
	})
}

func mustBeDenial(t *testing.T, err error) {
	t.Helper()
	var denial *audit.Denial
	if !errors.As(err, &denial) {
		t.Fatalf("error %v is not a denial", err)
	}
	switch denial.Reason {
	case audit.ReasonCommandForbidden, audit.ReasonArgumentInvalid, audit.ReasonOptionForbidden,
		audit.ReasonScopeMissing, audit.ReasonPathOutsideRoot:
	default:
		t.Fatalf("denial reason %q is not one the policy gives", denial.Reason)
	}
	if denial.Message == "" || strings.ContainsAny(denial.Message, "\n\r\x00") {
		t.Fatalf("denial message %q is not one line", denial.Message)
	}
}

// fuzzForbidden are options that must never reach the jail, whatever the
// allow-list says: checked here independently of it.
var fuzzForbidden = map[string]bool{
	"--daemon": true, "--config": true, "--rsh": true, "--rsync-path": true,
	"--log-file": true, "--log-file-format": true, "--write-devices": true,
	"--copy-devices": true, "--no-munge-links": true, "--remote-option": true,
	"--only-write-batch": true, "--write-batch": true, "--read-batch": true,
	"--server": true, "--super": true, "--old-args": true, "--password-file": true,
	"--early-input": true, "--exclude-from": true, "--include-from": true,
	"--filter": true, "--copy-as": true, "--insecure-links": true, "--sender": true,
}

// fuzzPathOptions are the options whose value the server opens as a path.
var fuzzPathOptions = map[string]bool{
	"--temp-dir": true, "-T": true, "--backup-dir": true, "--link-dest": true,
	"--copy-dest": true, "--compare-dest": true, "--partial-dir": true, "--files-from": true,
}

// checkPlan verifies an accepted plan without trusting the parser that made it.
func checkPlan(t *testing.T, plan *Plan, protected bool) {
	t.Helper()
	argv := plan.Argv
	if len(argv) < 3 || argv[0] != "rsync" || argv[1] != "--server" {
		t.Fatalf("argv does not start with rsync --server: %q", argv)
	}
	opts := argv[2:]
	if plan.Direction == DirectionPull {
		if opts[0] != "--sender" {
			t.Fatalf("pull without --sender: %q", argv)
		}
		opts = opts[1:]
	}

	var paths []string
	if plan.Stdin == nil {
		if protected {
			t.Fatalf("an -s invocation came back without its list: %q", argv)
		}
		i := wordIndex(opts, "--")
		if i < 0 || i+1 >= len(opts) || opts[i+1] != "." {
			t.Fatalf("argv lacks -- . before its paths: %q", argv)
		}
		opts, paths = opts[:i], opts[i+2:]
		if hasProtectFlag(opts) {
			t.Fatalf("argv asks for -s but there is no list: %q", argv)
		}
	} else {
		if !hasProtectFlag(opts) {
			t.Fatalf("a stdin list without -s in argv: %q", argv)
		}
		list := decodeNulList(t, plan.Stdin)
		i := wordIndex(list, "--")
		if i < 0 || i+1 >= len(list) || list[i+1] != "." {
			t.Fatalf("stdin list lacks -- . before its paths: %q", list)
		}
		opts = append(opts, list[:i]...)
		paths = list[i+2:]
		if wordIndex(list[:i], "--munge-links") < 0 {
			t.Fatalf("stdin list lacks --munge-links: %q", list)
		}
	}

	if wordIndex(opts, "--munge-links") < 0 {
		t.Fatalf("argv lacks --munge-links: %q", argv)
	}
	for _, o := range opts {
		checkOptionWord(t, o, argv)
	}
	if len(paths) == 0 || (plan.Direction == DirectionPush && len(paths) != 1) {
		t.Fatalf("wrong number of paths %q for a %v", paths, plan.Direction)
	}
	for _, p := range paths {
		if p == "" || strings.HasPrefix(p, "/") || climbsOutAnyway(p) {
			t.Fatalf("path %q is not a relative path inside the root: %q", p, argv)
		}
	}
}

func checkOptionWord(t *testing.T, o string, argv []string) {
	t.Helper()
	switch {
	case strings.HasPrefix(o, "--"):
		name, value, _ := strings.Cut(o, "=")
		if fuzzForbidden[name] {
			t.Fatalf("forbidden option %q in %q", o, argv)
		}
		if fuzzPathOptions[name] {
			checkOptionPath(t, name, value, argv)
		}
	case strings.HasPrefix(o, "-T"):
		checkOptionPath(t, "-T", o[2:], argv)
	case strings.HasPrefix(o, "-B") || strings.HasPrefix(o, "-@"):
	case strings.HasPrefix(o, "-") && len(o) > 1:
		letters, caps, _ := strings.Cut(o[1:], "e")
		for i := 0; i < len(letters); i++ {
			if strings.IndexByte("ACDEHIJKLNORSUWXbcdgklmnopqrstuvxyz", letters[i]) < 0 {
				t.Fatalf("letter %q of %q is not allowed: %q", letters[i], o, argv)
			}
		}
		if strings.ContainsAny(caps, " /;|&$`'\"\\") {
			t.Fatalf("capability tail of %q looks like a command: %q", o, argv)
		}
	default:
		t.Fatalf("word %q among the options: %q", o, argv)
	}
}

func checkOptionPath(t *testing.T, name, value string, argv []string) {
	t.Helper()
	switch {
	case name == "--files-from" && value == "-":
	case value == JailDataDir:
	case strings.HasPrefix(value, JailDataDir+"/"):
		if climbsOutAnyway(value[len(JailDataDir)+1:]) {
			t.Fatalf("%s=%q climbs out of %s: %q", name, value, JailDataDir, argv)
		}
	case strings.HasPrefix(value, "/") || value == "":
		t.Fatalf("%s=%q is absolute outside %s: %q", name, value, JailDataDir, argv)
	case name == "--partial-dir":
		for _, part := range strings.Split(value, "/") {
			if part == ".." {
				t.Fatalf("%s=%q has a .. component: %q", name, value, argv)
			}
		}
	case name == "--files-from":
		if climbsOutAnyway(value) {
			t.Fatalf("%s=%q climbs out: %q", name, value, argv)
		}
	default:
		// The other directory options are always made absolute.
		t.Fatalf("%s=%q is relative: %q", name, value, argv)
	}
}

// climbsOutAnyway is a second reading of "leaves the root": does any prefix
// of the path resolve above its start? Backslashes count as part of a name:
// rsync reads a component without wildcards literally, and its own glob
// matching never yields "." or "..", so "\.." is a name, not a way up.
func climbsOutAnyway(p string) bool {
	depth := 0
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			depth--
		} else if part != "" && part != "." {
			depth++
		}
		if depth < 0 {
			return true
		}
	}
	return false
}

func hasProtectFlag(opts []string) bool {
	for _, o := range opts {
		if o == "--protect-args" {
			return true
		}
		if strings.HasPrefix(o, "-") && !strings.HasPrefix(o, "--") {
			letters, _, _ := strings.Cut(o[1:], "e")
			if !strings.HasPrefix(o, "-B") && !strings.HasPrefix(o, "-@") &&
				!strings.HasPrefix(o, "-T") && strings.Contains(letters, "s") {
				return true
			}
		}
	}
	return false
}

func decodeNulList(t *testing.T, b []byte) []string {
	t.Helper()
	if !bytes.HasSuffix(b, []byte{0, 0}) {
		t.Fatalf("stdin list %q does not end with an empty argument", b)
	}
	parts := strings.Split(string(b[:len(b)-2]), "\x00")
	if len(parts) == 0 || parts[0] != "rsync" {
		t.Fatalf("stdin list %q does not start with rsync", b)
	}
	for _, p := range parts {
		if p == "" {
			t.Fatalf("stdin list %q has an empty argument inside", b)
		}
	}
	return parts[1:]
}

func wordIndex(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}
