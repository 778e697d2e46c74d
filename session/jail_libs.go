package session

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The jail holds rsync and exactly the files the dynamic loader maps to run it. They are
// found by reading ELF headers, never by running ldd: ldd may execute the binary it is
// asked about, and the answer must not depend on what a binary chooses to print.

const ldSoCachePath = "/etc/ld.so.cache"

// maxLibraries bounds the walk of DT_NEEDED, against a loop or a hostile library tree.
const maxLibraries = 256

// elfObject is what the jail needs to know about one ELF file.
type elfObject struct {
	class   elf.Class
	machine elf.Machine
	interp  string   // PT_INTERP, empty for libraries and static binaries
	needed  []string // DT_NEEDED
	rpath   []string // DT_RPATH, used only when there is no DT_RUNPATH
	runpath []string // DT_RUNPATH
}

func readELF(path string) (*elfObject, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	obj := &elfObject{class: f.Class, machine: f.Machine}
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		data := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(data, 0); err != nil {
			return nil, fmt.Errorf("PT_INTERP: %w", err)
		}
		obj.interp = string(bytes.TrimRight(data, "\x00"))
	}
	if obj.needed, err = f.DynString(elf.DT_NEEDED); err != nil {
		return nil, fmt.Errorf("DT_NEEDED: %w", err)
	}
	rpath, _ := f.DynString(elf.DT_RPATH)
	runpath, _ := f.DynString(elf.DT_RUNPATH)
	obj.rpath = splitSearchPath(rpath, path)
	obj.runpath = splitSearchPath(runpath, path)
	return obj, nil
}

// elfSoname is DT_SONAME of a library, or its file name if it has none.
func elfSoname(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	names, err := f.DynString(elf.DT_SONAME)
	if err != nil || len(names) == 0 {
		return filepath.Base(path), nil
	}
	return names[0], nil
}

// splitSearchPath expands $ORIGIN and drops entries the loader would expand in ways we do
// not model ($LIB, $PLATFORM); a library missed that way makes NewJail fail, not the jail.
func splitSearchPath(values []string, objPath string) []string {
	var dirs []string
	origin := filepath.Dir(objPath)
	for _, value := range values {
		for _, dir := range strings.Split(value, ":") {
			dir = strings.ReplaceAll(dir, "${ORIGIN}", origin)
			dir = strings.ReplaceAll(dir, "$ORIGIN", origin)
			if dir == "" || strings.Contains(dir, "$") || !filepath.IsAbs(dir) {
				continue
			}
			dirs = append(dirs, filepath.Clean(dir))
		}
	}
	return dirs
}

// jailFiles lists rsync, its interpreter and every library it needs, transitively, with
// the path each takes inside the jail (the path the loader asks for), and the library
// dirs in search order.
func jailFiles(rsync string) ([]jailFile, []string, error) {
	obj, err := readELF(rsync)
	if err != nil {
		return nil, nil, fmt.Errorf("tokengate: jail: read rsync ELF: %w", err)
	}
	files := []jailFile{{Host: rsync, Jail: rsync}}
	if obj.interp == "" {
		return files, nil, nil // static binary: nothing else to map
	}
	if !filepath.IsAbs(obj.interp) {
		return nil, nil, fmt.Errorf("tokengate: jail: read rsync ELF: "+
			"interpreter %q is not absolute", obj.interp)
	}
	files = append(files, jailFile{Host: obj.interp, Jail: filepath.Clean(obj.interp)})

	cache, err := readLdSoCache(ldSoCachePath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("tokengate: jail: read %s: %w", ldSoCachePath, err)
	}
	r := &libResolver{class: obj.class, machine: obj.machine, cache: cache,
		seen: map[string]bool{}, mapped: map[string]bool{}}

	// The interpreter is loaded once, by the kernel; when libc names it in DT_NEEDED the
	// loader matches it by soname and opens no file, so it is not mapped a second time.
	soname, err := elfSoname(obj.interp)
	if err != nil {
		return nil, nil, fmt.Errorf("tokengate: jail: read interpreter ELF: %w", err)
	}
	r.seen[soname] = true
	if err := r.walk(obj, rsync); err != nil {
		return nil, nil, err
	}
	return append(files, r.files...), r.dirs, nil
}

// libResolver follows DT_NEEDED the way the loader does: RPATH (without RUNPATH), RUNPATH,
// ld.so.cache, then the default dirs; a candidate counts only if its ELF class and machine
// match rsync's, as the loader skips the others.
type libResolver struct {
	class   elf.Class
	machine elf.Machine
	cache   []ldCacheEntry
	seen    map[string]bool // sonames already handled
	mapped  map[string]bool // paths already in files
	files   []jailFile
	dirs    []string
}

func (r *libResolver) walk(obj *elfObject, objPath string) error {
	for _, name := range obj.needed {
		if r.seen[name] {
			continue
		}
		r.seen[name] = true
		if len(r.seen) > maxLibraries {
			return fmt.Errorf("tokengate: jail: libraries: more than %d", maxLibraries)
		}
		path, lib, err := r.resolve(name, obj)
		if err != nil {
			return fmt.Errorf("tokengate: jail: library %s (needed by %s): %w",
				name, objPath, err)
		}
		if r.mapped[path] {
			continue // two sonames that resolve to one file: mount it once
		}
		r.mapped[path] = true
		r.files = append(r.files, jailFile{Host: path, Jail: path})
		if dir := filepath.Dir(path); !containsString(r.dirs, dir) {
			r.dirs = append(r.dirs, dir)
		}
		if err := r.walk(lib, path); err != nil {
			return err
		}
	}
	return nil
}

