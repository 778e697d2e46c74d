// Package auth owns tokens: their format, hashing, the Redis store, scopes,
// expiry, the revocation feed and attempt limiting.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"strings"

	"github.com/tokengate/tokengate/audit"
)

// A token reads tg_<id>_<secret><check>:
//
//   - "tg_" lets secret scanners recognise a leaked token;
//   - id is the public token ID, 12 characters of [a-z0-9];
//   - secret is 32 characters of [A-Za-z0-9] (about 190 bits);
//   - check is the CRC-32 of everything before it, 6 base62 characters, so a
//     mistyped token is refused without a Redis round trip.
const (
	tokenPrefix = "tg_"
	idLen       = 12
	secretLen   = 32
	checkLen    = 6
	tokenLen    = len(tokenPrefix) + idLen + 1 + secretLen + checkLen

	idAlphabet     = "abcdefghijklmnopqrstuvwxyz0123456789"
	base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// Token is a parsed token. Its Secret must never be logged or stored.
type Token struct {
	ID     string
	Secret string
}

// NewToken draws a fresh token ID and secret from the system's CSPRNG.
func NewToken() (Token, error) {
	id, err := randomString(idAlphabet, idLen)
	if err != nil {
		return Token{}, err
	}
	secret, err := randomString(base62Alphabet, secretLen)
	if err != nil {
		return Token{}, err
	}
	return Token{ID: id, Secret: secret}, nil
}

// String renders the full token, secret included: only for the one moment it
// is handed to its owner.
func (t Token) String() string {
	body := tokenPrefix + t.ID + "_" + t.Secret
	return body + checksum(body)
}

// ParseToken checks a token's shape and checksum. The error is a
// token_malformed denial and never quotes the input.
func ParseToken(s string) (Token, error) {
	malformed := audit.Deny(audit.ReasonTokenMalformed,
		"that is not a valid tokengate token (mistyped or truncated?)")
	if len(s) != tokenLen || !strings.HasPrefix(s, tokenPrefix) {
		return Token{}, malformed
	}
	body, check := s[:tokenLen-checkLen], s[tokenLen-checkLen:]
	if subtle.ConstantTimeCompare([]byte(checksum(body)), []byte(check)) != 1 {
		return Token{}, malformed
	}
	id := body[len(tokenPrefix) : len(tokenPrefix)+idLen]
	if body[len(tokenPrefix)+idLen] != '_' || !ValidID(id) {
		return Token{}, malformed
	}
	secret := body[len(tokenPrefix)+idLen+1:]
	if !onlyFrom(secret, base62Alphabet) {
		return Token{}, malformed
	}
	return Token{ID: id, Secret: secret}, nil
}

// ValidID reports whether id has the shape of a token ID. Callers use it
// before putting an admin-supplied ID into a Redis key name.
func ValidID(id string) bool {
	return len(id) == idLen && onlyFrom(id, idAlphabet)
}

// HashSecret is what Redis stores instead of the secret: hex SHA-256. The
// secret has 190 bits of entropy, so a fast hash is enough; no salt or
// stretching is needed to resist guessing.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// SecretMatches compares a presented secret with a stored hash in constant time.
func SecretMatches(secret, storedHash string) bool {
	want := HashSecret(secret)
	return subtle.ConstantTimeCompare([]byte(want), []byte(storedHash)) == 1
}

func checksum(body string) string {
	n := crc32.ChecksumIEEE([]byte(body))
	out := make([]byte, checkLen)
	for i := checkLen - 1; i >= 0; i-- {
		out[i] = base62Alphabet[n%62]
		n /= 62
	}
	return string(out)
}

func randomString(alphabet string, n int) (string, error) {
	// Rejection sampling keeps every character equally likely.
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("reading random bytes: %w", err)
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}

func onlyFrom(s, alphabet string) bool {
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(alphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}
