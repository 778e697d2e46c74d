// Package audit defines what the gateway reports: the closed list of denial
// reasons, the event schema, and the sinks that carry events to a SIEM.
package audit

import "fmt"

// Reason is a stable, machine-readable code for why something was refused.
// The list is closed: dashboards and alert rules match on these strings.
type Reason string

// The denial reasons. Keep README's table in step when adding one.
const (
	ReasonTokenMalformed     Reason = "token_malformed"      // not a token, or its checksum is wrong
	ReasonTokenUnknown       Reason = "token_unknown"        // no such token ID
	ReasonSecretMismatch     Reason = "secret_mismatch"      // the ID exists, the secret is wrong
	ReasonTokenExpired       Reason = "token_expired"        // past its expiry
	ReasonTokenRevoked       Reason = "token_revoked"        // revoked by an admin (CLI or DEL)
	ReasonTokenNotYetValid   Reason = "token_not_yet_valid"  // before its not-before time
	ReasonTokenUsed          Reason = "token_used"           // a single-use token already spent
	ReasonUserMismatch       Reason = "user_mismatch"        // the token is bound to another SSH user
	ReasonSessionLimit       Reason = "session_limit"        // the token's concurrent-session cap is reached
	ReasonRateLimited        Reason = "rate_limited"         // too many failed attempts
	ReasonSourceBanned       Reason = "source_banned"        // the source address is banned
	ReasonBackendUnavailable Reason = "backend_unavailable"  // Redis did not answer in time
	ReasonMethodForbidden    Reason = "method_forbidden"     // an SSH auth method we do not offer
	ReasonProxyHeaderInvalid Reason = "proxy_header_invalid" // a PROXY header missing, unwanted or malformed
	ReasonRequestForbidden   Reason = "request_forbidden"    // pty, shell, subsystem, forwarding, env
	ReasonCommandForbidden   Reason = "command_forbidden"    // an exec that is not `rsync --server`
	ReasonArgumentInvalid    Reason = "argument_invalid"     // rsync arguments that do not parse
	ReasonOptionForbidden    Reason = "option_forbidden"     // an rsync option outside the allow-list
	ReasonScopeMissing       Reason = "scope_missing"        // the token lacks the scope the transfer needs
	ReasonPathOutsideRoot    Reason = "path_outside_root"    // a path that would leave the token's root
	ReasonIssueForbidden     Reason = "issue_forbidden"      // a child token asked for more than its parent has
	ReasonSessionCut         Reason = "session_cut"          // a live session ended by revocation or expiry
)

// Denial is a refusal that is policy, not breakage. Message is the one line
// the client is shown; it never contains a secret.
type Denial struct {
	Reason  Reason
	Message string
	// Cause is the system fault behind a backend_unavailable denial. It is
	// logged, never shown to the client.
	Cause error
}

// Deny builds a Denial with a formatted client message.
func Deny(reason Reason, format string, args ...any) *Denial {
	return &Denial{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

func (d *Denial) Error() string { return d.Message }

// Unwrap exposes the underlying fault, if any.
func (d *Denial) Unwrap() error { return d.Cause }