func (r *libResolver) resolve(name string, by *elfObject) (string, *elfObject, error) {
	if strings.Contains(name, "/") {
		return r.try(filepath.Clean(name))
	}
	var candidates []string
	if len(by.runpath) == 0 {
		candidates = append(candidates, joinAll(by.rpath, name)...)
	}
	candidates = append(candidates, joinAll(by.runpath, name)...)
	candidates = append(candidates, lookupLdCache(r.cache, name)...)
	candidates = append(candidates, joinAll(defaultLibDirs(r.machine), name)...)
	for _, path := range candidates {
		if path, lib, err := r.try(path); err == nil {
			return path, lib, nil
		}
	}
	return "", nil, errors.New("not found in RPATH, RUNPATH, ld.so.cache or default dirs")
}

func (r *libResolver) try(path string) (string, *elfObject, error) {
	if !filepath.IsAbs(path) {
		return "", nil, fmt.Errorf("%s is not absolute", path)
	}
	lib, err := readELF(path)
	if err != nil {
		return "", nil, err
	}
	if lib.class != r.class || lib.machine != r.machine {
		return "", nil, fmt.Errorf("%s is for another machine", path)
	}
	return filepath.Clean(path), lib, nil
}

// defaultLibDirs are the loader's built-in dirs, Debian multiarch first.
func defaultLibDirs(machine elf.Machine) []string {
	triplets := map[elf.Machine]string{
		elf.EM_X86_64:  "x86_64-linux-gnu",
		elf.EM_AARCH64: "aarch64-linux-gnu",
		elf.EM_386:     "i386-linux-gnu",
		elf.EM_ARM:     "arm-linux-gnueabihf",
		elf.EM_RISCV:   "riscv64-linux-gnu",
		elf.EM_PPC64:   "powerpc64le-linux-gnu",
		elf.EM_S390:    "s390x-linux-gnu",
	}
	var dirs []string
	if t, ok := triplets[machine]; ok {
		dirs = append(dirs, "/lib/"+t, "/usr/lib/"+t)
	}
	return append(dirs, "/lib64", "/usr/lib64", "/lib", "/usr/lib")
}

func joinAll(dirs []string, name string) []string {
	paths := make([]string, 0, len(dirs))
	for _, dir := range dirs {
		paths = append(paths, filepath.Join(dir, name))
	}
	return paths
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ldCacheEntry is one library of ld.so.cache: its soname and its path.
type ldCacheEntry struct {
	name, path string
	hwcap      uint64
}

// The new ld.so.cache format (glibc 2.2+, the only one since 2.32): a 48-byte header, then
// 24-byte entries whose key and value are offsets of NUL-terminated strings counted from
// the start of that header. Older files start with the libc5 format, followed by the new
// one at an 8-byte aligned offset.
const (
	ldCacheOldMagic    = "ld.so-1.7.0"
	ldCacheNewMagic    = "glibc-ld.so.cache1.1"
	ldCacheHeaderSize  = 48
	ldCacheEntrySize   = 24
	ldCacheOldHeader   = 16
	ldCacheOldEntrySz  = 12
	ldCacheMaxFileSize = 64 << 20
)

func readLdSoCache(path string) ([]ldCacheEntry, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if info.Size() > ldCacheMaxFileSize {
		return nil, errors.New("too large")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseLdSoCache(data)
}

func parseLdSoCache(data []byte) ([]ldCacheEntry, error) {
	start := 0
	if bytes.HasPrefix(data, []byte(ldCacheOldMagic)) {
		if len(data) < ldCacheOldHeader {
			return nil, errors.New("truncated")
		}
		n := int(binary.LittleEndian.Uint32(data[12:16]))
		if n < 0 || n > len(data)/ldCacheOldEntrySz {
			return nil, errors.New("bad old-format entry count")
		}
		start = (ldCacheOldHeader + n*ldCacheOldEntrySz + 7) &^ 7
	}
	if start > len(data) || !bytes.HasPrefix(data[start:], []byte(ldCacheNewMagic)) {
		return nil, errors.New("unknown format")
	}
	cache := data[start:]
	if len(cache) < ldCacheHeaderSize {
		return nil, errors.New("truncated")
	}
	n := int(binary.LittleEndian.Uint32(cache[20:24]))
	if n < 0 || n > (len(cache)-ldCacheHeaderSize)/ldCacheEntrySize {
		return nil, errors.New("bad entry count")
	}

	entries := make([]ldCacheEntry, 0, n)
	for i := 0; i < n; i++ {
		e := cache[ldCacheHeaderSize+i*ldCacheEntrySize:]
		name, ok1 := cString(cache, binary.LittleEndian.Uint32(e[4:8]))
		path, ok2 := cString(cache, binary.LittleEndian.Uint32(e[8:12]))
		if !ok1 || !ok2 {
			return nil, errors.New("bad string offset")
		}
		entries = append(entries, ldCacheEntry{name: name, path: path,
			hwcap: binary.LittleEndian.Uint64(e[16:24])})
	}
	return entries, nil
}

func cString(data []byte, off uint32) (string, bool) {
	if uint64(off) >= uint64(len(data)) {
		return "", false
	}
	end := bytes.IndexByte(data[off:], 0)
	if end < 0 {
		return "", false
	}
	return string(data[off : int(off)+end]), true
}

// lookupLdCache returns the cached paths for a soname, plain entries before those tied to
// hardware capabilities, which the loader would pick only on a matching CPU.
func lookupLdCache(cache []ldCacheEntry, name string) []string {
	var plain, hw []string
	for _, e := range cache {
		if e.name != name {
			continue
		}
		if e.hwcap == 0 {
			plain = append(plain, e.path)
		} else {
			hw = append(hw, e.path)
		}
	}
	return append(plain, hw...)
}
