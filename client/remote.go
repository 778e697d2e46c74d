package client

import (
	"errors"
	"fmt"
	"strings"
)

// Remote is where an rsync command line goes: the SSH user and host of its
// remote operand, and the remote shell rsync runs to reach them.
type Remote struct {
	User  string   // empty when the operand names none
	Host  string   // without the brackets of an IPv6 address
	Shell []string // the remote shell command, split the way rsync splits it
}

// Command is the argv that runs words on the remote host exactly the way
// rsync would start its server there.
func (r Remote) Command(words ...string) []string {
	argv := append([]string{}, r.Shell...)
	if r.User != "" {
		argv = append(argv, "-l", r.User)
	}
	argv = append(argv, r.Host)
	return append(argv, words...)
}

// rsyncLine is what sync needs to know about the user's rsync arguments.
type rsyncLine struct {
	operands []string
	rsh      string // the last -e/--rsh value; "" when none was given
	// keepsPartial is set when the user already chose what happens to a
	// partly sent file (--partial, -P, --partial-dir, --inplace, ...).
	keepsPartial bool
}

// longValued are rsync's long options that take a value, which may be the
// next word (rsync 3.2 to 3.5). Knowing them keeps a value such as
// "--exclude host:x" from being read as an operand.
var longValued = map[string]bool{}

// shortValued are the short options that take a value: the rest of the
// cluster, or the next word when the cluster ends with the letter.
const shortValued = "BefMT@"

// partialOptions decide on their own what happens to a partly sent file.
var partialOptions = map[string]bool{
	"partial": true, "no-partial": true, "P": true, "partial-dir": true,
	"inplace": true, "append": true, "append-verify": true, "delay-updates": true,
}

func init() {
	for _, name := range strings.Fields(`info debug stderr backup-dir suffix confine-root
		chmod checksum-choice cc block-size rsh rsync-path max-delete max-size min-size
		max-alloc partial-dir usermap groupmap chown timeout contimeout modify-window
		temp-dir compare-dest copy-dest link-dest compress-choice zc compress-level zl
		compress-threads skip-compress filter exclude exclude-from include include-from
		files-from copy-as address port sockopts outbuf remote-option out-format
		log-format log-file log-file-format password-file early-input bwlimit stop-after
		time-limit stop-at write-batch only-write-batch read-batch protocol iconv
		checksum-seed`) {
		longValued[name] = true
	}
}

// parseRsyncArgs reads an rsync argument list the way rsync's option parser
// does, as far as sync needs: operands, the remote shell, partial handling.
func parseRsyncArgs(args []string) rsyncLine {
	var l rsyncLine
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			l.operands = append(l.operands, args[i+1:]...)
			return l
		case strings.HasPrefix(a, "--"):
			name, value, hasValue := strings.Cut(a[2:], "=")
			if !hasValue && longValued[name] && i+1 < len(args) {
				i++
				value = args[i]
			}
			l.option(name, value)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			for j := 1; j < len(a); j++ {
				letter := a[j : j+1]
				if !strings.Contains(shortValued, letter) {
					l.option(letter, "")
					continue
				}
				value := a[j+1:]
				if value == "" && i+1 < len(args) {
					i++
					value = args[i]
				}
				l.option(letter, value)
				break
			}
		default:
			l.operands = append(l.operands, a)
		}
	}
	return l
}

func (l *rsyncLine) option(name, value string) {
	if name == "e" || name == "rsh" {
		l.rsh = value
	}
	if partialOptions[name] {
		l.keepsPartial = true
	}
}

// remote finds the one SSH host the operands name. rshEnv is RSYNC_RSH,
// rsync's remote shell when -e is not given.
func (l rsyncLine) remote(rshEnv string) (Remote, error) {
	var r Remote
	for _, op := range l.operands {
		user, host, ok, daemon := splitHostSpec(op)
		if daemon {
			return Remote{}, fmt.Errorf("%q names an rsync daemon; tokengate serves rsync "+
				"over ssh: use [user@]host:path", op)
		}
		if !ok || host == "" {
			continue
		}
		if r.Host != "" && (r.Host != host || r.User != user) {
			return Remote{}, fmt.Errorf("the rsync arguments name two remotes, %s and %s",
				hostLabel(r.User, r.Host), hostLabel(user, host))
		}
		r.User, r.Host = user, host
	}
	if r.Host == "" {
		return Remote{}, errors.New("the rsync arguments name no [user@]host:path operand")
	}

	rsh := l.rsh
	if rsh == "" {
		rsh = rshEnv
	}
	if rsh == "" {
		rsh = "ssh"
	}
	shell, err := splitRsh(rsh)
	if err != nil {
		return Remote{}, err
	}
	if len(shell) == 0 {
		return Remote{}, errors.New("the remote shell command (-e or RSYNC_RSH) is empty")
	}
	r.Shell = shell
	return r, nil
}

func hostLabel(user, host string) string {
	if user == "" {
		return host
	}
	return user + "@" + host
}

// splitHostSpec reads an operand the way rsync does: [user@]host:path is a
// remote over the remote shell, host::module and rsync:// name a daemon, and
// anything with a "/" before its first ":" is a local path.
func splitHostSpec(op string) (user, host string, remote, daemon bool) {
	if strings.HasPrefix(strings.ToLower(op), "rsync://") {
		return "", "", true, true
	}
	hostStart, userEnd := 0, -1
	for i := 0; i < len(op); i++ {
		switch op[i] {
		case '/':
			return "", "", false, false
		case '@':
			userEnd, hostStart = i, i+1
		case '[':
			end := strings.IndexByte(op[i:], ']')
			if end < 0 {
				return "", "", false, false
			}
			i += end
		case ':':
			if userEnd >= 0 {
				user = op[:userEnd]
			}
			host = strings.TrimSuffix(strings.TrimPrefix(op[hostStart:i], "["), "]")
			return user, host, true, strings.HasPrefix(op[i+1:], ":")
		}
	}
	return "", "", false, false
}

// splitRsh splits a remote shell command exactly as rsync does: words are
// separated by spaces only, '...' and "..." quote, and inside quotes a
// doubled quote character stands for itself. There are no backslash escapes.
func splitRsh(cmd string) ([]string, error) {
	var (
		words   []string
		cur     strings.Builder
		inWord  bool
		inQuote byte
	)
	for i := 0; i < len(cmd); i++ {
		c := cmd[i]
		switch {
		case inQuote != 0 && c == inQuote:
			if i+1 < len(cmd) && cmd[i+1] == inQuote {
				cur.WriteByte(c)
				i++
				continue
			}
			inQuote = 0
		case inQuote != 0:
			cur.WriteByte(c)
		case c == '\'' || c == '"':
			inQuote, inWord = c, true
		case c == ' ':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inQuote != 0 {
		return nil, fmt.Errorf("the remote shell command lacks a closing %c", inQuote)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
