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
	"strconv"
	"strings"
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
	fullScale = scale{BigSize: 1 << 30, BigRuns: 5, SmallFiles: 20000, Runs: 9, TinyRuns: 50,
		Concurrent: 200, ConcRuns: 3, Idle: 1000, SSHIdle: 200, TokenChecks: 2000}
	quickScale = scale{BigSize: 64 << 20, BigRuns: 3, SmallFiles: 2000, Runs: 3, TinyRuns: 20,
		Concurrent: 50, ConcRuns: 1, Idle: 200, SSHIdle: 50, TokenChecks: 500}
)

type options struct {
	gateway string // the gateway binary
	work    string // scratch dir, removed at the end
	out     string // JSON results
	quick   bool
	cases   map[int]bool
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
	only := flag.String("cases", os.Getenv("BENCH_CASES"),
		"comma-separated cases to run, e.g. 1,4 (default all; also BENCH_CASES)")
	flag.Parse()
	cases, err := parseCases(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: -cases:", err)
		os.Exit(2)
	}
	o.cases = cases

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	started := time.Now()
	b := &bench{opts: o, scale: fullScale,
		report: &report{Mode: "full", Setup: map[string]string{}}}
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

// parseCases reads "1,4,6"; empty means every case.
func parseCases(list string) (map[int]bool, error) {
	out := map[int]bool{}
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil || n < 1 || n > 6 {
			return nil, fmt.Errorf("%q is not a case (1-6)", part)
		}
		out[n] = true
	}
	if len(out) == 0 {
		for n := 1; n <= 6; n++ {
			out[n] = true
		}
	}
	return out, nil
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
	for _, dir := range []string{filepath.Join(b.work, "gw", "data"), b.logs()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
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
	for _, s := range b.sides() {
		b.report.Setup["client_"+s.name] = strings.Join(s.sshArgv("", false), " ")
	}
	neg, _, err := b.negotiateBoth(ctx, "")
	b.report.Negotiated = neg
	return err
}

func (b *bench) runCases(ctx context.Context) {
	if b.opts.cases[1] {
		b.say("case 1: %s file, push and pull, per cipher", sizeLabel(b.scale.BigSize))
		b.caseThroughput(ctx)
	}
	if b.opts.cases[2] || b.opts.cases[3] {
		b.say("cases 2 and 3: %d small files, push and pull, then with no change",
			b.scale.SmallFiles)
		b.caseSmallFiles(ctx)
	}
	if b.opts.cases[4] {
		b.say("case 4: one tiny file, %d runs per side", b.scale.TinyRuns)
		b.caseTiny(ctx)
		b.say("case 4: token check against redis-server, %d samples", b.scale.TokenChecks)
		b.tokenCheck(ctx)
	}
	if b.opts.cases[5] {
		b.say("case 5: %d concurrent tiny pulls, %d runs per side", b.scale.Concurrent,
			b.scale.ConcRuns)
		b.caseConcurrent(ctx)
	}
	if b.opts.cases[6] {
		b.say("case 6: %d idle sessions on a fresh gateway", b.scale.Idle)
		b.report.Idle = b.caseIdle(ctx)
	}
	if b.failed() {
		b.report.LogTails = map[string]string{}
		for _, p := range b.procs {
			b.report.LogTails[filepath.Base(p.log)] = p.logTail()
		}
	}
}

// tokenCheck measures the token check in this process, and keeps the
// gateway's own histogram of it from the tiny-file runs.
func (b *bench) tokenCheck(ctx context.Context) {
	inGateway, _ := b.scrape(ctx)
	tc, err := b.measureTokenCheck(ctx, b.scale.TokenChecks)
	if err != nil {
		b.report.Errors = append(b.report.Errors, "token check: "+err.Error())
		return
	}
	tc.InGateway = histogram(inGateway, "tokengate_redis_call_duration_seconds")
	b.report.TokenCheck = tc
}

// failed says whether anything went wrong, so that the servers' logs are kept.
func (b *bench) failed() bool {
	for _, r := range b.report.Rows {
		if r.Error != "" {
			return true
		}
	}
	return len(b.report.Errors) > 0 || (b.report.Idle != nil && b.report.Idle.Error != "")
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
