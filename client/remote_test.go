package client

import (
	"reflect"
	"strings"
	"testing"
)

func TestRemoteFromRsyncArgs(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		rshEnv string
		want   Remote
		err    string
	}{
		{"push with -e", []string{"-az", "-e", "ssh -p 2222", "./site/", "deploy@gw:site/"}, "",
			Remote{User: "deploy", Host: "gw", Shell: []string{"ssh", "-p", "2222"}}, ""},
		{"pull without user", []string{"-a", "gw.example:site/", "copy/"}, "",
			Remote{Host: "gw.example", Shell: []string{"ssh"}}, ""},
		{"--rsh=", []string{"--rsh=ssh -o Port=2222", "a", "u@h:"}, "",
			Remote{User: "u", Host: "h", Shell: []string{"ssh", "-o", "Port=2222"}}, ""},
		{"--rsh next word", []string{"--rsh", "ssh -p 1", "a", "u@h:x"}, "",
			Remote{User: "u", Host: "h", Shell: []string{"ssh", "-p", "1"}}, ""},
		{"-e in a cluster, value attached", []string{"-avessh -p 3", "a", "h:x"}, "",
			Remote{Host: "h", Shell: []string{"ssh", "-p", "3"}}, ""},
		{"-e ends a cluster", []string{"-ave", "ssh -p 4", "a", "h:x"}, "",
			Remote{Host: "h", Shell: []string{"ssh", "-p", "4"}}, ""},
		{"the last -e wins", []string{"-e", "rsh", "-e", "ssh -p 5", "a", "h:x"}, "",
			Remote{Host: "h", Shell: []string{"ssh", "-p", "5"}}, ""},
		{"RSYNC_RSH when no -e", []string{"a", "h:x"}, "ssh -p 6",
			Remote{Host: "h", Shell: []string{"ssh", "-p", "6"}}, ""},
		{"-e beats RSYNC_RSH", []string{"-e", "ssh -p 7", "a", "h:x"}, "ssh -p 6",
			Remote{Host: "h", Shell: []string{"ssh", "-p", "7"}}, ""},
		{"quotes as rsync reads them",
			[]string{"-e", `ssh -o 'ProxyCommand=nc %h %p' -o "User=it""s"`, "a", "h:x"}, "",
			Remote{Host: "h", Shell: []string{"ssh", "-o", "ProxyCommand=nc %h %p", "-o",
				`User=it"s`}}, ""},
		{"IPv6", []string{"a", "u@[::1]:dst/"}, "",
			Remote{User: "u", Host: "::1", Shell: []string{"ssh"}}, ""},
		{"an option value is not an operand",
			[]string{"--exclude", "x:y", "--filter", "- a:b", "-f", "- c:d", "src", "h:dst"}, "",
			Remote{Host: "h", Shell: []string{"ssh"}}, ""},
		{"after -- everything is an operand", []string{"-a", "--", "-odd:name", "h:dst"}, "",
			Remote{}, "two remotes"},
		{"local path with a colon after a slash", []string{"./a:b", "h:dst"}, "",
			Remote{Host: "h", Shell: []string{"ssh"}}, ""},
		{"two sources on one host", []string{"u@h:a", "u@h:b", "dst/"}, "",
			Remote{User: "u", Host: "h", Shell: []string{"ssh"}}, ""},
		{"a user with an @", []string{"a", "me@corp@h:x"}, "",
			Remote{User: "me@corp", Host: "h", Shell: []string{"ssh"}}, ""},

		{"no remote", []string{"-a", "src/", "dst/"}, "", Remote{}, "no [user@]host:path"},
		{"daemon module", []string{"src/", "h::module/x"}, "", Remote{}, "rsync daemon"},
		{"daemon URL", []string{"src/", "rsync://h/module"}, "", Remote{}, "rsync daemon"},
		{"two hosts", []string{"a:x", "b:y"}, "", Remote{}, "two remotes, a and b"},
		{"unclosed quote", []string{"-e", "ssh -o 'x", "s", "h:d"}, "", Remote{}, "closing '"},
		{"empty shell", []string{"-e", "  ", "s", "h:d"}, "", Remote{}, "is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseRsyncArgs(c.args).remote(c.rshEnv)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %#v, want %#v", got, c.want)
			}
		})
	}
}

func TestRemoteCommand(t *testing.T) {
	r := Remote{User: "deploy", Host: "gw", Shell: []string{"ssh", "-p", "2222"}}
	got := r.Command("token", "issue", "--json")
	want := []string{"ssh", "-p", "2222", "-l", "deploy", "gw", "token", "issue", "--json"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if r.Shell[len(r.Shell)-1] != "2222" {
		t.Fatal("Command changed the remote's shell")
	}
}

func TestKeepsPartial(t *testing.T) {
	cases := map[string]bool{
		"-a src h:dst":                  false,
		"-avz --bwlimit 100 src h:dst":  false,
		"-aP src h:dst":                 true,
		"--partial src h:dst":           true,
		"--no-partial src h:dst":        true,
		"--partial-dir=.p src h:dst":    true,
		"--inplace src h:dst":           true,
		"--append-verify src h:dst":     true,
		"--delay-updates src h:dst":     true,
		"-e ssh-P src h:dst":            false, // P belongs to -e's value
		"--exclude --partial src h:dst": false, // --partial is --exclude's value
	}
	for line, want := range cases {
		if got := parseRsyncArgs(strings.Fields(line)).keepsPartial; got != want {
			t.Errorf("%q: keepsPartial = %v, want %v", line, got, want)
		}
	}
}
