package auth

import (
	"errors"
	"strings"
	"testing"

	"github.com/tokengate/tokengate/audit"
)

func TestTokenRoundTrip(t *testing.T) {
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	s := tok.String()
	if !strings.HasPrefix(s, "tg_") || len(s) != tokenLen {
		t.Fatalf("token %q has the wrong shape", s)
	}
	got, err := ParseToken(s)
	if err != nil {
		t.Fatal(err)
	}
	if got != tok {
		t.Fatalf("parsed %+v, want %+v", got, tok)
	}
}

// Every single-character change is caught by the shape or the checksum.
func TestParseTokenRejectsEveryTypo(t *testing.T) {
	tok, _ := NewToken()
	s := tok.String()
	for i := 0; i < len(s); i++ {
		for _, c := range []byte{'a', 'Z', '0', '_', '-'} {
			if s[i] == c {
				continue
			}
			typo := s[:i] + string(c) + s[i+1:]
			_, err := ParseToken(typo)
			var d *audit.Denial
			if !errors.As(err, &d) || d.Reason != audit.ReasonTokenMalformed {
				t.Fatalf("typo at %d (%q) accepted or wrong error: %v", i, c, err)
			}
			if strings.Contains(d.Message, typo) {
				t.Fatal("the error quotes the presented token")
			}
		}
	}
}

func TestParseTokenShapes(t *testing.T) {
	tok, _ := NewToken()
	good := tok.String()
	for _, bad := range []string{
		"", "tg_", good[:len(good)-1], good + "x", strings.ToUpper(good),
		"xx" + good[2:], strings.Replace(good, "_", "-", 1), "password123",
	} {
		if _, err := ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
}

func TestSecretMatches(t *testing.T) {
	h := HashSecret("abc")
	if len(h) != 64 || !SecretMatches("abc", h) || SecretMatches("abd", h) || SecretMatches("abc", "") {
		t.Fatal("SecretMatches is wrong")
	}
}

func TestScopes(t *testing.T) {
	s, err := ParseScopes("write, read")
	if err != nil || s.String() != "read,write" || !s.Has(ScopeRead|ScopeWrite) || s.Has(ScopeDelete) {
		t.Fatalf("ParseScopes = %v, %v", s, err)
	}
	for _, bad := range []string{"", "read,read", "admin", "read,,write"} {
		if _, err := ParseScopes(bad); err == nil {
			t.Errorf("ParseScopes(%q) accepted", bad)
		}
	}
}

func TestCleanRoot(t *testing.T) {
	for in, want := range map[string]string{"a": "a", "a/b/": "a/b", "a/./b": "a/b", "a/../b": "b"} {
		if got, err := CleanRoot(in); err != nil || got != want {
			t.Errorf("CleanRoot(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "/abs", "..", "../x", "a/../..", ".", "a\x00b"} {
		if _, err := CleanRoot(bad); err == nil {
			t.Errorf("CleanRoot(%q) accepted", bad)
		}
	}
}

func BenchmarkParseAndVerifySecret(b *testing.B) {
	tok, _ := NewToken()
	s := tok.String()
	hash := HashSecret(tok.Secret)
	b.ReportAllocs()
	for b.Loop() {
		parsed, err := ParseToken(s)
		if err != nil || !SecretMatches(parsed.Secret, hash) {
			b.Fatal("verify failed")
		}
	}
}
