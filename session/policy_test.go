package session

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/audit"
	"github.com/tokengate/tokengate/auth"
)

const (
	scopeRW  = auth.ScopeRead | auth.ScopeWrite
	scopeAll = auth.ScopeRead | auth.ScopeWrite | auth.ScopeDelete
)

// acceptCase is an exec command a client sends and the jail argv it must become.
type acceptCase struct {
	client  string // how the line was produced, for the record
	raw     string
	scopes  auth.Scope
	want    []string
	stdin   string // expected Plan.Stdin, NULs written as \x00
	deletes bool
}

// Lines captured from rsync 3.5.0 with `rsync <client> -e fakessh`, where the
// fake ssh printed its arguments; 3.2.3 and openrsync lines are written from
// their server_options()/fargs_cmdline(), which do not escape.
var acceptCases = []acceptCase{
	{client: "rsync gw:src/ dst",
		raw:  `rsync --server --sender -e.LsfxCIvu . src/`,
		want: []string{"--sender", "-e.LsfxCIvu", "--munge-links", "--", ".", "src/"}},
	{client: "rsync -a src/ gw:dst",
		raw:  `rsync --server -logDtpre.iLsfxCIvu . dst`,
		want: []string{"-logDtpre.iLsfxCIvu", "--munge-links", "--", ".", "dst"}},
	{client: "rsync -az src/ gw:dst",
		raw:  `rsync --server -logDtprze.iLsfxCIvu . dst`,
		want: []string{"-logDtprze.iLsfxCIvu", "--munge-links", "--", ".", "dst"}},
	{client: "rsync -aP src/ gw:dst",
		raw: `rsync --server -logDtpre.iLsfxCIvu --log-format=X --partial . dst`,
		want: []string{"-logDtpre.iLsfxCIvu", "--log-format=X", "--partial", "--munge-links",
			"--", ".", "dst"}},
	{client: "rsync -a --partial-dir .p src/ gw:dst",
		raw: `rsync --server -logDtpre.iLsfxCIvu --partial-dir .p . dst`,
		want: []string{"-logDtpre.iLsfxCIvu", "--partial-dir=.p", "--munge-links",
			"--", ".", "dst"}},
	{client: "rsync -a --inplace src/ gw:dst",
		raw: `rsync --server -logDtpre.iLsfxCIvu --inplace . dst`,
		want: []string{"-logDtpre.iLsfxCIvu", "--inplace", "--munge-links",
			"--", ".", "dst"}},
	{client: "rsync -a --mkpath src/ gw:a/b/c/",
		raw: `rsync --server -logDtpre.iLsfxCIvu --mkpath . a/b/c/`,
		want: []string{"-logDtpre.iLsfxCIvu", "--mkpath", "--munge-links",
			"--", ".", "a/b/c/"}},
	{client: "rsync gw: (the root)",
		raw:  `rsync --server --sender -de.LsfxCIvu . .`,
		want: []string{"--sender", "-de.LsfxCIvu", "--munge-links", "--", ".", "."}},
	{client: "rsync gw:/ (the root)",
		raw:  `rsync --server --sender -de.LsfxCIvu . /`,
		want: []string{"--sender", "-de.LsfxCIvu", "--munge-links", "--", ".", "./"}},
	{client: "rsync --list-only gw:",
		raw: `rsync --server --sender -de.LsfxCIvu --list-only . .`,
		want: []string{"--sender", "-de.LsfxCIvu", "--list-only", "--munge-links",
			"--", ".", "."}},
	{client: "rsync -an src/ gw:dst",
		raw:  `rsync --server -nlogDtpre.iLsfxCIvu . dst`,
		want: []string{"-nlogDtpre.iLsfxCIvu", "--munge-links", "--", ".", "dst"}},
	{client: "rsync -ac src/ gw:dst",
		raw:  `rsync --server -logDtprce.iLsfxCIvu . dst`,
		want: []string{"-logDtprce.iLsfxCIvu", "--munge-links", "--", ".", "dst"}},
	{client: "rsync -aHAX src/ gw:dst",
		raw:  `rsync --server -lHogDtpAXre.iLsfxCIvu . dst`,
		want: []string{"-lHogDtpAXre.iLsfxCIvu", "--munge-links", "--", ".", "dst"}},
	{client: "rsync -a --delete src/ gw:dst",
		raw: `rsync --server -logDtpre.iLsfxCIvu --delete . dst`, scopes: scopeAll,
		want:    []string{"-logDtpre.iLsfxCIvu", "--delete", "--munge-links", "--", ".", "dst"},
		deletes: true},
	{client: "rsync -a --delete gw:src/ dst (a pull sends no --delete)",
		raw:  `rsync --server --sender -logDtpre.iLsfxCIvu . src/`,
		want: []string{"--sender", "-logDtpre.iLsfxCIvu", "--munge-links", "--", ".", "src/"}},
	{client: "rsync -a --files-from=list gw:src/ dst (a local list)",
		raw: `rsync --server --sender -logDtpRe.LsfxCIvu --files-from=- --from0 . src/`,
		want: []string{"--sender", "-logDtpRe.LsfxCIvu", "--files-from=-", "--from0",
			"--munge-links", "--", ".", "src/"}},
	{client: "rsync -a --files-from=:list gw:src/ dst (a list in the root)",
		raw: `rsync --server --sender -logDtpRe.LsfxCIvu --files-from list . src/`,
		want: []string{"--sender", "-logDtpRe.LsfxCIvu", "--files-from=list",
			"--munge-links", "--", ".", "src/"}},
	{client: "rsync --dirs gw:src/ dst",
		raw:  `rsync --server --sender -de.LsfxCIvu . src/`,
		want: []string{"--sender", "-de.LsfxCIvu", "--munge-links", "--", ".", "src/"}},
	{client: "rsync -d --delete src/ gw:dst",
		raw: `rsync --server -de.LsfxCIvu --no-r --delete . dst`, scopes: scopeAll,
		want: []string{"-de.LsfxCIvu", "--no-r", "--delete", "--munge-links",
			"--", ".", "dst"},
		deletes: true},
	{client: `rsync 'src/a b' 'gw:dst dir/$x;*' (3.2.4+ escapes)`,
		raw:  `rsync --server -e.LsfxCIvu . dst\ dir/\$x\;*`,
		want: []string{"-e.LsfxCIvu", "--munge-links", "--", ".", "dst dir/$x;*"}},
	{client: `rsync -a gw:'src/a b' gw:"c'd" dst`,
		raw: `rsync --server --sender -logDtpre.iLsfxCIvu . src/a\ b c\'d`,
		want: []string{"--sender", "-logDtpre.iLsfxCIvu", "--munge-links",
			"--", ".", "src/a b", "c'd"}},
	{client: `rsync -a src/ 'gw:x!y#z&w|v<u>t(s)r{q}p\o<TAB>n'`,
		raw: "rsync --server -logDtpre.iLsfxCIvu . " +
			`x\!y\#z\&w\|v\<u\>t\(s\)r\{q\}p\\o\` + "\tn",
		want: []string{"-logDtpre.iLsfxCIvu", "--munge-links", "--", ".",
			`x!y#z&w|v<u>t(s)r{q}p\o` + "\tn"}},
	{client: "rsync -a --link-dest ../prev src/ gw:dst",
		raw: `rsync --server -logDtpre.iLsfxCIvu --link-dest ../prev . dst`,
		want: []string{"-logDtpre.iLsfxCIvu", "--link-dest=/data/prev", "--munge-links",
			"--", ".", "dst"}},
	{client: "rsync -a --link-dest=/abs/prev --link-dest=rel src/ gw:dst",
		raw: `rsync --server -logDtpre.iLsfxCIvu --link-dest /abs/prev --link-dest rel . dst`,
		want: []string{"-logDtpre.iLsfxCIvu", "--link-dest=/data/abs/prev",
			"--link-dest=/data/dst/rel", "--munge-links", "--", ".", "dst"}},
	{client: "rsync -a -T /tmp --backup-dir X -b --min-size 1k --max-size 2M src/ gw:dst",
		raw: `rsync --server -blogDtpre.iLsfxCIvu --backup-dir X --min-size=1024 ` +
			`--max-size=2097152 --temp-dir /tmp . dst`,
		want: []string{"-blogDtpre.iLsfxCIvu", "--backup-dir=/data/dst/X", "--min-size=1024",
			"--max-size=2097152", "--temp-dir=/data/tmp", "--munge-links", "--", ".", "dst"}},
	{client: "rsync -az --compress-level=3 -B1234 --modify-window=2 src/ gw:dst",
		raw: `rsync --server -logDtprze.iLsfxCIvu --compress-level=3 -B1234 ` +
			`--modify-window=2 . dst`,
		want: []string{"-logDtprze.iLsfxCIvu", "--compress-level=3", "-B1234",
			"--modify-window=2", "--munge-links", "--", ".", "dst"}},
	{client: "rsync -a -@ -1 src/ gw:dst",
		raw:  `rsync --server -logDtpre.iLsfxCIvu -@-1 . dst`,
		want: []string{"-logDtpre.iLsfxCIvu", "-@-1", "--munge-links", "--", ".", "dst"}},
	{client: "rsync -a --chown=a:b src/ gw:dst",
		raw: `rsync --server -logDtpre.iLsfxCIvu --usermap=\*:a --groupmap=\*:b . dst`,
		want: []string{"-logDtpre.iLsfxCIvu", "--usermap=*:a", "--groupmap=*:b",
			"--munge-links", "--", ".", "dst"}},
	{client: "rsync -a --zc=zstd --cc=xxh128 --iconv=utf8,latin1 src/ gw:dst",
		raw: `rsync --server -logDtpre.iLsfxCIvu --checksum-choice=xxh128 ` +
			`--compress-choice=zstd --iconv=latin1 . dst`,
		want: []string{"-logDtpre.iLsfxCIvu", "--checksum-choice=xxh128",
			"--compress-choice=zstd", "--iconv=latin1", "--munge-links", "--", ".", "dst"}},
	{client: "rsync -a --timeout=5 --bwlimit=10 --skip-compress=gz -z gw:src/ dst",
		raw: `rsync --server --sender -logDtprze.iLsfxCIvu --skip-compress=gz ` +
			`--timeout=5 --bwlimit=10 . src/`,
		want: []string{"--sender", "-logDtprze.iLsfxCIvu", "--skip-compress=gz",
			"--timeout=5", "--bwlimit=10", "--munge-links", "--", ".", "src/"}},
	{client: "rsync -a --remove-source-files gw:src/ dst",
		raw: `rsync --server --sender -logDtpre.iLsfxCIvu --remove-source-files . src/`,
		want: []string{"--sender", "-logDtpre.iLsfxCIvu", "--remove-source-files",
			"--munge-links", "--", ".", "src/"},
		scopes: scopeAll, deletes: true},
	{client: "rsync -a --remove-source-files src/ gw:dst (removes on the client)",
		raw: `rsync --server -logDtpre.iLsfxCIvu --remove-source-files . dst`,
		want: []string{"-logDtpre.iLsfxCIvu", "--remove-source-files",
			"--munge-links", "--", ".", "dst"}},
	{client: "rsync -a --delete-delay --delete-excluded --force --max-delete=3 src/ gw:dst",
		raw: `rsync --server -logDtpre.iLsfxCIvu --max-delete=3 --delete-delay ` +
			`--delete-excluded --force . dst`,
		scopes: scopeAll, deletes: true,
		want: []string{"-logDtpre.iLsfxCIvu", "--max-delete=3", "--delete-delay",
			"--delete-excluded", "--force", "--munge-links", "--", ".", "dst"}},
	{client: "rsync -avv --info=progress2 -R gw:src/./a.txt dst",
		raw: `rsync --server --sender -vvlogDtprRe.iLsfxCIvu --info=progress2 . src/./a.txt`,
		want: []string{"--sender", "-vvlogDtprRe.iLsfxCIvu", "--info=progress2",
			"--munge-links", "--", ".", "src/./a.txt"}},
	{client: "rsync -a --suffix='*~' -b src/ gw:dst",
		raw: `rsync --server -blogDtpre.iLsfxCIvu --suffix=\*~ . dst`,
		want: []string{"-blogDtpre.iLsfxCIvu", "--suffix=*~", "--munge-links",
			"--", ".", "dst"}},
	{client: "rsync --mkpath src/ gw:'~/x/' (the ~ is the root)",
		raw:  `rsync --server -e.LsfxCIvu --mkpath . ~/x/`,
		want: []string{"-e.LsfxCIvu", "--mkpath", "--munge-links", "--", ".", "x/"}},
	{client: "rsync src/ gw:~",
		raw:  `rsync --server -e.LsfxCIvu . ~`,
		want: []string{"-e.LsfxCIvu", "--munge-links", "--", ".", "."}},
	{client: "rsync -a --protocol=29 gw:src dst (no capability tail)",
		raw:  `rsync --server --sender -logDtpr . src`,
		want: []string{"--sender", "-logDtpr", "--munge-links", "--", ".", "src"}},
	{client: "rsync -a -M--fake-super src/ gw:dst",
		raw: `rsync --server -logDtpre.iLsfxCIvu --fake-super . dst`,
		want: []string{"-logDtpre.iLsfxCIvu", "--fake-super", "--munge-links",
			"--", ".", "dst"}},
	{client: "rsync gw:/abs/src /dst with a path to rsync (--rsync-path=/usr/bin/rsync)",
		raw:  `/usr/bin/rsync --server --sender -e.LsfxCIvu . /abs/src`,
		want: []string{"--sender", "-e.LsfxCIvu", "--munge-links", "--", ".", "abs/src"}},
	{client: "rsync gw:'src/*' dst: only rsync can expand the wildcard, from stdin",
		raw:   `rsync --server --sender -e.LsfxCIvu . src/*`,
		want:  []string{"--sender", "-e.LsfxCIvu", "-s", "--munge-links"},
		stdin: "rsync\x00--munge-links\x00--\x00.\x00src/*\x00\x00"},
	{client: `rsync gw:"'a*b'/[x]*" dst: a quoted wildcard stays literal`,
		raw:   `rsync --server --sender -e.LsfxCIvu . 'a*b'/[x]* 'c\d'`,
		want:  []string{"--sender", "-e.LsfxCIvu", "-s", "--munge-links"},
		stdin: "rsync\x00--munge-links\x00--\x00.\x00a\\*b/[x]*\x00c\\d\x00\x00"},
	{client: `rsync gw:'src/* "lit*"' dst: once one path is matched, all are`,
		raw:   `rsync --server --sender -e.LsfxCIvu . src/* 'lit*'`,
		want:  []string{"--sender", "-e.LsfxCIvu", "-s", "--munge-links"},
		stdin: "rsync\x00--munge-links\x00--\x00.\x00src/*\x00lit\\*\x00\x00"},
	{client: "rsync --iconv=utf8,ISO-8859-15 gw:'*' dst: no wildcard without -s",
		raw: `rsync --server --sender -e.LsfxCIvu --iconv=ISO-8859-15 . *`,
		want: []string{"--sender", "-e.LsfxCIvu", "--iconv=ISO-8859-15", "--munge-links",
			"--", ".", "*"}},

	// 3.2.3 and older send paths unescaped, leaving quoting to the user.
	{client: "rsync 3.2.3: rsync -av src/ gw:'dst dir/'",
		raw:  `rsync --server -vlogDtpre.iLsfxC . 'dst dir/'`,
		want: []string{"-vlogDtpre.iLsfxC", "--munge-links", "--", ".", "dst dir/"}},
	{client: `rsync 3.2.3: rsync -a gw:'"src/a b" c' dst`,
		raw: `rsync --server --sender -logDtpre.iLsfxC . "src/a b" c`,
		want: []string{"--sender", "-logDtpre.iLsfxC", "--munge-links", "--", ".",
			"src/a b", "c"}},
	{client: "rsync 3.2.3: rsync -a --partial-dir=.rsync-partial src/ gw:~/backup/",
		raw: `rsync --server -logDtpre.iLsfxC --partial-dir .rsync-partial . ~/backup/`,
		want: []string{"-logDtpre.iLsfxC", "--partial-dir=.rsync-partial", "--munge-links",
			"--", ".", "backup/"}},

	// openrsync sends one option a word.
	{client: "openrsync -rlt gw:src dst",
		raw:  `rsync --server --sender -l -r -t . src`,
		want: []string{"--sender", "-l", "-r", "-t", "--munge-links", "--", ".", "src"}},
	{client: "openrsync -a --delete --numeric-ids src/ gw:dst",
		raw:    `rsync --server --delete --numeric-ids -g -l -o -p -D -r -t -v . dst`,
		scopes: scopeAll, deletes: true,
		want: []string{"--delete", "--numeric-ids", "-g", "-l", "-o", "-p", "-D", "-r", "-t",
			"-v", "--munge-links", "--", ".", "dst"}},
	{client: "openrsync --max-size=100 --ignore-non-existing --backup gw:src dst",
		raw: `rsync --server --sender --backup --ignore-non-existing --max-size=100 . src`,
		want: []string{"--sender", "--backup", "--ignore-non-existing", "--max-size=100",
			"--munge-links", "--", ".", "src"}},
}

func TestAuthorizeRealClientLines(t *testing.T) {
	for _, tc := range acceptCases {
		t.Run(tc.client, func(t *testing.T) {
			scopes := tc.scopes
			if scopes == 0 {
				scopes = scopeRW
			}
			inv, err := ParseCommand(tc.raw)
			if err != nil {
				t.Fatalf("ParseCommand(%q): %v", tc.raw, err)
			}
			plan, err := Authorize(inv, scopes)
			if err != nil {
				t.Fatalf("Authorize(%q): %v", tc.raw, err)
			}
			want := append([]string{"rsync", "--server"}, tc.want...)
			if !slices.Equal(plan.Argv, want) {
				t.Errorf("Argv\n got %q\nwant %q", plan.Argv, want)
			}
			if string(plan.Stdin) != tc.stdin || (tc.stdin == "") != (plan.Stdin == nil) {
				t.Errorf("Stdin = %q, want %q", plan.Stdin, tc.stdin)
			}
			if plan.Deletes != tc.deletes {
				t.Errorf("Deletes = %v, want %v", plan.Deletes, tc.deletes)
			}
			wantDir := DirectionPush
			if slices.Contains(tc.want, "--sender") {
				wantDir = DirectionPull
			}
			if plan.Direction != wantDir || inv.Direction != wantDir {
				t.Errorf("Direction = %v/%v, want %v", inv.Direction, plan.Direction, wantDir)
			}
		})
	}
}

// protectedCases pair the exec command of an -s client with the argument
// list it wrote to stdin (testdata/protected), both captured from rsync 3.5.0.
var protectedCases = []struct {
	client, raw, file string
	scopes            auth.Scope
	want              []string
	stdin             string
	deletes           bool
}{
	{client: "rsync -as src/ gw:/abs/dst",
		raw: "rsync --server -slogDtpre.iLsfxCIvu", file: "push-abs.bin",
		want:  []string{"-slogDtpre.iLsfxCIvu", "--munge-links"},
		stdin: "rsync\x00--munge-links\x00--\x00.\x00abs/dst\x00\x00"},
	{client: "rsync -as gw:/abs/src gw:/x/y dst",
		raw: "rsync --server --sender -slogDtpre.iLsfxCIvu", file: "pull-two.bin",
		want:  []string{"--sender", "-slogDtpre.iLsfxCIvu", "--munge-links"},
		stdin: "rsync\x00--munge-links\x00--\x00.\x00abs/src\x00x/y\x00\x00"},
	{client: "rsync -as --mkpath --delete -z --partial-dir .p src/ gw:'/abs/d st/'",
		raw: "rsync --server -slogDtprze.iLsfxCIvu", file: "push-mkpath-delete.bin",
		scopes: scopeAll, deletes: true,
		want: []string{"-slogDtprze.iLsfxCIvu", "--munge-links"},
		stdin: "rsync\x00--delete\x00--partial-dir=.p\x00--mkpath\x00--munge-links\x00" +
			"--\x00.\x00abs/d st/\x00\x00"},
	{client: "rsync --list-only -s gw:/",
		raw: "rsync --server --sender -sde.LsfxCIvu", file: "list-root.bin",
		want:  []string{"--sender", "-sde.LsfxCIvu", "--munge-links"},
		stdin: "rsync\x00--list-only\x00--munge-links\x00--\x00.\x00./\x00\x00"},
	{client: "rsync -as --iconv=utf8,latin1 src/ gw:dst",
		raw: "rsync --server -slogDtpre.iLsfxCIvu --iconv=latin1", file: "push-iconv.bin",
		want:  []string{"-slogDtpre.iLsfxCIvu", "--iconv=latin1", "--munge-links"},
		stdin: "rsync\x00--munge-links\x00--\x00.\x00dst\x00\x00"},
	{client: "rsync -s gw: dst",
		raw: "rsync --server --sender -se.LsfxCIvu", file: "pull-home.bin",
		want:  []string{"--sender", "-se.LsfxCIvu", "--munge-links"},
		stdin: "rsync\x00--munge-links\x00--\x00.\x00.\x00\x00"},
}

func TestAuthorizeProtectedArgs(t *testing.T) {
	for _, tc := range protectedCases {
		t.Run(tc.client, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "protected", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			inv, err := ParseCommand(tc.raw)
			if err != nil {
				t.Fatalf("ParseCommand: %v", err)
			}
			if !inv.Protected {
				t.Fatal("Protected is not set")
			}
			if _, err := Authorize(inv, scopeAll); err == nil || isDenial(err) {
				t.Fatalf("Authorize before the list was read = %v, want a plain error", err)
			}

			r := bytes.NewReader(data)
			if err := inv.ReadProtectedArgs(r); err != nil {
				t.Fatalf("ReadProtectedArgs: %v", err)
			}
			// The protocol starts right after the list: none of it may be eaten.
			listLen := bytes.Index(data, []byte{0, 0}) + 2
			if r.Len() != len(data)-listLen {
				t.Fatalf("read %d bytes, want exactly the %d of the list",
					len(data)-r.Len(), listLen)
			}

			scopes := tc.scopes
			if scopes == 0 {
				scopes = scopeRW
			}
			plan, err := Authorize(inv, scopes)
			if err != nil {
				t.Fatalf("Authorize: %v", err)
			}
			want := append([]string{"rsync", "--server"}, tc.want...)
			if !slices.Equal(plan.Argv, want) {
				t.Errorf("Argv\n got %q\nwant %q", plan.Argv, want)
			}
			if string(plan.Stdin) != tc.stdin {
				t.Errorf("Stdin\n got %q\nwant %q", plan.Stdin, tc.stdin)
			}
			if plan.Deletes != tc.deletes {
				t.Errorf("Deletes = %v, want %v", plan.Deletes, tc.deletes)
			}
		})
	}
}

