package session

import (
	"slices"
	"testing"

	"github.com/tokengate/tokengate/audit"
)

func TestSplitShellWords(t *testing.T) {
	cases := []struct {
		raw  string
		want []shellWord
	}{
		{`a  b	c`, []shellWord{{text: "a"}, {text: "b"}, {text: "c"}}},
		{`dst\ dir/\$x\;`, []shellWord{{text: "dst dir/$x;"}}},
		{`'a b'"c d"e`, []shellWord{{text: "a bc de"}}},
		{`'it'\''s'`, []shellWord{{text: "it's"}}},
		{`"a\"b\\c\$d\e"`, []shellWord{{text: `a"b\c$d\e`, escaped: `a"b\\c$d\\e`}}},
		{`'$(id)' "a;b|c&d<e>f(g)"`, []shellWord{{text: "$(id)"}, {text: "a;b|c&d<e>f(g)"}}},
		{`'' ""`, []shellWord{{text: ""}, {text: ""}}},
		{"a\\\nb", []shellWord{{text: "ab"}}},
		{"'line\nbreak'", []shellWord{{text: "line\nbreak"}}},
		{`a#b !x`, []shellWord{{text: "a#b"}, {text: "!x"}}},
		{`~ ~/x ~user a~ '~'/x`, []shellWord{{text: "~", tilde: true},
			{text: "~/x", tilde: true}, {text: "~user"}, {text: "a~"}, {text: "~/x"}}},
		{`src/*.txt`, []shellWord{{text: "src/*.txt", glob: true, escaped: "src/*.txt"}}},
		{`'a*'b? c\[d`, []shellWord{{text: "a*b?", glob: true, escaped: `a\*b?`},
			{text: "c[d", escaped: `c\[d`}}},
		{`'x\'*`, []shellWord{{text: `x\*`, glob: true, escaped: `x\\*`}}},
	}
	for _, tc := range cases {
		got, denial := splitShellWords(tc.raw)
		if denial != nil {
			t.Errorf("splitShellWords(%q): %v", tc.raw, denial)
			continue
		}
		// Where a case leaves escaped out, nothing in the word needs escaping.
		for i := range tc.want {
			if tc.want[i].escaped == "" {
				tc.want[i].escaped = tc.want[i].text
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("splitShellWords(%q)\n got %+v\nwant %+v", tc.raw, got, tc.want)
		}
	}
}

func TestSplitShellWordsRefuses(t *testing.T) {
	cases := []struct {
		raw    string
		reason audit.Reason
	}{
		{`a;b`, audit.ReasonCommandForbidden},
		{`a && b`, audit.ReasonCommandForbidden},
		{`a || b`, audit.ReasonCommandForbidden},
		{`a | b`, audit.ReasonCommandForbidden},
		{`a & b`, audit.ReasonCommandForbidden},
		{`a > b`, audit.ReasonCommandForbidden},
		{`a < b`, audit.ReasonCommandForbidden},
		{`a 2>&1`, audit.ReasonCommandForbidden},
		{`(a)`, audit.ReasonCommandForbidden},
		{`$HOME`, audit.ReasonCommandForbidden},
		{`${x}`, audit.ReasonCommandForbidden},
		{"`id`", audit.ReasonCommandForbidden},
		{`"$(id)"`, audit.ReasonCommandForbidden},
		{"\"`id`\"", audit.ReasonCommandForbidden},
		{"a\nb", audit.ReasonCommandForbidden},
		{"a\rb", audit.ReasonCommandForbidden},
		{`{a,b}`, audit.ReasonCommandForbidden},
		{`x}`, audit.ReasonCommandForbidden},
		{`a #comment`, audit.ReasonCommandForbidden},
		{`'open`, audit.ReasonArgumentInvalid},
		{`"open`, audit.ReasonArgumentInvalid},
		{`trailing\`, audit.ReasonArgumentInvalid},
	}
	for _, tc := range cases {
		words, denial := splitShellWords(tc.raw)
		if denial == nil {
			t.Errorf("splitShellWords(%q) = %+v, want a %s denial", tc.raw, words, tc.reason)
			continue
		}
		if denial.Reason != tc.reason {
			t.Errorf("splitShellWords(%q) reason = %s, want %s", tc.raw, denial.Reason, tc.reason)
		}
	}
}

func TestParseCommandStructure(t *testing.T) {
	inv, err := ParseCommand(`/usr/bin/rsync --server --sender -vvlogDtprze.iLsfxCIvu ` +
		`-B2048 --partial-dir .p --info=progress2 . src/ 'b c' -x`)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Direction != DirectionPull || inv.Protected {
		t.Fatalf("Direction %v Protected %v", inv.Direction, inv.Protected)
	}
	var given, values []string
	for _, o := range inv.options {
		given = append(given, o.given)
		values = append(values, o.value)
	}
	wantGiven := []string{"-vvlogDtprze.iLsfxCIvu", "-B", "--partial-dir", "--info"}
	wantValues := []string{"e.iLsfxCIvu", "2048", ".p", "progress2"}
	if !slices.Equal(given, wantGiven) || !slices.Equal(values, wantValues) {
		t.Errorf("options %q %q, want %q %q", given, values, wantGiven, wantValues)
	}
	if inv.options[0].letters != "vvlogDtprz" {
		t.Errorf("cluster letters %q", inv.options[0].letters)
	}
	var paths []string
	for _, p := range inv.paths {
		paths = append(paths, p.text)
	}
	// After the separator every word is a path, even one that looks like an option.
	if want := []string{"src/", "b c", "-x"}; !slices.Equal(paths, want) {
		t.Errorf("paths %q, want %q", paths, want)
	}
}

func TestParseCommandProtectedHead(t *testing.T) {
	for _, raw := range []string{
		"rsync --server -slogDtpre.iLsfxCIvu",
		"rsync --server --sender -slogDtpre.iLsfxCIvu --iconv=latin1",
		"rsync --server --protect-args -e.LsfxCIvu",
		"rsync --server --secluded-args -e.LsfxCIvu",
	} {
		inv, err := ParseCommand(raw)
		if err != nil || !inv.Protected {
			t.Errorf("ParseCommand(%q) = %+v, %v; want a protected invocation", raw, inv, err)
		}
	}
	// The "s" in the capability tail is a capability, not -s.
	inv, err := ParseCommand("rsync --server -e.iLsfxCIvu . dst")
	if err != nil || inv.Protected {
		t.Errorf("capability s read as -s: %+v, %v", inv, err)
	}
}

func TestValidCapabilities(t *testing.T) {
	for _, ok := range []string{".", ".iLsfxCIvu", ".LsfxC", "31.14iLsfx", "32.0", "31."} {
		if !validCapabilities(ok) {
			t.Errorf("validCapabilities(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "sh", "ssh -x", ".i/L", "1", ".iL.s", "x.y", ".i-L"} {
		if validCapabilities(bad) {
			t.Errorf("validCapabilities(%q) = true", bad)
		}
	}
}

func TestQuoteArg(t *testing.T) {
	cases := map[string]string{
		"--log-file": "--log-file",
		"../x":       "../x",
		"a b":        `"a b"`,
		"x\ny":       `"x\ny"`,
		"":           `""`,
		`it's`:       `"it's"`,
	}
	for in, want := range cases {
		if got := quoteArg(in); got != want {
			t.Errorf("quoteArg(%q) = %s, want %s", in, got, want)
		}
	}
	if got := quoteArg(string(make([]byte, 200))); len(got) > 400 {
		t.Errorf("quoteArg of 200 bytes gave %d", len(got))
	}
}
