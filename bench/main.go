// Command bench compares tokengate with OpenSSH serving the same rsync
// transfers on 127.0.0.1: the gateway (`gateway serve` with its own
// redis-server and a token) and a throwaway sshd whose forced command is
// rrsync, both reached by the stock rsync and ssh clients. It prints a
// table of gateway/OpenSSH ratios of medians and writes it as JSON.
//
// bench/run.sh installs what it needs, builds it and runs it; `make bench`
// calls that. BENCH_QUICK=1 makes a smoke-test run of a few minutes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// scale is how much each case does; the quick mode shrinks it.
type scale struct {
	BigSize     int64 `json:"big_file_bytes"`
	BigRuns     int   `json:"big_file_runs"`
	SmallFiles  int   `json:"small_files"`
	Runs        int   `json:"small_files_runs"`
	TinyRuns    int   `json:"tiny_runs"`
	Concurrent  int   `json:"concurrent_sessions"`
	ConcRuns    int   `json:"concurrent_runs"`
	Idle        int   `json:"idle_sessions"`
	SSHIdle     int   `json:"openssh_idle_sessions"`
	TokenChecks int   `json:"token_checks"`
}

var (
	fullScale = scale{BigSize: 1 << 30, BigRuns: 3, SmallFiles: 20000, Runs: 5, TinyRuns: 50,
		Concurrent: 200, ConcRuns: 3, Idle: 1000, SSHIdle: 200, TokenChecks: 2000}
	quickScale = scale{BigSize: 64 << 20, BigRuns: 3, SmallFiles: 2000, Runs: 3, TinyRuns: 20,
		Concurrent: 50, ConcRuns: 1, Idle: 200, SSHIdle: 50, TokenChecks: 500}
)

type options struct {
	gateway string // the gateway binary
	work    string // scratch dir, removed at the end
	out     string // JSON results
	quick   bool
}

// bench is one run: the processes it started and what it found.
type bench struct {
	opts  options
	scale scale
	work  string
	procs []*proc

	redisAddr   string
	gw, sshd    *proc
	gwPort      int
	sshPort     int
	opsAddr     string
	gwStarts    int
	token       string
	sshKey      string
	madeRunSSHD bool

	report *report
}

func main() {
	var o options
	flag.StringVar(&o.gateway, "gateway", "bin/gateway", "the gateway binary to measure")
	flag.StringVar(&o.work, "work", "", "scratch directory (default: a new temporary one)")
	flag.StringVar(&o.out, "out", "bench/results.json", "where to write the JSON results")
	flag.BoolVar(&o.quick, "quick", os.Getenv("BENCH_QUICK") == "1",
		"smoke-test sizes (also BENCH_QUICK=1)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	started := time.Now()
	b := &bench{opts: o, scale: fullScale, report: &report{Mode: "full"}}
	limit := 60 * time.Minute
	if o.quick {
		b.scale, b.report.Mode, limit = quickScale, "quick", 10*time.Minute
	}
	// A backstop: every client run has its own, shorter bound.
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	b.report.Scale = b.scale
	b.report.StartedAt = started.UTC().Format(time.RFC3339)
	b.report.Machine = describeMachine()

	if err := checkTools(); err != nil {
		return err
	}
	gw, err := filepath.Abs(o.gateway)
	if err != nil {
		return err
	}
	b.opts.gateway = gw
	if err := b.makeWork(); err != nil {
		return err
	}
	b.report.WorkFS = mountOf(b.work)
	// Deferred in this order so that processes stop before their files go.
	defer os.RemoveAll(b.work)
	defer b.stopAll()

	if err := b.setUp(ctx); err != nil {
		return err
	}
	b.runCases(ctx)

	b.report.Machine.LoadAvgEnd = firstLine(readString("/proc/loadavg"))
	b.report.DurationS = time.Since(started).Seconds()
	b.report.printTable(os.Stdout)
	if err := b.report.writeJSON(o.out); err != nil {
		return err
	}
	fmt.Printf("\nresults written to %s (%.0f s)\n", o.out, b.report.DurationS)
	return ctx.Err()
}

func checkTools() error {
	for _, tool := range []string{"rsync", "ssh", "ssh-keygen", "sshpass", "redis-server",
		"/usr/sbin/sshd", "/usr/bin/rrsync", "/usr/bin/setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing; bench/run.sh installs what is needed", tool)
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: the gateway jails each session and sshd needs root")
	}
	return nil
}

