package session

import (
	"path"
	"strconv"
	"strings"

	"github.com/tokengate/tokengate/audit"
)

// Limits on what a client may send. An argument is a path or a short value,
// so PATH_MAX bounds it; the counts match the -s argument list's bounds.
const (
	maxArgLen     = 4096
	maxArgs       = 2048
	maxCommandLen = 64 << 10
)

// Direction says which way the files flow, seen from the client.
type Direction int

const (
	// DirectionPull is a download: the server runs as rsync's sender.
	DirectionPull Direction = iota + 1
	// DirectionPush is an upload: the server runs as rsync's receiver.
	DirectionPush
)

func (d Direction) String() string {
	switch d {
	case DirectionPull:
		return "pull"
	case DirectionPush:
		return "push"
	}
	return "unknown"
}

// Invocation is an rsync server command line taken apart: its options in the
// order given and the paths after the "." separator. Nothing in it has been
// approved yet; Authorize decides.
type Invocation struct {
	Direction Direction
	// Protected is set when the client asked for -s (--secluded-args,
	// --protect-args): the rest of its arguments follow on stdin.
	Protected bool

	options []option
	paths   []shellWord
	sawDot  bool
	// listRead is set once ReadProtectedArgs has merged the stdin list.
	listRead bool
}

// option is one option occurrence. A short cluster such as -logDtpre.iLsfx
// is one option holding its letters and capability tail; a letter that takes
// a value becomes an option of its own right after it.
type option struct {
	spec    *optionSpec
	given   string // the client's spelling, for messages: "--del", "-T"
	value   string
	tilde   bool   // the value word began with an unquoted "~"
	letters string // for a cluster: its value-less letters, in order
	inList  bool   // it arrived in the -s list rather than the exec command
}

// ParseCommand splits raw like a POSIX shell would and parses it as an
// rsync server invocation. Every error is an *audit.Denial.
func ParseCommand(raw string) (*Invocation, error) {
	inv, denial := parseCommand(raw)
	if denial != nil {
		return nil, denial
	}
	return inv, nil
}

func parseCommand(raw string) (*Invocation, *audit.Denial) {
	if len(raw) > maxCommandLen {
		return nil, audit.Deny(audit.ReasonArgumentInvalid,
			"the command is longer than %d bytes", maxCommandLen)
	}
	if strings.IndexByte(raw, 0) >= 0 {
		return nil, audit.Deny(audit.ReasonArgumentInvalid, "the command contains a NUL byte")
	}
	words, denial := splitShellWords(raw)
	if denial != nil {
		return nil, withHint(denial, raw)
	}
	if len(words) > maxArgs {
		return nil, audit.Deny(audit.ReasonArgumentInvalid,
			"the command has more than %d arguments", maxArgs)
	}

	if len(words) == 0 || !isRsyncProgram(words[0].text) {
		return nil, withHint(audit.Deny(audit.ReasonCommandForbidden, "%s", forbiddenHint), raw)
	}
	if len(words) < 2 || words[1].text != "--server" {
		if len(words) >= 2 && words[1].text == "--daemon" {
			return nil, daemonDenial()
		}
		return nil, withHint(audit.Deny(audit.ReasonCommandForbidden, "%s", forbiddenHint), raw)
	}

	inv := &Invocation{Direction: DirectionPush}
	if denial := inv.parseWords(words[2:], false); denial != nil {
		return nil, denial
	}
	if inv.Protected {
		// With -s the client stops the command after the short cluster (and
		// --iconv); anything path-like here would be dropped by rsync unseen.
		if inv.sawDot {
			return nil, audit.Deny(audit.ReasonArgumentInvalid,
				"with -s the paths must come in the argument list on stdin")
		}
		return inv, nil
	}
	if !inv.sawDot {
		return nil, audit.Deny(audit.ReasonArgumentInvalid,
			`the command has no "." separator before its paths`)
	}
	return inv, nil
}

// isRsyncProgram accepts "rsync" and an absolute path ending in /rsync, the
// forms clients send with and without --rsync-path. The gateway runs its own
// rsync either way.
func isRsyncProgram(w string) bool {
	return w == "rsync" || (strings.HasPrefix(w, "/") && path.Base(w) == "rsync")
}

// parseWords reads options up to the "." separator and paths after it.
// inList marks words that came in the -s list.
func (inv *Invocation) parseWords(words []shellWord, inList bool) *audit.Denial {
	for i := 0; i < len(words); i++ {
		w := words[i].text
		if len(w) > maxArgLen {
			return audit.Deny(audit.ReasonArgumentInvalid,
				"an argument is longer than %d bytes", maxArgLen)
		}
		if inv.sawDot {
			inv.paths = append(inv.paths, words[i])
			continue
		}

		var (
			used   int
			denial *audit.Denial
		)
		switch {
		case w == ".":
			inv.sawDot = true
		case strings.HasPrefix(w, "--") && len(w) > 2:
			used, denial = inv.parseLong(words[i:], inList)
		case strings.HasPrefix(w, "-") && len(w) > 1 && w != "--":
			used, denial = inv.parseCluster(words[i:], inList)
		default:
			return audit.Deny(audit.ReasonArgumentInvalid,
				`expected an option or the "." separator, found %s`, quoteArg(w))
		}
		if denial != nil {
			return denial
		}
		i += used
	}
	return nil
}

