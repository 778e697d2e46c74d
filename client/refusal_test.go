package client

import (
	"bytes"
	"testing"
)

func TestParseRefusal(t *testing.T) {
	cases := []struct {
		line    string
		refused bool
		id      string
	}{
		{"tokengate: token 3k9w0c2hx1ab expired at 2026-12-05T07:14:00Z", true, "3k9w0c2hx1ab"},
		{"tokengate: token 3k9w0c2hx1ab expired", true, "3k9w0c2hx1ab"},
		{"tokengate: token 3k9w0c2hx1ab was revoked\r", true, "3k9w0c2hx1ab"},
		{"tokengate: token 3k9w0c2hx1ab was revoked (the token that issued it is no longer valid)",
			true, "3k9w0c2hx1ab"},
		{"tokengate: token 3k9w0c2hx1ab was single-use and is spent", true, "3k9w0c2hx1ab"},
		{"tokengate: unknown token, or wrong secret", true, ""},
		{"tokengate: that is not a valid tokengate token (mistyped or truncated?)", true, ""},
		{"  tokengate: token 3k9w0c2hx1ab was revoked  ", true, "3k9w0c2hx1ab"},

		// Refused commands and warnings are not token refusals.
		{"tokengate: token 3k9w0c2hx1ab lacks write scope", false, ""},
		{"tokengate: warning: token 3k9w0c2hx1ab expires in 9m (2026-12-05T07:14:00Z)", false, ""},
		{"tokengate: the authentication backend is unavailable; try again shortly", false, ""},
		{"tokengate: too many failed attempts with token 3k9w0c2hx1ab; try again later",
			false, ""},
		{"tokengate: token 3k9w0c2hx1ab expires at 2026-12-05T07:14:00Z; " +
			"a token it issues cannot outlive it", false, ""},
		// Only the gateway's own lines count, not a file name that looks like one.
		{`rsync: send_files failed to open "tokengate: token 3k9w0c2hx1ab was revoked"`,
			false, ""},
		{"tokengate: token 3K9W0C2HX1AB was revoked", false, ""},
		{"", false, ""},
	}
	for _, c := range cases {
		r, ok := ParseRefusal(c.line)
		if ok != c.refused || r.TokenID != c.id {
			t.Errorf("ParseRefusal(%q) = %+v, %v; want refused=%v id=%q",
				c.line, r, ok, c.refused, c.id)
		}
	}
	r, _ := ParseRefusal("tokengate: token 3k9w0c2hx1ab was revoked\r\n")
	if r.Words != "token 3k9w0c2hx1ab was revoked" {
		t.Errorf("Words = %q", r.Words)
	}
}

// The watch passes every byte through and finds refusals across writes
// that split lines anywhere.
func TestStderrWatch(t *testing.T) {
	stream := "Warning: Permanently added '[127.0.0.1]:2222' to the list of known hosts.\r\n" +
		"tokengate: token 3k9w0c2hx1ab expired at 2026-12-05T07:14:00Z\r\n" +
		"tokengate: warning: token 3k9w0c2hx1ab expires in 1m\n" +
		"rsync: connection unexpectedly closed (0 bytes received so far) [sender]\n" +
		"tokengate: token 3k9w0c2hx1ab lacks write scope"
	for _, size := range []int{1, 3, 17, len(stream)} {
		var out bytes.Buffer
		w := newStderrWatch(&out)
		for i := 0; i < len(stream); i += size {
			chunk := []byte(stream[i:min(i+size, len(stream))])
			if n, err := w.Write(chunk); n != len(chunk) || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
		}
		if out.String() != stream {
			t.Fatalf("chunks of %d: passed through %q", size, out.String())
		}
		refusal, words := w.result()
		want := "token 3k9w0c2hx1ab expired at 2026-12-05T07:14:00Z"
		if refusal == nil || refusal.Words != want {
			t.Errorf("chunks of %d: refusal = %+v", size, refusal)
		}
		if words != "token 3k9w0c2hx1ab lacks write scope" {
			t.Errorf("chunks of %d: last gateway words = %q", size, words)
		}
	}
}

func TestStderrWatchBoundsLines(t *testing.T) {
	w := newStderrWatch(&bytes.Buffer{})
	_, _ = w.Write(bytes.Repeat([]byte("x"), 10*maxLine))
	if len(w.line) > maxLine {
		t.Fatalf("kept %d bytes of one line", len(w.line))
	}
	_, _ = w.Write([]byte("\ntokengate: unknown token, or wrong secret\n"))
	if r, _ := w.result(); r == nil {
		t.Fatal("missed the refusal after a long line")
	}
}
