package audit

import (
	"strings"
	"testing"
	"time"
)

const sampleToken = "tg_abcdefghij12_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef012345"

func TestRedactTokens(t *testing.T) {
	got := RedactTokens("user " + sampleToken + " ran echo " + sampleToken + "!")
	want := "user tg_abcdefghij12_[REDACTED] ran echo tg_abcdefghij12_[REDACTED]!"
	if got != want {
		t.Fatalf("got %q", got)
	}
	if s := "tg_short_x and no token"; RedactTokens(s) != s {
		t.Fatal("changed text without a token")
	}
}

// A token pasted into any field of an event reaches neither the log fields
// nor the JSON shipped to a SIEM.
func TestEventsNeverCarryTokens(t *testing.T) {
	ev := Event{Action: ActionCommandDenied, User: sampleToken, Message: "refused " + sampleToken,
		Fields: map[string]any{"ssh.command": "echo " + sampleToken,
			"rsync.args": []string{"--server", sampleToken}}}
	for k, v := range ev.LogFields() {
		if strings.Contains(toString(v), sampleToken[16:]) {
			t.Fatalf("log field %s carries the token: %v", k, v)
		}
	}
	if doc := string(EncodeJSON(ev, time.Now(), "gw")); strings.Contains(doc, sampleToken[16:]) {
		t.Fatalf("shipped JSON carries the token: %s", doc)
	}
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []string:
		return strings.Join(x, " ")
	}
	return ""
}
