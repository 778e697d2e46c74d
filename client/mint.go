package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/tokengate/tokengate/auth"
)

// Mint asks for each rsync token to be minted by the gateway from an
// issuer token (one with the issue scope), so the token rsync uses lives
// only minutes and the long-lived one never moves data.
type Mint struct {
	Scopes string        // scopes of the minted token, such as "read,write"
	TTL    time.Duration // lifetime of the minted token
}

// mintTimeout bounds one `token issue` round trip, login included.
const mintTimeout = time.Minute

// refusedError is the gateway refusing a token: the one rsync used, or
// the issuer token while minting. again is set when a source handed out a
// token that the gateway had already refused in this run.
type refusedError struct {
	refusal Refusal
	issuer  bool
	again   bool
	status  int // the refused child's exit status; 0 when none ran
}

func (e *refusedError) Error() string {
	what := "the gateway refused the token"
	if e.issuer {
		what = "the gateway refused the issuer token"
	}
	if e.again {
		what = "the token source handed back a token the gateway had refused"
		if e.issuer {
			what = "the issuer token source handed back a token the gateway had refused"
		}
	}
	return what + " (" + e.refusal.Words + ")"
}

// finalError ends a sync at once: trying again cannot help. message is the
// whole line to print.
type finalError struct {
	status  int
	message string
}

func (e *finalError) Error() string { return e.message }

// minter turns issuer tokens into short-lived tokens over SSH.
type minter struct {
	parent  Source
	remote  Remote
	mint    Mint
	env     tokenEnv
	stderr  io.Writer
	refused map[string]Refusal // issuer tokens the gateway refused
}

// mintingSource hands out tokens minted from the tokens parent hands out.
func mintingSource(parent Source, remote Remote, mint Mint, env tokenEnv,
	stderr io.Writer) Source {
	m := &minter{parent: parent, remote: remote, mint: mint, env: env, stderr: stderr,
		refused: map[string]Refusal{}}
	return Source{Name: parent.Name, Fixed: parent.Fixed, fetch: m.token}
}

func (m *minter) token(ctx context.Context) (string, error) {
	issuer, err := m.parent.Token(ctx)
	if err != nil {
		return "", err
	}
	if r, ok := m.refused[issuer]; ok {
		return "", &refusedError{refusal: r, issuer: true, again: true}
	}

	ctx, cancel := context.WithTimeout(ctx, mintTimeout)
	defer cancel()
	argv := m.remote.Command("token", "issue", "--ttl", m.mint.TTL.String(),
		"--scope", m.mint.Scopes, "--json")
	reply := &cappedBuffer{max: maxTokenOutput}
	out, err := runChild(ctx, argv, m.env, issuer, nil, reply, m.stderr)
	if err != nil {
		return "", &finalError{status: 1, message: fmt.Sprintf(
			"sync: could not run %s to mint a token: %v", argv[0], err)}
	}
	switch {
	case out.status != 0 && out.refusal != nil:
		r := withID(*out.refusal, issuer)
		m.refused[issuer] = r
		return "", &refusedError{refusal: r, issuer: true, status: out.status}
	case out.status != 0 && out.words != "":
		return "", &finalError{status: out.status, message: fmt.Sprintf(
			"sync: ALERT: the gateway would not mint a token (%s); "+
				"fix the issuer token or sync's --scope and --ttl, and rerun", out.words)}
	case out.status != 0:
		return "", &finalError{status: out.status, message: fmt.Sprintf(
			"sync: minting a token failed: %s exited with status %d (its message is above)",
			argv[0], out.status)}
	}
	return parseMinted(reply.Bytes())
}

// parseMinted reads the gateway's answer to `token issue --json`.
func parseMinted(b []byte) (string, error) {
	var minted struct {
		Token string `json:"token"`
		ID    string `json:"id"`
	}
	bad := &finalError{status: 1, message: "sync: ALERT: the gateway's answer to token issue " +
		"is not the expected JSON; is the gateway older than this client?"}
	if err := json.Unmarshal(b, &minted); err != nil {
		return "", bad
	}
	tok, err := auth.ParseToken(minted.Token)
	if err != nil || tok.ID != minted.ID {
		return "", bad
	}
	return minted.Token, nil
}

// withID names the refused token when the gateway's words do not, as for
// an unknown token; the ID is public, the secret is never shown.
func withID(r Refusal, token string) Refusal {
	if r.TokenID != "" {
		return r
	}
	if tok, err := auth.ParseToken(token); err == nil {
		r.TokenID = tok.ID
		r.Words = "token " + tok.ID + ": " + r.Words
	}
	return r
}
