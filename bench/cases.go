package main

import (
	"context"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// The AEAD ciphers case 1 also forces with the OpenSSH client's -c.
const (
	cipherAES128GCM = "aes128-gcm@openssh.com"
	cipherAES256GCM = "aes256-gcm@openssh.com"
	cipherChaCha20  = "chacha20-poly1305@openssh.com"
)

// Bounds on one client run; a run past them is killed and counted as failed.
const (
	bigTimeout   = 15 * time.Minute
	smallTimeout = 5 * time.Minute
	tinyTimeout  = 2 * time.Minute
)

// row is one line of the table: one measurement on both sides.
type row struct {
	Case       int                   `json:"case"`
	Name       string                `json:"name"`
	Cipher     string                `json:"cipher,omitempty"`
	Gateway    *series               `json:"gateway,omitempty"`
	OpenSSH    *series               `json:"openssh,omitempty"`
	Negotiated map[string]negotiated `json:"negotiated,omitempty"`
	// Ratio is the gateway's median over OpenSSH's (lower is better), with
	// its 90% bootstrap interval.
	Ratio   *float64  `json:"ratio,omitempty"`
	RatioCI []float64 `json:"ratio_ci90,omitempty"`
	Target  string    `json:"target,omitempty"`
	Pass    *bool     `json:"pass,omitempty"`
	NA      string    `json:"na,omitempty"`
	Error   string    `json:"error,omitempty"`
}

func (b *bench) sides() [2]*side { return [2]*side{b.gatewaySide(), b.opensshSide()} }

// dst is a client-side destination directory of one side.
func (b *bench) dst(s *side, name string) string {
	return filepath.Join(b.work, "dst", s.name, name)
}

func (b *bench) src(name string) string { return filepath.Join(b.work, "src", name) }

// addPair measures one step on both sides and adds its row. A ratio at or
// under maxRatio passes; bytes, when set, also gives each side's MB/s.
func (b *bench) addPair(ctx context.Context, r row, runs int, st step, maxRatio float64,
	bytes int64) {
	if r.NA == "" {
		got, err := runPairs(ctx, runs, b.sides(), st)
		r.Gateway, r.OpenSSH = got[0], got[1]
		if err != nil {
			r.Error = err.Error()
		}
		if bytes > 0 {
			for _, s := range got {
				if s.Median > 0 {
					s.MBps = float64(bytes) / 1e6 / s.Median
				}
			}
		}
		b.judge(&r, maxRatio)
	}
	b.report.Rows = append(b.report.Rows, r)
	b.progress(r)
}

// judge sets the ratio and, when there is a target, the verdict.
func (b *bench) judge(r *row, maxRatio float64) {
	if r.Gateway == nil || r.OpenSSH == nil {
		return
	}
	if q := ratio(r.Gateway.Median, r.OpenSSH.Median); !math.IsNaN(q) && len(r.Gateway.Runs) > 0 &&
		len(r.OpenSSH.Runs) > 0 {
		r.Ratio = &q
		lo, hi := ratioInterval(r.Gateway.Runs, r.OpenSSH.Runs)
		r.RatioCI = []float64{lo, hi}
		if maxRatio > 0 {
			pass := q <= maxRatio && r.Gateway.Failures == 0 && r.OpenSSH.Failures == 0
			r.Pass = &pass
		}
	}
}

// caseThroughput is case 1: one big file pushed and pulled, with the
// clients' default cipher and with each AEAD cipher forced.
func (b *bench) caseThroughput(ctx context.Context) {
	size := b.scale.BigSize
	label := sizeLabel(size) + " file"
	for _, cipher := range []string{"", cipherAES128GCM, cipherAES256GCM, cipherChaCha20} {
		name := cipher
		if name == "" {
			name = "default"
		}
		neg, na, err := b.negotiateBoth(ctx, cipher)
		base := row{Case: 1, Cipher: name, Negotiated: neg, NA: na, Target: "<= 1.00"}
		if err != nil {
			base.Error = err.Error()
			base.NA = "negotiation failed"
		}

		push := base
		push.Name = label + " push"
		b.addPair(ctx, push, b.scale.BigRuns, step{
			prep: func(s *side) error { return os.RemoveAll(filepath.Join(s.root, "push-big")) },
			timed: func(ctx context.Context, s *side) (time.Duration, error) {
				return s.rsync(ctx, cipher, bigTimeout, "-a", b.src("big.bin"), s.remote("push-big/"))
			},
			check: func(s *side) error {
				return hasSize(filepath.Join(s.root, "push-big", "big.bin"), size)
			},
		}, 1.00, size)
		for _, s := range b.sides() {
			_ = os.RemoveAll(filepath.Join(s.root, "push-big"))
		}

		pull := base
		pull.Name = label + " pull"
		b.addPair(ctx, pull, b.scale.BigRuns, step{
			prep: func(s *side) error { return os.RemoveAll(b.dst(s, "big")) },
			timed: func(ctx context.Context, s *side) (time.Duration, error) {
				return s.rsync(ctx, cipher, bigTimeout, "-a", s.remote("seed/big.bin"),
					b.dst(s, "big")+"/")
			},
			check: func(s *side) error { return hasSize(filepath.Join(b.dst(s, "big"), "big.bin"), size) },
		}, 1.00, size)
		for _, s := range b.sides() {
			_ = os.RemoveAll(b.dst(s, "big"))
		}
	}
}

// negotiateBoth probes one cipher on both sides; na names a side that
// refuses it.
func (b *bench) negotiateBoth(ctx context.Context, cipher string) (map[string]negotiated,
	string, error) {
	neg := map[string]negotiated{}
	na := ""
	for _, s := range b.sides() {
		n, err := s.negotiate(ctx, cipher)
		if err != nil {
			return neg, "", err
		}
		neg[s.name] = n
		if n.Refused != "" && na == "" {
			na = s.name + " does not offer " + cipher
		}
	}
	return neg, na, nil
}

// caseSmallFiles is cases 2 and 3: the small files' tree pushed and pulled
// into an empty destination, then again with nothing changed.
func (b *bench) caseSmallFiles(ctx context.Context) {
	n := b.scale.SmallFiles
	label := fmt.Sprintf("%d small files", n)
	runs := b.scale.Runs
	pushTo := func(s *side) string { return filepath.Join(s.root, "push-small") }
	push := func(ctx context.Context, s *side) (time.Duration, error) {
		return s.rsync(ctx, "", smallTimeout, "-a", b.src("small")+"/", s.remote("push-small/"))
	}
	pull := func(ctx context.Context, s *side) (time.Duration, error) {
		return s.rsync(ctx, "", smallTimeout, "-a", s.remote("seed/small/"), b.dst(s, "small")+"/")
	}

	b.addPair(ctx, row{Case: 2, Name: label + " push", Target: "<= 1.00"}, runs, step{
		prep:  func(s *side) error { return os.RemoveAll(pushTo(s)) },
		timed: push,
		check: func(s *side) error { return hasFiles(pushTo(s), n) },
	}, 1.00, 0)
	b.addPair(ctx, row{Case: 3, Name: label + " push, no change", Target: "<= 1.00"}, runs,
		step{timed: push}, 1.00, 0)
	b.addPair(ctx, row{Case: 2, Name: label + " pull", Target: "<= 1.00"}, runs, step{
		prep:  func(s *side) error { return os.RemoveAll(b.dst(s, "small")) },
		timed: pull,
		check: func(s *side) error { return hasFiles(b.dst(s, "small"), n) },
	}, 1.00, 0)
	b.addPair(ctx, row{Case: 3, Name: label + " pull, no change", Target: "<= 1.00"}, runs,
		step{timed: pull}, 1.00, 0)

	for _, s := range b.sides() {
		_ = os.RemoveAll(pushTo(s))
		_ = os.RemoveAll(b.dst(s, "small"))
	}
}

// caseTiny is case 4: the time to a finished rsync of one tiny file.
func (b *bench) caseTiny(ctx context.Context) {
	// One finished rsync of one tiny file: connection, handshake, login,
	// rsync start, transfer, exit.
	st := func(s *side) string { return b.dst(s, "tiny") }
	tiny := step{
		prep: func(s *side) error { return os.RemoveAll(st(s)) },
		timed: func(ctx context.Context, s *side) (time.Duration, error) {
			return s.rsync(ctx, "", tinyTimeout, "-a", s.remote("seed/tiny.bin"), st(s)+"/")
		},
	}
	// Two untimed rounds first: the binaries and the seed in the page cache.
	_, _ = runPairs(ctx, 2, b.sides(), tiny)

	r := row{Case: 4, Name: "one tiny file, pull (median; p99 shown)", Target: "<= 1.00"}
	got, err := runPairs(ctx, b.scale.TinyRuns, b.sides(), tiny)
	for _, s := range got {
		s.finish(true)
	}
	r.Gateway, r.OpenSSH = got[0], got[1]
	if err != nil {
		r.Error = err.Error()
	}
	b.judge(&r, 1.00)
	b.report.Rows = append(b.report.Rows, r)
	b.progress(r)
}

// caseConcurrent is case 5: many tiny pulls at once, first all from
// 127.0.0.1, then each from its own loopback address as separate clients
// would be (the gateway caps logins in progress per source address). It
// runs on a freshly started gateway so that its peak memory is this case's.
func (b *bench) caseConcurrent(ctx context.Context) {
	if err := b.restartGateway(); err != nil {
		b.report.Rows = append(b.report.Rows, row{Case: 5, Name: "concurrent tiny pulls",
			Error: err.Error()})
		return
	}
	n := b.scale.Concurrent
	for _, spread := range []bool{false, true} {
		r := row{Case: 5, Name: fmt.Sprintf("%d concurrent tiny pulls, one source", n),
			Target: "no failures"}
		if spread {
			r.Name = fmt.Sprintf("%d concurrent tiny pulls, %d sources", n, n)
		}
		got := [2]*series{{}, {}}
		for i := range b.scale.ConcRuns {
			sides := b.sides()
			order := []int{0, 1}
			if i%2 == 1 {
				order = []int{1, 0}
			}
			for _, k := range order {
				if ctx.Err() != nil {
					break
				}
				server := b.gw
				if k == 1 {
					server = b.sshd
				}
				err := b.concurrentOnce(ctx, sides[k], server, n, spread, got[k])
				if err != nil && r.Error == "" {
					r.Error = err.Error()
				}
			}
		}
		for _, s := range got {
			s.finish(false)
		}
		r.Gateway, r.OpenSSH = got[0], got[1]
		b.judge(&r, 0)
		pass := got[0].Failures == 0 && len(got[0].Runs) > 0
		r.Pass = &pass
		b.report.Rows = append(b.report.Rows, r)
		b.progress(r)
	}
}

// concurrentOnce starts n clients at once and waits for the last one. The
// run's time is the wall time to the last exit; failed clients are counted.
func (b *bench) concurrentOnce(ctx context.Context, s *side, server *proc, n int,
	spread bool, out *series) error {
	base := b.dst(s, "conc")
	if err := os.RemoveAll(base); err != nil {
		return err
	}
	if err := os.Mkdir(base, 0o755); err != nil {
		return err
	}
	_ = resetPeak(server.pid())
	sampler := samplePeaks(server.pid(), 100*time.Millisecond)

	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed int
	var first error
	var errs []error
	started := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dir := filepath.Join(base, fmt.Sprint(i))
			source := ""
			if spread {
				source = fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250)
			}
			_, err := s.rsyncFrom(ctx, source, "", 3*time.Minute, "-a",
				s.remote("seed/tiny.bin"), dir+"/")
			if err == nil {
				err = hasSize(filepath.Join(dir, "tiny.bin"), -1)
			}
			if err != nil {
				mu.Lock()
				failed++
				errs = append(errs, err)
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	took := time.Since(started)
	selfPeak, treePeak := sampler.finish()
	if hwm, err := statusKiB(server.pid(), "VmHWM"); err == nil {
		selfPeak = max(selfPeak, hwm)
	}

	out.Runs = append(out.Runs, took.Seconds())
	for _, err := range errs {
		out.fail(err)
	}
	out.PeakRSSKiB = max(out.PeakRSSKiB, selfPeak)
	out.TreePeakRSSKiB = max(out.TreePeakRSSKiB, treePeak)
	_ = os.RemoveAll(base)
	if first != nil {
		return fmt.Errorf("%d of %d failed; first: %w", failed, n, first)
	}
	return nil
}

// hasSize checks a file's size; a negative size only checks it exists.
func hasSize(path string, size int64) error {
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	if size >= 0 && info.Size() != size {
		return fmt.Errorf("%s: %d bytes, want %d", path, info.Size(), size)
	}
	return nil
}

// hasFiles checks that a tree holds n regular files.
func hasFiles(dir string, n int) error {
	count := 0
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			count++
		}
		return err
	})
	if err != nil {
		return err
	}
	if count != n {
		return fmt.Errorf("%s: %d files, want %d", dir, count, n)
	}
	return nil
}

func sizeLabel(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}