// refuseCase is a command line that must be refused, and why.
type refuseCase struct {
	name    string
	raw     string
	list    string // the -s argument list, when the head asks for one
	scopes  auth.Scope
	reason  audit.Reason
	message string // a part the client message must contain
}

var refuseCases = []refuseCase{
	{name: "log file", raw: `rsync --server -logDtpre.iLsfxCIvu --log-file=/x . dst`,
		reason: audit.ReasonOptionForbidden, message: "option --log-file is not allowed"},
	{name: "log file as two words",
		raw:    `rsync --server --sender -logDtpre.iLsfxCIvu --log-file /tmp/x . src`,
		reason: audit.ReasonOptionForbidden, message: "--log-file"},
	{name: "remote option", raw: `rsync --server -logDtpre.iLsfxCIvu -M--log-file=/tmp/x . dst`,
		reason: audit.ReasonOptionForbidden, message: "option -M is not allowed"},
	{name: "second path climbs out",
		raw:    `rsync --server --sender -logDtpre.iLsfxCIvu . src ../x`,
		reason: audit.ReasonPathOutsideRoot, message: "path ../x leaves the token's root"},
	{name: "absolute path climbs out", raw: `rsync --server --sender -e.LsfxCIvu . /../x`,
		reason: audit.ReasonPathOutsideRoot, message: "/../x"},
	{name: "climbs out midway", raw: `rsync --server -e.LsfxCIvu . a/../../b`,
		reason: audit.ReasonPathOutsideRoot, message: "a/../../b"},
	{name: "tilde climbs out", raw: `rsync --server -e.LsfxCIvu . ~/../x`,
		reason: audit.ReasonPathOutsideRoot},
	{name: "sudo", raw: `sudo rsync --server -logDtpre.iLsfxCIvu . dst`,
		reason: audit.ReasonCommandForbidden, message: "use --mkpath"},
	{name: "mkdir and rsync", raw: `mkdir -p d && rsync --server -logDtpre.iLsfxCIvu . d`,
		reason: audit.ReasonCommandForbidden, message: "use --mkpath"},
	{name: "daemon", raw: `rsync --daemon --config=/etc/passwd`,
		reason: audit.ReasonCommandForbidden, message: "--daemon"},
	{name: "daemon later", raw: `rsync --server --daemon . dst`,
		reason: audit.ReasonCommandForbidden, message: "--daemon"},
	{name: "second command", raw: `rsync --server; cat /etc/passwd`,
		reason: audit.ReasonCommandForbidden, message: `(";")`},
	{name: "command substitution", raw: `rsync --server --sender -e.LsfxCIvu . $(id)`,
		reason: audit.ReasonCommandForbidden, message: `("$")`},
	{name: "substitution in double quotes",
		raw:    `rsync --server --sender -e.LsfxCIvu . "$(id)"`,
		reason: audit.ReasonCommandForbidden},
	{name: "backticks", raw: "rsync --server --sender -e.LsfxCIvu . `id`",
		reason: audit.ReasonCommandForbidden, message: "(\"`\")"},
	{name: "newline", raw: "rsync --server -e.LsfxCIvu . dst\ncat /etc/passwd",
		reason: audit.ReasonCommandForbidden, message: "a line break"},
	{name: "pipe", raw: `rsync --server -e.LsfxCIvu . dst|sh`,
		reason: audit.ReasonCommandForbidden},
	{name: "redirection", raw: `rsync --server -e.LsfxCIvu . dst >/tmp/x`,
		reason: audit.ReasonCommandForbidden},
	{name: "brace list", raw: `rsync --server --sender -e.LsfxCIvu . {a,/etc}`,
		reason: audit.ReasonCommandForbidden},
	{name: "comment", raw: `rsync --server -e.LsfxCIvu . #dst`,
		reason: audit.ReasonCommandForbidden},
	{name: "unterminated quote", raw: `rsync --server -e.LsfxCIvu . 'dst`,
		reason: audit.ReasonArgumentInvalid},
	{name: "NUL in a path", raw: "rsync --server -e.LsfxCIvu . d\x00st",
		reason: audit.ReasonArgumentInvalid, message: "NUL"},
	{name: "overlong path",
		raw:    "rsync --server -e.LsfxCIvu . " + strings.Repeat("a", maxArgLen+1),
		reason: audit.ReasonArgumentInvalid},
	{name: "not rsync", raw: `cat /etc/passwd`, reason: audit.ReasonCommandForbidden},
	{name: "empty", raw: ``, reason: audit.ReasonCommandForbidden},
	{name: "rsync without --server", raw: `rsync -av /etc/ /data/`,
		reason: audit.ReasonCommandForbidden},
	{name: "no separator", raw: `rsync --server --sender -e.LsfxCIvu /etc passwd`,
		reason: audit.ReasonArgumentInvalid, message: "/etc"},
	{name: "rsh", raw: `rsync --server --rsh=sh -e.LsfxCIvu . dst`,
		reason: audit.ReasonOptionForbidden, message: "--rsh"},
	{name: "-e as a shell", raw: `rsync --server -e sh . dst`,
		reason: audit.ReasonArgumentInvalid, message: "capability"},
	{name: "-e with a command", raw: `rsync --server -vesh . dst`,
		reason: audit.ReasonArgumentInvalid},
	{name: "rsync path", raw: `rsync --server --rsync-path=/bin/sh -e.LsfxCIvu . dst`,
		reason: audit.ReasonOptionForbidden},
	{name: "config", raw: `rsync --server --config=/x -e.LsfxCIvu . dst`,
		reason: audit.ReasonOptionForbidden},
	{name: "write devices", raw: `rsync --server -logDtpre.iLsfxCIvu --write-devices . dst`,
		reason: audit.ReasonOptionForbidden},
	{name: "copy devices", raw: `rsync --server --sender -e.LsfxCIvu --copy-devices . src`,
		reason: audit.ReasonOptionForbidden},
	{name: "no munge links",
		raw:    `rsync --server -logDtpre.iLsfxCIvu --no-munge-links . dst`,
		reason: audit.ReasonOptionForbidden, message: "--no-munge-links"},
	{name: "server twice", raw: `rsync --server --server -e.LsfxCIvu . dst`,
		reason: audit.ReasonOptionForbidden, message: "twice"},
	{name: "sender twice", raw: `rsync --server --sender --sender -e.LsfxCIvu . dst`,
		reason: audit.ReasonOptionForbidden, message: "twice"},
	{name: "old args", raw: `rsync --server --old-args -e.LsfxCIvu . dst`,
		reason: audit.ReasonOptionForbidden},
	{name: "super", raw: `rsync --server -logDtpre.iLsfxCIvu --super . dst`,
		reason: audit.ReasonOptionForbidden, message: "--super"},
	{name: "only write batch",
		raw:    `rsync --server -logDtpre.iLsfxCIvu --only-write-batch=X . dst`,
		reason: audit.ReasonOptionForbidden},
	{name: "filter on the command line",
		raw:    `rsync --server -logDtpre.iLsfxCIvu --exclude-from=/etc/shadow . dst`,
		reason: audit.ReasonOptionForbidden},
	{name: "abbreviated option", raw: `rsync --server -e.LsfxCIvu --delet . dst`,
		scopes: scopeAll, reason: audit.ReasonOptionForbidden, message: "--delet "},
	{name: "alias --del", raw: `rsync --server -e.LsfxCIvu --del . dst`,
		scopes: auth.ScopeWrite, reason: audit.ReasonScopeMissing,
		message: "lacks delete scope (needed by --del)"},
	{name: "unknown letter", raw: `rsync --server -logDtpPre.iLsfxCIvu . dst`,
		reason: audit.ReasonOptionForbidden, message: "option -P is not allowed"},
	{name: "partial dir climbs", raw: `rsync --server -e.LsfxCIvu --partial-dir=../p . dst`,
		reason: audit.ReasonPathOutsideRoot},
	{name: "link dest climbs",
		raw:    `rsync --server -e.LsfxCIvu --link-dest ../../x . dst`,
		reason: audit.ReasonPathOutsideRoot, message: "../../x"},
	{name: "link dest climbs from the root",
		raw:    `rsync --server -e.LsfxCIvu --link-dest ../prev . ./`,
		reason: audit.ReasonPathOutsideRoot},
	{name: "backup dir climbs", raw: `rsync --server -be.LsfxCIvu --backup-dir=/../x . dst`,
		reason: audit.ReasonPathOutsideRoot},
	{name: "temp dir climbs", raw: `rsync --server -e.LsfxCIvu -T ../../tmp . d`,
		reason: audit.ReasonPathOutsideRoot},
	{name: "files from climbs",
		raw:    `rsync --server --sender -e.LsfxCIvu --files-from=../list . src`,
		reason: audit.ReasonPathOutsideRoot},
	{name: "temp dir on a pull", raw: `rsync --server --sender -e.LsfxCIvu --temp-dir=t . s`,
		reason: audit.ReasonOptionForbidden, message: "on a pull"},
	{name: "delete on a pull", raw: `rsync --server --sender -e.LsfxCIvu --delete . src`,
		scopes: scopeAll, reason: audit.ReasonOptionForbidden, message: "on a pull"},
	{name: "two destinations", raw: `rsync --server -e.LsfxCIvu . dst other`,
		reason: audit.ReasonArgumentInvalid, message: "exactly one destination"},
	{name: "no path", raw: `rsync --server --sender -e.LsfxCIvu .`,
		reason: audit.ReasonArgumentInvalid},
	{name: "log format of the client's choosing",
		raw:    `rsync --server -e.LsfxCIvu --log-format=%n%L . dst`,
		reason: audit.ReasonArgumentInvalid},
	{name: "suffix with a slash", raw: `rsync --server -be.LsfxCIvu --suffix=/../x . dst`,
		reason: audit.ReasonArgumentInvalid},
	{name: "iconv that can forge dots", raw: `rsync --server -se.LsfxCIvu --iconv=UTF-7`,
		list:   "rsync\x00.\x00+AC4ALgAv-etc\x00\x00",
		reason: audit.ReasonArgumentInvalid, message: "--iconv"},
	{name: "iconv transliteration",
		raw:    `rsync --server -e.LsfxCIvu --iconv=latin1//TRANSLIT . dst`,
		reason: audit.ReasonArgumentInvalid},
	{name: "iconv EBCDIC", raw: `rsync --server -e.LsfxCIvu --iconv=cp037 . dst`,
		reason: audit.ReasonArgumentInvalid},
	{name: "debug with odd bytes", raw: `rsync --server -e.LsfxCIvu --debug='all;x' . dst`,
		reason: audit.ReasonArgumentInvalid},
	{name: "number that is not", raw: `rsync --server -e.LsfxCIvu --timeout='5 /x' . dst`,
		reason: audit.ReasonArgumentInvalid},
	{name: "flag with a value", raw: `rsync --server -e.LsfxCIvu --delete=x . dst`,
		scopes: scopeAll, reason: audit.ReasonArgumentInvalid},
	{name: "value missing", raw: `rsync --server -e.LsfxCIvu --partial-dir`,
		reason: audit.ReasonArgumentInvalid, message: "needs a value"},
	{name: "an option after the paths is a path",
		raw:    `rsync --server -e.LsfxCIvu . dst --log-file=/x`,
		reason: audit.ReasonArgumentInvalid, message: "exactly one destination"},

	// Scopes.
	{name: "pull without read", raw: `rsync --server --sender -e.LsfxCIvu . src`,
		scopes: auth.ScopeWrite, reason: audit.ReasonScopeMissing,
		message: "lacks read scope"},
	{name: "push without write", raw: `rsync --server -e.LsfxCIvu . dst`,
		scopes: auth.ScopeRead | auth.ScopeDelete, reason: audit.ReasonScopeMissing,
		message: "lacks write scope"},
	{name: "delete without delete", raw: `rsync --server -logDtpre.iLsfxCIvu --delete . dst`,
		reason: audit.ReasonScopeMissing, message: "lacks delete scope (needed by --delete)"},
	{name: "remove source files on a pull",
		raw:    `rsync --server --sender -logDtpre.iLsfxCIvu --remove-source-files . src/`,
		reason: audit.ReasonScopeMissing, message: "(needed by --remove-source-files)"},
	{name: "delete missing args on a push",
		raw:    `rsync --server -logDtpre.iLsfxCIvu --delete-missing-args . dst`,
		reason: audit.ReasonScopeMissing, message: "--delete-missing-args"},
	{name: "force", raw: `rsync --server -logDtpre.iLsfxCIvu --force . dst`,
		reason: audit.ReasonScopeMissing, message: "--force"},
	{name: "list file read on a push without read",
		raw:    `rsync --server -logDtpRe.LsfxCIvu --files-from list . dst`,
		scopes: auth.ScopeWrite, reason: audit.ReasonScopeMissing, message: "read scope"},

	// The -s list gets the same policy as the command line.
	{name: "-s with a forbidden option", raw: `rsync --server -slogDtpre.iLsfxCIvu`,
		list:   "rsync\x00--log-file=/x\x00.\x00dst\x00\x00",
		reason: audit.ReasonOptionForbidden, message: "--log-file"},
	{name: "-s path climbs out", raw: `rsync --server --sender -se.LsfxCIvu`,
		list:   "rsync\x00.\x00src\x00../../etc\x00\x00",
		reason: audit.ReasonPathOutsideRoot, message: "../../etc"},
	{name: "-s list turns a push into a pull", raw: `rsync --server -se.LsfxCIvu`,
		list:   "rsync\x00--sender\x00.\x00src\x00\x00",
		scopes: auth.ScopeWrite, reason: audit.ReasonArgumentInvalid, message: "--sender"},
	{name: "-s delete without delete", raw: `rsync --server -se.LsfxCIvu`,
		list:   "rsync\x00--delete\x00.\x00dst\x00\x00",
		reason: audit.ReasonScopeMissing, message: "--delete"},
	{name: "-s with paths on the command line", raw: `rsync --server -se.LsfxCIvu . dst`,
		reason: audit.ReasonArgumentInvalid},
	{name: "-s list without rsync", raw: `rsync --server -se.LsfxCIvu`,
		list: "sh\x00.\x00dst\x00\x00", reason: audit.ReasonArgumentInvalid},
	{name: "-s list cut short", raw: `rsync --server -se.LsfxCIvu`,
		list: "rsync\x00.\x00dst\x00", reason: audit.ReasonArgumentInvalid},
	{name: "-s list without separator", raw: `rsync --server -se.LsfxCIvu`,
		list: "rsync\x00dst\x00\x00", reason: audit.ReasonArgumentInvalid},
	{name: "-s list too long", raw: `rsync --server -se.LsfxCIvu`,
		list:   "rsync\x00.\x00" + strings.Repeat("a", maxProtectedBytes) + "\x00\x00",
		reason: audit.ReasonArgumentInvalid, message: "longer than"},
	{name: "-s list with too many args", raw: `rsync --server --sender -se.LsfxCIvu`,
		list:   "rsync\x00.\x00" + strings.Repeat("a\x00", maxProtectedArgs) + "\x00",
		reason: audit.ReasonArgumentInvalid, message: "more than"},
	{name: "-s inside the list", raw: `rsync --server -se.LsfxCIvu`,
		list: "rsync\x00-s\x00.\x00dst\x00\x00", reason: audit.ReasonOptionForbidden},
}

