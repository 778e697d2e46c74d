package session

import (
	"errors"
	"fmt"
	"io"

	"github.com/tokengate/tokengate/audit"
)

// Bounds on the -s argument list. A real list is a few options and paths.
const (
	maxProtectedBytes = 64 << 10
	maxProtectedArgs  = 2048
)

// ReadProtectedArgs reads the argument list that an -s client writes to stdin
// before the rsync protocol starts: "rsync\0", then each argument and "\0",
// then an empty argument "\0". It merges the list into the invocation. It
// reads exactly the list and not one byte more, because what follows is the
// protocol stream that the caller pumps to the real rsync. A malformed or
// oversized list is an *audit.Denial; a failing reader is returned as is.
func (inv *Invocation) ReadProtectedArgs(r io.Reader) error {
	if !inv.Protected {
		return errors.New("session: ReadProtectedArgs on a command without -s")
	}
	if inv.listRead {
		return errors.New("session: the -s argument list was already read")
	}

	args, err := readNulList(r)
	if err != nil {
		return err
	}
	if len(args) == 0 || args[0] != "rsync" {
		return audit.Deny(audit.ReasonArgumentInvalid,
			`the -s argument list does not start with "rsync"`)
	}

	words := make([]shellWord, 0, len(args)-1)
	for _, a := range args[1:] {
		words = append(words, shellWord{text: a})
	}
	if denial := inv.parseWords(words, true); denial != nil {
		return denial
	}
	if !inv.sawDot {
		return audit.Deny(audit.ReasonArgumentInvalid,
			`the -s argument list has no "." separator before its paths`)
	}
	inv.listRead = true
	return nil
}

// readNulList reads NUL-terminated strings up to and including the empty one
// that ends the list, one byte at a time so that nothing past it is consumed.
func readNulList(r io.Reader) ([]string, error) {
	var (
		args  []string
		cur   []byte
		one   [1]byte
		stall int
	)
	for total := 0; total < maxProtectedBytes; {
		n, err := r.Read(one[:])
		if n == 0 {
			if err == io.EOF {
				return nil, audit.Deny(audit.ReasonArgumentInvalid,
					"the -s argument list ended before its terminator")
			}
			if err != nil {
				return nil, fmt.Errorf("session: reading the -s argument list: %w", err)
			}
			// A reader that keeps returning nothing must not spin us forever.
			if stall++; stall > 100 {
				return nil, fmt.Errorf("session: reading the -s argument list: %w",
					io.ErrNoProgress)
			}
			continue
		}
		stall = 0
		total++

		if one[0] != 0 {
			cur = append(cur, one[0])
			continue
		}
		if len(cur) == 0 {
			return args, nil
		}
		if len(args) == maxProtectedArgs {
			return nil, audit.Deny(audit.ReasonArgumentInvalid,
				"the -s argument list has more than %d arguments", maxProtectedArgs)
		}
		args = append(args, string(cur))
		cur = cur[:0]
	}
	return nil, audit.Deny(audit.ReasonArgumentInvalid,
		"the -s argument list is longer than %d bytes", maxProtectedBytes)
}
