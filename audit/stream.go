package audit

import (
	"context"
	"fmt"
	"os"

	"github.com/redis/go-redis/v9"
)

// The defaults of NewStream.
const (
	DefaultStreamKey    = "tokengate:events"
	DefaultStreamMaxLen = 100000
)

// Stream delivers encoded events to a Redis stream. Every gateway appends to
// the same key, so one consumer (a SIEM forwarder reading with XREAD or a
// consumer group) sees the whole fleet in order of arrival. Each entry has
// two fields: event, the JSON document, and host, the gateway that sent it,
// so a consumer can filter by gateway without parsing the JSON.
//
// Put it behind a Queue: Deliver waits on Redis.
type Stream struct {
	// Host is the host field of every entry; NewStream sets it to
	// os.Hostname. Change it, if at all, before the first Deliver.
	Host string

	rdb    redis.UniversalClient
	key    string
	maxLen int64
}

// NewStream appends to key (DefaultStreamKey when empty) and keeps the
// stream near maxLen entries (DefaultStreamMaxLen when not positive), so an
// absent consumer cannot fill Redis's memory.
func NewStream(rdb redis.UniversalClient, key string, maxLen int64) *Stream {
	if key == "" {
		key = DefaultStreamKey
	}
	if maxLen <= 0 {
		maxLen = DefaultStreamMaxLen
	}
	host, _ := os.Hostname()
	return &Stream{Host: host, rdb: rdb, key: key, maxLen: maxLen}
}

// Deliver appends one encoded event: XADD key MAXLEN ~ maxLen * event msg
// host Host. The approximate trim lets Redis drop whole internal nodes, which
// costs far less than trimming to the exact length on every append.
func (s *Stream) Deliver(ctx context.Context, msg []byte) error {
	err := s.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: s.key,
		MaxLen: s.maxLen,
		Approx: true,
		ID:     "*",
		Values: []any{"event", msg, "host", s.Host},
	}).Err()
	if err != nil {
		return fmt.Errorf("audit: sink stream: XADD %s: %w", s.key, err)
	}
	return nil
}