func TestAuthorizeRefuses(t *testing.T) {
	for _, tc := range refuseCases {
		t.Run(tc.name, func(t *testing.T) {
			scopes := tc.scopes
			if scopes == 0 {
				scopes = scopeRW
			}
			_, err := parseReadAuthorize(tc.raw, []byte(tc.list), scopes)
			var denial *audit.Denial
			if !errors.As(err, &denial) {
				t.Fatalf("got %v, want a denial with reason %s", err, tc.reason)
			}
			if denial.Reason != tc.reason {
				t.Errorf("reason = %s (%q), want %s", denial.Reason, denial.Message, tc.reason)
			}
			if !strings.Contains(denial.Message, tc.message) {
				t.Errorf("message %q does not contain %q", denial.Message, tc.message)
			}
			if strings.ContainsAny(denial.Message, "\n\r") {
				t.Errorf("message %q is not one line", denial.Message)
			}
		})
	}
}

// parseReadAuthorize does what the gateway does with one exec request.
func parseReadAuthorize(raw string, list []byte, scopes auth.Scope) (*Plan, error) {
	inv, err := ParseCommand(raw)
	if err != nil {
		return nil, err
	}
	if inv.Protected {
		if err := inv.ReadProtectedArgs(bytes.NewReader(list)); err != nil {
			return nil, err
		}
	}
	return Authorize(inv, scopes)
}

