package auth

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"
)

// Feed tells a gateway when a token with live sessions stops being valid.
// It listens on the revocation channel for speed, and re-checks every live
// token each Interval for what a broadcast cannot carry: a plain redis-cli
// DEL, or a message published while this gateway was reconnecting.
type Feed struct {
	Store    *Store
	Interval time.Duration // default 500ms
	Log      *logrus.Logger
	Now      func() time.Time
}

// Run blocks until ctx ends. tokens lists the IDs with live sessions;
// onChange is called with an ID and its new state (revoked or expired).
func (f *Feed) Run(ctx context.Context, tokens func() []string,
	onChange func(id string, state State)) {
	interval := f.Interval
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	now := f.Now
	if now == nil {
		now = time.Now
	}

	sub := f.Store.Client().Subscribe(ctx, RevocationChannel)
	defer sub.Close()
	messages := sub.Channel()

	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-messages:
			if !ok {
				return
			}
			if ValidID(msg.Payload) {
				onChange(msg.Payload, StateRevoked)
			}
		case <-tick.C:
			ids := tokens()
			if len(ids) == 0 {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, interval)
			states, err := f.Store.States(cctx, ids, now())
			cancel()
			if err != nil {
				// Live sessions keep running while Redis is away; new
				// logins are refused meanwhile, so nothing widens.
				f.Log.WithError(err).Debug("auth: revocation recheck: redis unavailable")
				continue
			}
			for id, st := range states {
				if st != StateLive {
					onChange(id, st)
				}
			}
		}
	}
}
