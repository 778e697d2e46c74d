package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
)

// report is everything one run found; it is written as JSON so that runs
// can be compared over time.
type report struct {
	Mode      string  `json:"mode"`
	StartedAt string  `json:"started_at"`
	DurationS float64 `json:"duration_s"`
	Machine   machine `json:"machine"`
	Scale     scale   `json:"scale"`
	// WorkFS is the filesystem the data lived on (tmpfs unless it lacked room).
	WorkFS string `json:"work_fs"`
	// Setup is how the servers were started and reached, for comparing runs.
	Setup      map[string]string     `json:"setup"`
	Negotiated map[string]negotiated `json:"negotiated_default"`
	Rows       []row                 `json:"rows"`
	TokenCheck *tokenCheck           `json:"token_check,omitempty"`
	Idle       *idleResult           `json:"idle,omitempty"`
	Errors     []string              `json:"errors,omitempty"`
	// LogTails are the ends of the servers' logs, kept when something failed.
	LogTails map[string]string `json:"log_tails,omitempty"`
}

// machine is what the numbers were measured on.
type machine struct {
	CPU          string            `json:"cpu"`
	Cores        int               `json:"cores"`
	AESNI        bool              `json:"aes_instructions"`
	Kernel       string            `json:"kernel"`
	OS           string            `json:"os"`
	MemTotalKiB  int64             `json:"mem_total_kib"`
	LoadAvgStart string            `json:"loadavg_start"`
	LoadAvgEnd   string            `json:"loadavg_end"`
	Versions     map[string]string `json:"versions"`
}

func describeMachine() machine {
	m := machine{Cores: runtime.NumCPU(), Versions: map[string]string{}}
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(cpuinfo), "\n") {
		k, v, ok := strings.Cut(line, ":")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !ok:
		case k == "model name" && m.CPU == "":
			m.CPU = v
		case k == "flags" && !m.AESNI:
			m.AESNI = strings.Contains(" "+v+" ", " aes ")
		}
	}
	m.Kernel = firstLine(readString("/proc/sys/kernel/osrelease"))
	for _, line := range strings.Split(readString("/etc/os-release"), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			m.OS = strings.Trim(v, `"`)
		}
	}
	m.MemTotalKiB, _ = fieldKiB("/proc/meminfo", "MemTotal")
	m.LoadAvgStart = firstLine(readString("/proc/loadavg"))
	m.Versions["go"] = runtime.Version()
	for name, argv := range map[string][]string{
		"rsync":        {"rsync", "--version"},
		"ssh":          {"ssh", "-V"},
		"sshd":         {"/usr/sbin/sshd", "-V"},
		"redis-server": {"redis-server", "--version"},
		"sshpass":      {"sshpass", "-V"},
		"gateway":      {"git", "describe", "--always", "--dirty"},
	} {
		out, _ := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		m.Versions[name] = firstLine(string(out))
	}
	return m
}

// mountOf names the filesystem holding path: "tmpfs on /dev/shm".
func mountOf(path string) string {
	best, fsType := "", "?"
	for _, line := range strings.Split(readString("/proc/mounts"), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mp := f[1]
		inside := path == mp || strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/")
		if inside && len(mp) >= len(best) {
			best, fsType = mp, f[2]
		}
	}
	return fsType + " on " + best
}

func readString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(line)
}