func isDenial(err error) bool {
	var denial *audit.Denial
	return errors.As(err, &denial)
}

// Absolute paths in options name places inside the root: the jail mounts the
// root at /data, so they move under it and can never reach the host's files.
func TestAbsoluteOptionPathsStayInRoot(t *testing.T) {
	cases := []struct{ raw, want string }{
		{`rsync --server --sender -e.LsfxCIvu --files-from=/etc/passwd . src`,
			"--files-from=/data/etc/passwd"},
		{`rsync --server --sender -e.LsfxCIvu --files-from //etc/passwd . src`,
			"--files-from=/data/etc/passwd"},
		{`rsync --server --sender -e.LsfxCIvu --files-from ~/list . src`,
			"--files-from=/data/list"},
		{`rsync --server -e.LsfxCIvu --temp-dir=/tmp . dst`, "--temp-dir=/data/tmp"},
		{`rsync --server -e.LsfxCIvu -T/tmp . dst`, "-T/data/tmp"},
		{`rsync --server -e.LsfxCIvu --temp-dir ~ . dst`, "--temp-dir=/data"},
		{`rsync --server -e.LsfxCIvu --partial-dir=/var/p . dst`, "--partial-dir=/data/var/p"},
		{`rsync --server -be.LsfxCIvu --backup-dir ~/old . dst`, "--backup-dir=/data/old"},
		{`rsync --server -e.LsfxCIvu --compare-dest=/ . dst`, "--compare-dest=/data"},
		{`rsync --server -e.LsfxCIvu --copy-dest=../a/./b . x/y`, "--copy-dest=/data/x/a/b"},
	}
	for _, tc := range cases {
		plan, err := parseReadAuthorize(tc.raw, nil, scopeRW)
		if err != nil {
			t.Errorf("%s: %v", tc.raw, err)
			continue
		}
		if !slices.Contains(plan.Argv, tc.want) {
			t.Errorf("%s:\n argv %q\n lacks %q", tc.raw, plan.Argv, tc.want)
		}
		for _, a := range plan.Argv {
			if strings.Contains(a, "=/etc") || strings.Contains(a, "=/tmp") || a == "/etc/passwd" {
				t.Errorf("%s: argv word %q names a host path", tc.raw, a)
			}
		}
	}
}

