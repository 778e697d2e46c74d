package client

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseMinted(t *testing.T) {
	tok := newToken(t)
	id := tok[3:15]
	good := fmt.Sprintf(`{"token":%q,"id":%q,"parent":"aaaaaaaaaaaa","scopes":["read"],`+
		`"root":"t","expires_at":"2026-12-05T07:14:00Z"}`+"\n", tok, id)
	if got, err := parseMinted([]byte(good)); err != nil || got != tok {
		t.Fatalf("got %q, %v", got, err)
	}

	for name, reply := range map[string]string{
		"not JSON":      tok + "\n",
		"no token":      `{"id":"` + id + `"}`,
		"wrong ID":      fmt.Sprintf(`{"token":%q,"id":"bbbbbbbbbbbb"}`, tok),
		"broken token":  fmt.Sprintf(`{"token":%q,"id":%q}`, tok[:len(tok)-1]+"x", id),
		"empty answer":  "",
		"JSON but list": "[]",
	} {
		_, err := parseMinted([]byte(reply))
		if err == nil || strings.Contains(err.Error(), tok) {
			t.Errorf("%s: err = %v; want a refusal that does not quote the reply", name, err)
		}
	}
}

func TestWithID(t *testing.T) {
	tok := newToken(t)
	r := withID(Refusal{Words: "unknown token, or wrong secret"}, tok)
	if r.TokenID != tok[3:15] || r.Words != "token "+tok[3:15]+": unknown token, or wrong secret" {
		t.Fatalf("got %+v", r)
	}
	named := Refusal{TokenID: "aaaaaaaaaaaa", Words: "token aaaaaaaaaaaa was revoked"}
	if withID(named, tok) != named {
		t.Fatal("a refusal that names its token was changed")
	}
}