// writeJSON writes the report to path, through a temporary file.
func (r *report) writeJSON(path string) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// printTable writes the human summary.
func (r *report) printTable(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "\ntokengate bench (%s mode), %s\n", r.Mode, r.StartedAt)
	fmt.Fprintf(w, "machine: %s, %d cores, AES instructions: %v, kernel %s, %s, %d MiB RAM\n",
		m.CPU, m.Cores, m.AESNI, m.Kernel, m.OS, m.MemTotalKiB>>10)
	fmt.Fprintf(w, "load average at start: %s; at end: %s\n", m.LoadAvgStart, m.LoadAvgEnd)
	fmt.Fprintf(w, "data on %s; clients and servers share the same cores\n", r.WorkFS)
	fmt.Fprintf(w, "versions: %s; %s; %s; gateway %s\n", m.Versions["rsync"], m.Versions["ssh"],
		m.Versions["redis-server"], m.Versions["gateway"])
	for _, side := range []string{"gateway", "openssh"} {
		n := r.Negotiated[side]
		fmt.Fprintf(w, "default negotiation, %s: kex %s, cipher %s, MAC %s\n", side, n.Kex,
			n.Cipher, n.MAC)
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "case\tmeasurement\tcipher\tgateway\topenssh\tgw/ossh [90% CI]\ttarget\tverdict")
	for _, rw := range r.Rows {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", rw.Case, rw.Name, dash(rw.Cipher),
			cell(rw.Gateway), cell(rw.OpenSSH), ratioCell(rw), dash(rw.Target), verdict(rw))
	}
	if tc := r.TokenCheck; tc != nil {
		fmt.Fprintf(tw, "4\ttoken check (limiter+verify+lease), p99\t-\t%.2f ms (p50 %.2f)\t"+
			"PING %.2f ms (p50 %.2f)\t+%.2f ms\t< +1 ms\t%s\n", tc.CheckP99Ms, tc.CheckP50Ms,
			tc.PingP99Ms, tc.PingP50Ms, tc.AddedP99Ms, passWord(tc.Pass))
		fmt.Fprintf(tw, "4\tverify alone, p99\t-\t%.2f ms (p50 %.2f)\tPING %.2f ms\t+%.2f ms\t-\t-\n",
			tc.VerifyP99Ms, tc.VerifyP50Ms, tc.PingP99Ms, tc.VerifyAddedP99Ms)
	}
	if id := r.Idle; id != nil {
		fmt.Fprintf(tw, "6\t%d idle logged-in connections: RSS per session\t-\t%.1f KiB "+
			"(%.1f with a channel)\t%.0f KiB PSS (%d logins)\t-\t< 100 KiB\t%s\n", id.Sessions,
			id.PerSessionKiB, id.PerWithChannelKiB, id.OpenSSHPerKiB, id.OpenSSHSessions,
			passWord(id.Pass))
	}
	tw.Flush()
	fmt.Fprintln(w, "~: the ratio's 90% bootstrap interval holds 1.00: "+
		"the difference is within the noise")
	for _, rw := range r.Rows {
		if rw.Error != "" {
			fmt.Fprintf(w, "case %d %s: error: %s\n", rw.Case, rw.Name, rw.Error)
		}
	}
	if id := r.Idle; id != nil && id.Error != "" {
		fmt.Fprintf(w, "case 6: error: %s\n", id.Error)
	}
	for _, e := range r.Errors {
		fmt.Fprintln(w, "error:", e)
	}
}

// cell prints one side's result: median (throughput, p99, failures, peaks).
func cell(s *series) string {
	if s == nil {
		return "n/a"
	}
	if len(s.Runs) == 0 {
		return fmt.Sprintf("no run (%d failed)", s.Failures)
	}
	out := duration(s.Median)
	var extra []string
	if s.MBps > 0 {
		extra = append(extra, fmt.Sprintf("%.0f MB/s", s.MBps))
	}
	if s.P99 > 0 {
		extra = append(extra, "p99 "+duration(s.P99))
	}
	if s.PeakRSSKiB > 0 {
		extra = append(extra, fmt.Sprintf("peak %.1f MiB, tree %.0f MiB",
			float64(s.PeakRSSKiB)/1024, float64(s.TreePeakRSSKiB)/1024))
	}
	if s.Failures > 0 {
		extra = append(extra, fmt.Sprintf("%d FAILED", s.Failures))
	}
	if len(extra) > 0 {
		out += " (" + strings.Join(extra, ", ") + ")"
	}
	return out
}

func duration(sec float64) string {
	if math.IsNaN(sec) {
		return "-"
	}
	if sec < 1 {
		return fmt.Sprintf("%.1f ms", sec*1000)
	}
	return fmt.Sprintf("%.2f s", sec)
}

func ratioCell(r row) string {
	if r.Ratio == nil {
		return "n/a"
	}
	if len(r.RatioCI) == 2 {
		return fmt.Sprintf("%.2f [%.2f-%.2f]", *r.Ratio, r.RatioCI[0], r.RatioCI[1])
	}
	return fmt.Sprintf("%.2f", *r.Ratio)
}

// verdict is pass or MISS on the medians; "~" marks a verdict the noise could
// flip: the ratio's interval holds the 1.00 target.
func verdict(r row) string {
	switch {
	case r.NA != "":
		return "n/a: " + r.NA
	case r.Pass == nil:
		return "-"
	}
	out := passWord(*r.Pass)
	if strings.HasPrefix(r.Target, "<=") && len(r.RatioCI) == 2 && r.RatioCI[0] <= 1 &&
		r.RatioCI[1] > 1 {
		out += " ~"
	}
	return out
}

func passWord(ok bool) string {
	if ok {
		return "pass"
	}
	return "MISS"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
