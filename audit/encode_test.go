package audit

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"
)

func TestEncodeJSON(t *testing.T) {
	at := time.Date(2026, 12, 4, 16, 40, 1, 200000000, time.FixedZone("CET", 3600))
	for _, tc := range []struct {
		name string
		ev   Event
		host string
		want string
	}{
		{
			name: "denial with every field",
			ev: Event{
				Action: ActionCommandDenied, Outcome: "failure", Reason: ReasonScopeMissing,
				Message: "token 3k9w0c2hx1ab lacks write scope", TokenID: "3k9w0c2hx1ab",
				User: "deploy", SourceIP: "127.0.0.1", SourcePort: 51522,
				SessionID: "9f1c2a7e4b3d5e6f",
				Fields:    map[string]any{"ssh.command": "rsync --server -logDtpre . site/"},
			},
			host: "gw1",
			want: `{"@timestamp":"2026-12-04T15:40:01.2Z","event.action":"command.denied",` +
				`"event.kind":"event","event.outcome":"failure","event.reason":"scope_missing",` +
				`"host.name":"gw1","log.level":"warning",` +
				`"message":"token 3k9w0c2hx1ab lacks write scope",` +
				`"session.id":"9f1c2a7e4b3d5e6f","source.ip":"127.0.0.1","source.port":51522,` +
				`"ssh.command":"rsync --server -logDtpre . site/",` +
				`"token.id":"3k9w0c2hx1ab","user.name":"deploy"}`,
		},
		{
			name: "empty message reads as the action, as in the log line",
			ev:   Event{Action: ActionSessionStart, Outcome: "success"},
			want: `{"@timestamp":"2026-12-04T15:40:01.2Z","event.action":"session.start",` +
				`"event.kind":"event","event.outcome":"success","log.level":"info",` +
				`"message":"session.start"}`,
		},
		{
			name: "no HTML escaping, errors as text",
			ev: Event{Action: ActionAuthDenied, Message: "a < b & c",
				Fields: map[string]any{"error.message": errors.New("dial: refused")}},
			host: "gw1",
			want: `{"@timestamp":"2026-12-04T15:40:01.2Z","error.message":"dial: refused",` +
				`"event.action":"auth.denied","event.kind":"event","host.name":"gw1",` +
				`"log.level":"info","message":"a < b & c"}`,
		},
		{
			name: "a field JSON cannot hold becomes text, the rest stays",
			ev: Event{Action: ActionSessionEnd,
				Fields: map[string]any{"bytes.in": 7, "ratio": math.NaN()}},
			want: `{"@timestamp":"2026-12-04T15:40:01.2Z","bytes.in":7,` +
				`"event.action":"session.end","event.kind":"event","log.level":"info",` +
				`"message":"session.end","ratio":"NaN"}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(EncodeJSON(tc.ev, at, tc.host))
			if got != tc.want {
				t.Errorf("EncodeJSON =\n%s\nwant\n%s", got, tc.want)
			}
			if !json.Valid([]byte(got)) {
				t.Error("not valid JSON")
			}
		})
	}
}

func TestDecodeHeader(t *testing.T) {
	at := time.Date(2026, 12, 4, 15, 40, 1, 123456789, time.UTC)
	msg := EncodeJSON(Event{Action: ActionAuthDenied, Outcome: "failure"}, at, "gw1")
	gotAt, outcome, action, err := decodeHeader(msg)
	if err != nil || !gotAt.Equal(at) || outcome != "failure" || action != ActionAuthDenied {
		t.Errorf("decodeHeader = %v %q %q %v", gotAt, outcome, action, err)
	}
	if _, _, _, err := decodeHeader([]byte("not json")); err == nil {
		t.Error("decodeHeader accepted non-JSON")
	}
}