// parseLong reads one long option from words[0], taking its value from
// words[1] when it is not given as --name=value. It returns how many extra
// words it used.
func (inv *Invocation) parseLong(words []shellWord, inList bool) (int, *audit.Denial) {
	name, value, hasValue := strings.Cut(words[0].text[2:], "=")
	given := "--" + name
	spec := longOptions[name]
	if spec == nil {
		if name == "daemon" {
			return 0, daemonDenial()
		}
		return 0, optionDenial(given)
	}
	if denial := inv.noteRole(spec, given, inList); denial != nil {
		return 0, denial
	}

	opt := option{spec: spec, given: given, value: value, inList: inList}
	used := 0
	switch {
	case spec.value == valueNone && hasValue:
		return 0, audit.Deny(audit.ReasonArgumentInvalid,
			"option %s takes no value", quoteArg(given))
	case spec.value != valueNone && !hasValue:
		if len(words) < 2 {
			return 0, audit.Deny(audit.ReasonArgumentInvalid,
				"option %s needs a value", quoteArg(given))
		}
		opt.value, opt.tilde = words[1].text, words[1].tilde
		used = 1
	}
	// --server, --sender and --munge-links are written by the gateway itself.
	if spec.role == roleNone || spec.role == roleProtect {
		inv.options = append(inv.options, opt)
	}
	return used, nil
}

// parseCluster reads one short cluster such as -vlogDtpre.iLsfxCIvu or -B1024.
func (inv *Invocation) parseCluster(words []shellWord, inList bool) (int, *audit.Denial) {
	w := words[0].text
	cluster := option{spec: flagSpec, given: w, inList: inList}
	var valued *option
	used := 0

	for j := 1; j < len(w) && valued == nil; j++ {
		c := w[j]
		switch {
		case c == 'e':
			caps := w[j+1:]
			if !validCapabilities(caps) {
				return 0, audit.Deny(audit.ReasonArgumentInvalid,
					"option -e is only accepted as rsync's capability flags, not %s",
					quoteArg("-e"+caps))
			}
			cluster.value = "e" + caps
			j = len(w)

		case c == 's':
			if denial := inv.noteRole(protectSpec, "-s", inList); denial != nil {
				return 0, denial
			}
			cluster.letters += "s"

		case strings.IndexByte(shortFlags, c) >= 0:
			cluster.letters += string(c)

		case shortValued[c] != nil:
			spec := shortValued[c]
			valued = &option{spec: spec, given: spec.name, value: w[j+1:], inList: inList}
			if valued.value == "" {
				if len(words) < 2 {
					return 0, audit.Deny(audit.ReasonArgumentInvalid,
						"option %s needs a value", spec.name)
				}
				valued.value, valued.tilde = words[1].text, words[1].tilde
				used = 1
			}

		default:
			return 0, optionDenial("-" + string(c))
		}
	}

	if cluster.letters != "" || cluster.value != "" {
		inv.options = append(inv.options, cluster)
	}
	if valued != nil {
		inv.options = append(inv.options, *valued)
	}
	return used, nil
}

// noteRole applies the options that change how the command line is read.
func (inv *Invocation) noteRole(spec *optionSpec, given string, inList bool) *audit.Denial {
	switch spec.role {
	case roleServer:
		return audit.Deny(audit.ReasonOptionForbidden, "option --server is given twice")
	case roleSender:
		if inList {
			// The direction is settled from the exec command, before stdin
			// is read; a list that flipped it would dodge the scope check.
			return audit.Deny(audit.ReasonArgumentInvalid,
				"option --sender must come before the -s argument list")
		}
		if inv.Direction == DirectionPull {
			return audit.Deny(audit.ReasonOptionForbidden, "option --sender is given twice")
		}
		inv.Direction = DirectionPull
	case roleProtect:
		if inList {
			return audit.Deny(audit.ReasonOptionForbidden,
				"option %s is not allowed inside the -s argument list", quoteArg(given))
		}
		inv.Protected = true
	}
	return nil
}

// validCapabilities checks the tail of "e" in a server cluster: an optional
// protocol.subprotocol pair, a ".", then capability letters ("e.iLsfxCIvu",
// "e31.14iLsfx"). A real rsync client sends nothing else there.
func validCapabilities(caps string) bool {
	i := 0
	for i < len(caps) && caps[i] >= '0' && caps[i] <= '9' {
		i++
	}
	if i == len(caps) || caps[i] != '.' {
		return false
	}
	i++
	for i < len(caps) && caps[i] >= '0' && caps[i] <= '9' {
		i++
	}
	for ; i < len(caps); i++ {
		c := caps[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

func optionDenial(given string) *audit.Denial {
	return audit.Deny(audit.ReasonOptionForbidden, "option %s is not allowed", quoteArg(given))
}

func daemonDenial() *audit.Denial {
	return audit.Deny(audit.ReasonCommandForbidden,
		"rsync --daemon is not accepted: %s", forbiddenHint)
}

// quoteArg renders a client-supplied word for a one-line message: as is when
// it is short and plain, Go-quoted otherwise, so that no byte the client
// chose can break the line or pass for something the gateway said.
func quoteArg(s string) string {
	const limit = 80
	cut := false
	if len(s) > limit {
		s, cut = s[:limit], true
	}
	plain := s != ""
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = c > ' ' && c < 0x7f && c != '"' && c != '\'' && c != '\\'
	}
	if !plain {
		s = strconv.Quote(s)
	}
	if cut {
		s += "..."
	}
	return s
}
