package session

import (
	"fmt"
	"strconv"
	"strings"
)

// rsyncVersion is major.minor.patch; pre is true for a pre-release or development build
// ("3.4.0pre1", "3.4.0dev"), which sorts before the release of the same number because
// it may lack the fixes that the release carries.
type rsyncVersion struct {
	major, minor, patch int
	pre                 bool
}

func (v rsyncVersion) String() string {
	s := fmt.Sprintf("%d.%d.%d", v.major, v.minor, v.patch)
	if v.pre {
		s += "-pre"
	}
	return s
}

func (v rsyncVersion) less(w rsyncVersion) bool {
	if v.major != w.major {
		return v.major < w.major
	}
	if v.minor != w.minor {
		return v.minor < w.minor
	}
	if v.patch != w.patch {
		return v.patch < w.patch
	}
	return v.pre && !w.pre
}

// parseRsyncVersion reads the first line of `rsync --version`, for example
// "rsync  version 3.4.1  protocol version 32" or, before 3.2.4, "rsync  version v3.2.3 ...".
func parseRsyncVersion(line string) (rsyncVersion, error) {
	fields := strings.Fields(line)
	if len(fields) < 3 || fields[0] != "rsync" || fields[1] != "version" {
		return rsyncVersion{}, fmt.Errorf("tokengate: jail: rsync version: "+
			"unrecognised output %q", line)
	}
	text := strings.TrimPrefix(fields[2], "v")

	// The number ends at the first character that is neither a digit nor a dot.
	end := strings.IndexFunc(text, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	number, suffix := text, ""
	if end >= 0 {
		number, suffix = text[:end], text[end:]
	}
	parts := strings.Split(number, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return rsyncVersion{}, fmt.Errorf("tokengate: jail: rsync version: bad number %q", text)
	}
	nums := [3]int{}
	for i, part := range parts {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return rsyncVersion{}, fmt.Errorf("tokengate: jail: rsync version: "+
				"bad number %q", text)
		}
		nums[i] = n
	}
	return rsyncVersion{major: nums[0], minor: nums[1], patch: nums[2], pre: suffix != ""}, nil
}
