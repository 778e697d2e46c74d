package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// EncodeJSON renders one event as the JSON document a SIEM receives. It holds
// the same flat, dotted ECS names as the event's log line, so one search works
// on both; the keys come out sorted, so equal events encode to equal bytes.
func EncodeJSON(e Event, at time.Time, host string) []byte {
	doc := e.LogFields()
	doc["@timestamp"] = at.UTC().Format(time.RFC3339Nano)
	doc["log.level"] = levelOf(e.Outcome)
	doc["message"] = RedactTokens(e.Message)
	if e.Message == "" {
		doc["message"] = e.Action
	}
	if host != "" {
		doc["host.name"] = host
	}

	// logrus writes an error field as its text; an error's JSON is "{}".
	for k, v := range doc {
		if err, ok := v.(error); ok {
			doc[k] = err.Error()
		}
	}

	out, err := marshal(doc)
	if err != nil {
		// A field that JSON cannot hold (a NaN, a channel) must not cost
		// the whole event, so only that field falls back to its text.
		for k, v := range doc {
			if _, err := marshal(v); err != nil {
				doc[k] = fmt.Sprint(v)
			}
		}
		out, _ = marshal(doc)
	}
	return out
}

// levelOf is the log.level the Emitter gives an event with this outcome.
func levelOf(outcome string) string {
	if outcome == "failure" {
		return "warning"
	}
	return "info"
}

// marshal is json.Marshal without HTML escaping, so a message such as
// "a < b" reaches the SIEM as written rather than as "a \u003c b".
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// header is the part of an encoded event that a transport reads back to fill
// its own message header.
type header struct {
	Timestamp string `json:"@timestamp"`
	Outcome   string `json:"event.outcome"`
	Action    string `json:"event.action"`
}

// decodeHeader reads the time, outcome and action back from EncodeJSON's
// output. A document without a valid time gets the zero time.
func decodeHeader(msg []byte) (at time.Time, outcome, action string, err error) {
	var h header
	if err := json.Unmarshal(msg, &h); err != nil {
		return time.Time{}, "", "", err
	}
	at, _ = time.Parse(time.RFC3339Nano, h.Timestamp)
	return at, h.Outcome, h.Action, nil
}