// makeWork creates the scratch dir. rrsync runs as the jail's uid, so the
// dir and every one above it must let others through.
func (b *bench) makeWork() error {
	var err error
	if b.opts.work == "" {
		b.work, err = os.MkdirTemp("", "tokengate-bench-")
	} else {
		b.work, err = filepath.Abs(b.opts.work)
		if err == nil {
			err = os.MkdirAll(b.work, 0o711)
		}
	}
	if err != nil {
		return err
	}
	if err := os.Chmod(b.work, 0o711); err != nil {
		return err
	}
	for dir := filepath.Dir(b.work); ; dir = filepath.Dir(dir) {
		info, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is not searchable by others (the jail uid); "+
				"chmod o+x it or pick another -work", dir)
		}
		if dir == "/" {
			return nil
		}
	}
}

// setUp writes the data, starts redis-server, the gateway and sshd, makes
// the token and seeds both servers' roots.
func (b *bench) setUp(ctx context.Context) error {
	b.say("generating %s file and %d small files", sizeLabel(b.scale.BigSize),
		b.scale.SmallFiles)
	if err := b.makeData(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(b.work, "gw", "data"), 0o755); err != nil {
		return err
	}
	b.say("starting redis-server, the gateway and sshd on 127.0.0.1")
	if err := b.startRedis(); err != nil {
		return err
	}
	if err := b.startGateway(); err != nil {
		return err
	}
	if err := b.createToken(ctx); err != nil {
		return err
	}
	if err := b.startSSHD(ctx); err != nil {
		return err
	}
	for _, s := range b.sides() {
		if err := seed(s.root, filepath.Join(b.work, "src")); err != nil {
			return err
		}
		// rsync makes only the last directory of a destination.
		if err := os.MkdirAll(filepath.Join(b.work, "dst", s.name), 0o755); err != nil {
			return err
		}
	}
	// Both sides must work before anything is timed.
	for _, s := range b.sides() {
		dir := b.dst(s, "smoke")
		if _, err := s.rsync(ctx, "", tinyTimeout, "-a", s.remote("seed/tiny.bin"),
			dir+"/"); err != nil {
			return fmt.Errorf("smoke test: %w", err)
		}
		_ = os.RemoveAll(dir)
	}
	return nil
}

func (b *bench) runCases(ctx context.Context) {
	b.say("case 1: %s file, push and pull, per cipher", sizeLabel(b.scale.BigSize))
	b.caseThroughput(ctx)
	b.say("cases 2 and 3: %d small files, push and pull, then with no change",
		b.scale.SmallFiles)
	b.caseSmallFiles(ctx)
	b.say("case 4: one tiny file, %d runs per side", b.scale.TinyRuns)
	b.caseTiny(ctx)
	if m, err := b.scrape(ctx); err == nil {
		defer func() {
			if b.report.TokenCheck != nil {
				b.report.TokenCheck.InGateway = histogram(m,
					"tokengate_redis_call_duration_seconds")
			}
		}()
	}
	b.say("case 4: token check against redis-server, %d samples", b.scale.TokenChecks)
	tc, err := b.measureTokenCheck(ctx, b.scale.TokenChecks)
	if err != nil {
		b.report.Errors = append(b.report.Errors, "token check: "+err.Error())
	}
	b.report.TokenCheck = tc
	b.say("case 5: %d concurrent tiny pulls, %d runs per side", b.scale.Concurrent,
		b.scale.ConcRuns)
	b.caseConcurrent(ctx)
	b.say("case 6: %d idle sessions on a fresh gateway", b.scale.Idle)
	b.report.Idle = b.caseIdle(ctx)
}

// say prints progress on stderr.
func (b *bench) say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// progress prints a finished row on stderr.
func (b *bench) progress(r row) {
	b.say("  %s [%s]: gateway %s, openssh %s, ratio %s", r.Name, dash(r.Cipher),
		cell(r.Gateway), cell(r.OpenSSH), ratioCell(r))
}