func TestMapArgPath(t *testing.T) {
	cases := []struct {
		text  string
		tilde bool
		want  string
	}{
		{"dst", false, "dst"},
		{"/abs/dst/", false, "abs/dst/"},
		{"//x", false, "x"},
		{"/", false, "./"},
		{"", false, "."},
		{".", false, "."},
		{"~", true, "."},
		{"~/", true, "./"},
		{"~/a/b", true, "a/b"},
		{"~user", false, "~user"},
		{"/a/./b/", false, "a/./b/"},
		{"src/*.txt", false, "src/*.txt"},
		{"a/../b", false, "a/../b"},
		{"-rf", false, "-rf"},
	}
	for _, tc := range cases {
		got, denial := mapArgPath(shellWord{text: tc.text, tilde: tc.tilde})
		if denial != nil || got != tc.want {
			t.Errorf("mapArgPath(%q) = %q, %v; want %q", tc.text, got, denial, tc.want)
		}
	}
	bad := []string{"..", "../x", "/..", "/../x", "a/../../b", "./../x", "a/b/../../.."}
	for _, bad := range bad {
		if got, denial := mapArgPath(shellWord{text: bad}); denial == nil ||
			denial.Reason != audit.ReasonPathOutsideRoot {
			t.Errorf("mapArgPath(%q) = %q, %v; want path_outside_root", bad, got, denial)
		}
	}
}

