package main

import (
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// makeData writes the client-side sources: the big file from /dev/urandom
// (incompressible, so no layer can shrink it), the small files' tree from a
// seeded generator (fast, and the same tree on every run), and one tiny file.
func (b *bench) makeData() error {
	src := filepath.Join(b.work, "src")
	if err := os.MkdirAll(filepath.Join(src, "small"), 0o755); err != nil {
		return err
	}
	if err := writeRandomFile(filepath.Join(src, "big.bin"), b.scale.BigSize); err != nil {
		return err
	}
	if err := writeSmallTree(filepath.Join(src, "small"), b.scale.SmallFiles); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(src, "tiny.bin"), []byte("tokengate bench\n"), 0o644)
}

func writeRandomFile(path string, size int64) error {
	in, err := os.Open("/dev/urandom")
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(out, in, size); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writeSmallTree writes n files of 1-16 KiB, 100 to a directory, two levels
// deep: d00/e00/f00000.bin.
func writeSmallTree(dir string, n int) error {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 16<<10)
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i/1000), fmt.Sprintf("e%02d", i/100%10))
		if i%100 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return err
			}
		}
		size := 1<<10 + rng.IntN(15<<10+1)
		for j := 0; j < size; j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8 && j+k < size; k++ {
				buf[j+k] = byte(v >> (8 * k))
			}
		}
		name := filepath.Join(sub, fmt.Sprintf("f%05d.bin", i))
		if err := os.WriteFile(name, buf[:size], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// seed gives a server root the sources to pull, as hard links under seed/
// (no copy of the big file), and hands its directories to the jail's ids
// so that pushes can create files next to them.
func seed(root, src string) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		dst := filepath.Join(root, "seed", rel)
		if d.IsDir() {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
			return os.Chown(dst, jailUID, jailGID)
		}
		return os.Link(p, dst)
	})
	if err != nil {
		return err
	}
	return os.Chown(root, jailUID, jailGID)
}
