package session

// valueKind says what an option's value is, which decides how it is checked.
type valueKind int

const (
	valueNone         valueKind = iota
	valueNumber                 // counts, sizes, seconds, levels: "5", "-1", "1.5G"
	valueFlagWords              // --info/--debug: "progress2,name1"
	valueNames                  // algorithm names: "xxh128", "zstd"
	valueCharset                // --iconv: charsets that keep "." and "/" what they are
	valueText                   // free text that is never a path: --usermap, --skip-compress
	valueSuffix                 // --suffix: text without "/", or a backup could land anywhere
	valueLogFormat              // --log-format: only the few values clients send
	valuePartialDir             // relative to each file's directory
	valueDestDir                // relative to the destination directory
	valueFilesFrom              // "-" (the client's list) or a file inside the root
	valueCapabilities           // the tail of "e" in a short cluster, never a command
)

// role marks the options that change how the command line itself is read.
type role int

const (
	roleNone role = iota
	roleServer
	roleSender
	roleProtect
	roleMunge
)

// deleteRule says when an option lets the transfer remove files in the root.
type deleteRule int

const (
	deletesNever deleteRule = iota
	deletesAlways
	deletesOnPull // the server is the sender and removes what it sent
	deletesOnPush // the server is the receiver and removes what is missing
)

// optionSpec is one entry of the allow-list.
type optionSpec struct {
	name     string // the spelling the gateway passes on: "--delete-during", "-B"
	value    valueKind
	pushOnly bool // meaningful only when the server receives; refused on a pull
	deletes  deleteRule
	role     role
}

// longOptions is the allow-list of long options, keyed by every spelling
// rsync accepts, aliases included. It lists what rsync 3.2.3 to 3.5 and
// openrsync clients send to a server (rsync's server_options() and
// openrsync's fargs_cmdline()), plus harmless long forms of the short flags.
// Everything else, --log-file, --rsh, --rsync-path, --remote-option,
// --write-devices, --copy-devices, --no-munge-links, --only-write-batch and
// --old-args among them, is refused as unknown.
var longOptions = map[string]*optionSpec{}

// shortFlags are the single letters allowed in a cluster without a value.
// "s" asks for the argument list on stdin; "e" is handled apart: on a server
// it introduces the client's capability flags, never a remote shell.
const shortFlags = "ACDEHIJKLNORSUWXbcdgklmnopqrstuvxyz"

// shortValued are the single letters that take a value: the rest of the
// cluster, or the next word when the cluster ends there.
var shortValued = map[byte]*optionSpec{
	'B': {name: "-B", value: valueNumber},
	'@': {name: "-@", value: valueNumber},
	'T': {name: "-T", value: valueDestDir, pushOnly: true},
}

var (
	protectSpec = &optionSpec{name: "-s", role: roleProtect}
	flagSpec    = &optionSpec{name: "-"}
)

func init() {
	add := func(spec optionSpec, names ...string) {
		s := spec
		if s.name == "" {
			s.name = "--" + names[0]
		}
		for _, n := range names {
			longOptions[n] = &s
		}
	}

	add(optionSpec{role: roleServer}, "server")
	add(optionSpec{role: roleSender}, "sender")
	add(optionSpec{role: roleProtect}, "protect-args", "secluded-args")
	add(optionSpec{role: roleMunge}, "munge-links")

	// Plain switches that only shape the transfer, in either direction.
	for _, n := range []string{
		"verbose", "quiet", "checksum", "recursive", "relative", "no-relative",
		"no-implied-dirs", "backup", "update", "inplace", "append", "dirs", "mkpath",
		"links", "copy-links", "copy-unsafe-links", "safe-links", "copy-dirlinks",
		"keep-dirlinks", "hard-links", "perms", "executability", "acls", "xattrs",
		"owner", "group", "devices", "specials", "no-specials", "times", "atimes",
		"open-noatime", "crtimes", "omit-dir-times", "omit-link-times", "fake-super",
		"sparse", "preallocate", "dry-run", "whole-file", "no-whole-file", "no-W",
		"one-file-system", "existing", "ignore-non-existing", "ignore-existing",
		"ignore-missing-args", "ignore-errors", "partial", "prune-empty-dirs",
		"numeric-ids", "ignore-times", "size-only", "fuzzy", "compress",
		"new-compress", "old-compress", "cvs-exclude", "from0", "list-only",
		"stats", "progress", "msgs2stderr", "no-msgs2stderr", "fsync", "use-qsort",
		"no-r", "no-recursive", "no-inc-recursive", "no-i-r",
	} {
		add(optionSpec{}, n)
	}

	// Values that are numbers, names or text, never paths.
	for _, n := range []string{
		"timeout", "bwlimit", "block-size", "compress-level", "modify-window",
		"checksum-seed", "min-size", "max-size", "max-alloc", "compress-threads",
	} {
		add(optionSpec{value: valueNumber}, n)
	}
	add(optionSpec{value: valueFlagWords}, "info")
	add(optionSpec{value: valueFlagWords}, "debug")
	add(optionSpec{value: valueNames}, "checksum-choice", "cc")
	add(optionSpec{value: valueNames}, "compress-choice", "zc")
	add(optionSpec{value: valueCharset}, "iconv")
	add(optionSpec{value: valueNames}, "stderr")
	add(optionSpec{value: valueText}, "skip-compress")
	add(optionSpec{value: valueText}, "usermap")
	add(optionSpec{value: valueText}, "groupmap")
	add(optionSpec{value: valueSuffix}, "suffix")
	add(optionSpec{value: valueLogFormat}, "log-format")

	// Paths, each confined to the root by its own rule.
	add(optionSpec{value: valuePartialDir, pushOnly: true}, "partial-dir")
	add(optionSpec{pushOnly: true}, "delay-updates")
	add(optionSpec{value: valueDestDir, pushOnly: true}, "temp-dir")
	add(optionSpec{value: valueDestDir, pushOnly: true}, "link-dest")
	add(optionSpec{value: valueDestDir, pushOnly: true}, "copy-dest")
	add(optionSpec{value: valueDestDir, pushOnly: true}, "compare-dest")
	// A client sends --backup-dir in both directions; a sender ignores it.
	add(optionSpec{value: valueDestDir}, "backup-dir")
	add(optionSpec{value: valueFilesFrom}, "files-from")

	// Removal. Only a receiving server deletes extraneous files; a client
	// never sends these on a pull, where they would mean nothing.
	for _, n := range []string{
		"delete", "delete-before", "delete-during", "del", "delete-delay",
		"delete-after", "delete-excluded",
	} {
		add(optionSpec{pushOnly: true, deletes: deletesAlways}, n)
	}
	longOptions["del"].name = "--delete-during"
	// --force lets a file replace a whole non-empty directory on the receiver.
	add(optionSpec{pushOnly: true, deletes: deletesAlways}, "force")
	add(optionSpec{value: valueNumber, pushOnly: true}, "max-delete")
	add(optionSpec{deletes: deletesOnPush}, "delete-missing-args")
	add(optionSpec{deletes: deletesOnPull}, "remove-source-files")
	add(optionSpec{deletes: deletesOnPull}, "remove-sent-files")
}