func TestReadProtectedArgsStopsAtTheList(t *testing.T) {
	inv, err := ParseCommand("rsync --server -se.LsfxCIvu")
	if err != nil {
		t.Fatal(err)
	}
	// A reader that hands out one byte a call, like a slow channel.
	protocol := "\x20\x00\x00\x00more protocol"
	r := &oneByteReader{data: []byte("rsync\x00.\x00dst\x00\x00" + protocol)}
	if err := inv.ReadProtectedArgs(r); err != nil {
		t.Fatal(err)
	}
	if rest := string(r.data[r.pos:]); rest != protocol {
		t.Fatalf("left %q unread, want %q", rest, protocol)
	}
	if err := inv.ReadProtectedArgs(r); err == nil || isDenial(err) {
		t.Fatalf("second ReadProtectedArgs = %v, want a plain error", err)
	}

	plain, err := ParseCommand("rsync --server -e.LsfxCIvu . dst")
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.ReadProtectedArgs(r); err == nil || isDenial(err) {
		t.Fatalf("ReadProtectedArgs without -s = %v, want a plain error", err)
	}
}

func TestReadProtectedArgsReaderFaults(t *testing.T) {
	inv, _ := ParseCommand("rsync --server -se.LsfxCIvu")
	if err := inv.ReadProtectedArgs(stallReader{}); err == nil || isDenial(err) {
		t.Fatalf("stalled reader: %v, want a plain error", err)
	}
	inv, _ = ParseCommand("rsync --server -se.LsfxCIvu")
	if err := inv.ReadProtectedArgs(failReader{}); err == nil || isDenial(err) {
		t.Fatalf("failing reader: %v, want a plain error", err)
	}
}

type oneByteReader struct {
	data []byte
	pos  int
}

func (r *oneByteReader) Read(p []byte) (int, error) {
	if r.pos == len(r.data) {
		return 0, errors.New("read past the data")
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.data[r.pos]
	r.pos++
	return 1, nil
}

type stallReader struct{}

func (stallReader) Read([]byte) (int, error) { return 0, nil }

type failReader struct{}

func (failReader) Read([]byte) (int, error) { return 0, errors.New("channel reset") }

func BenchmarkAuthorize(b *testing.B) {
	const raw = `rsync --server -logDtprze.iLsfxCIvu --delete --partial-dir .p --mkpath . ` +
		`backups/host\ one/2024-06-01/`
	b.ReportAllocs()
	for b.Loop() {
		inv, err := ParseCommand(raw)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Authorize(inv, scopeAll); err != nil {
			b.Fatal(err)
		}
	}
}
