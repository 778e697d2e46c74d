package proxy

import (
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
)

// The byte pump's copy path (copyCounting and its pooled buffer), in both
// of its directions: out of rsync's stdout pipe into the SSH channel, and
// out of the channel into rsync's stdin pipe. The SSH side is stood in for
// by a reader that hands out channel-packet-sized reads and a writer that
// only counts, so what is measured is the pump, not the cipher.

// pumpTotal is what one benchmark operation moves.
const pumpTotal = 8 << 20

// pumpSink counts what it is given and drops it, as a writer that hides
// every optional interface would.
type pumpSink struct{ n int64 }

func (s *pumpSink) Write(p []byte) (int, error) {
	s.n += int64(len(p))
	return len(p), nil
}

// pumpSource hands out at most chunk bytes per Read until total, as an SSH
// channel hands out at most one packet's payload.
type pumpSource struct {
	buf  []byte
	left int
}

func newPumpSource(chunk int) *pumpSource { return &pumpSource{buf: make([]byte, chunk)} }

func (s *pumpSource) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.buf[:min(len(s.buf), s.left)])
	s.left -= n
	return n, nil
}

var pumpChunks = []int{4 << 10, 32 << 10, 256 << 10}

func chunkName(n int) string { return "chunk=" + strconv.Itoa(n>>10) + "KiB" }

// feed writes total bytes to w in writes of len(buf), then closes it. The
// caller reuses buf, so the benchmark's allocations are the pump's alone.
func feed(w io.WriteCloser, buf []byte, total int) {
	for left := total; left > 0; {
		n, err := w.Write(buf[:min(len(buf), left)])
		if err != nil {
			break
		}
		left -= n
	}
	_ = w.Close()
}

// BenchmarkPumpFromRsync is the outbound direction: rsync's stdout, an
// os.Pipe written in chunk-sized writes, copied to the channel.
func BenchmarkPumpFromRsync(b *testing.B) {
	for _, chunk := range pumpChunks {
		b.Run("os.Pipe/"+chunkName(chunk), func(b *testing.B) {
			b.SetBytes(pumpTotal)
			b.ReportAllocs()
			var active atomic.Int64 // the idle timer's last-activity clock
			chunkBuf := make([]byte, chunk)
			for b.Loop() {
				r, w, err := os.Pipe()
				if err != nil {
					b.Fatal(err)
				}
				go feed(w, chunkBuf, pumpTotal)
				var sink pumpSink
				if n := copyCounting(&sink, r, &active); n != pumpTotal {
					b.Fatalf("copied %d bytes, want %d", n, pumpTotal)
				}
				r.Close()
			}
		})
	}
}

// BenchmarkPumpToRsync is the inbound direction: channel reads of one packet
// each, copied into rsync's stdin pipe, which a reader drains.
func BenchmarkPumpToRsync(b *testing.B) {
	for _, chunk := range pumpChunks {
		b.Run("os.Pipe/"+chunkName(chunk), func(b *testing.B) {
			b.SetBytes(pumpTotal)
			b.ReportAllocs()
			var active atomic.Int64 // the idle timer's last-activity clock
			drainBuf := make([]byte, 256<<10)
			src := newPumpSource(chunk)
			for b.Loop() {
				r, w, err := os.Pipe()
				if err != nil {
					b.Fatal(err)
				}
				drained := make(chan int64)
				go func() {
					n, _ := io.CopyBuffer(&pumpSink{}, struct{ io.Reader }{r}, drainBuf)
					drained <- n
				}()
				src.left = pumpTotal
				n := copyCounting(w, src, &active)
				w.Close()
				if got := <-drained; n != pumpTotal || got != pumpTotal {
					b.Fatalf("copied %d bytes, drained %d, want %d", n, got, pumpTotal)
				}
				r.Close()
			}
		})
	}
}

// BenchmarkPumpNetPipe moves bytes through a synchronous in-memory net.Pipe:
// no system call, so what is left is the pump's own cost per write.
func BenchmarkPumpNetPipe(b *testing.B) {
	for _, chunk := range pumpChunks {
		b.Run(chunkName(chunk), func(b *testing.B) {
			b.SetBytes(pumpTotal)
			b.ReportAllocs()
			var active atomic.Int64 // the idle timer's last-activity clock
			chunkBuf := make([]byte, chunk)
			for b.Loop() {
				client, server := net.Pipe()
				go feed(client, chunkBuf, pumpTotal)
				var sink pumpSink
				if n := copyCounting(&sink, server, &active); n != pumpTotal {
					b.Fatalf("copied %d bytes, want %d", n, pumpTotal)
				}
				server.Close()
			}
		})
	}
}

// BenchmarkPumpShortSession is the pump of a tiny transfer: what each
// session pays for the buffer (taken from the pool, not allocated).
func BenchmarkPumpShortSession(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(1 << 10)
	var active atomic.Int64
	src := newPumpSource(1 << 10)
	var sink pumpSink
	for b.Loop() {
		src.left = 1 << 10
		copyCounting(&sink, src, &active)
	}
}
