package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/redistest"
)

// The option sets real clients use all work through the gateway.
func TestRealClientOptions(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	files := map[string]string{"a.txt": "a\n", "d/b.txt": "b\n", "d/e/c.txt": "c\n"}
	g.seed("opts/src", files)
	tok := g.createToken("opts", "read,write,delete", time.Hour)
	local := t.TempDir()
	writeTree(t, local, files)
	list := filepath.Join(t.TempDir(), "list")
	if err := os.WriteFile(list, []byte("a.txt\nd/e/c.txt\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		args []string
		// check inspects the result; dst is the local destination of pulls.
		check func(t *testing.T, res result, dst string)
	}{
		{"pull -z", []string{"-az", g.remote("src/"), "DST/"}, wantTree(files)},
		{"push -P", []string{"-aP", local + "/", g.remote("p/")}, wantRoot(g, "opts/p", files)},
		{"push --partial-dir", []string{"-a", "--partial-dir", ".p", local + "/", g.remote("pd/")},
			wantRoot(g, "opts/pd", files)},
		{"push --inplace", []string{"-a", "--inplace", local + "/", g.remote("ip/")}, wantRoot(g, "opts/ip", files)},
		{"push --mkpath", []string{"-a", "--mkpath", local + "/", g.remote("m/a/b/c/")},
			wantRoot(g, "opts/m/a/b/c", files)},
		{"pull gw:", []string{"-a", g.remote(""), "DST/"}, wantHas("src/d/e/c.txt")},
		{"pull gw:/", []string{"-a", g.remote("/"), "DST/"}, wantHas("src/d/e/c.txt")},
		{"list-only", []string{"--list-only", g.remote("src/")}, wantStdout("a.txt")},
		{"dry run", []string{"-an", g.remote("src/"), "DST/"}, wantTree(map[string]string{})},
		{"checksum", []string{"-ac", g.remote("src/"), "DST/"}, wantTree(files)},
		{"-aHAX", []string{"-aHAX", local + "/", g.remote("hax/")}, wantRoot(g, "opts/hax", files)},
		{"--delete", []string{"-a", "--delete", local + "/d/", g.remote("src/d/")}, wantRoot(g, "opts/src/d",
			map[string]string{"b.txt": "b\n", "e/c.txt": "c\n"})},
		{"--files-from", []string{"-a", "--files-from=" + list, g.remote("src/"), "DST/"},
			wantTree(map[string]string{"a.txt": "a\n", "d/e/c.txt": "c\n"})},
		{"--dirs", []string{"--dirs", g.remote("src/"), "DST/"}, wantHas("a.txt")},
		{"-s absolute", []string{"-s", "-a", g.remote("/src/a.txt"), "DST/"},
			wantTree(map[string]string{"a.txt": "a\n"})},
		{"-s push with spaces", []string{"-s", "-a", local + "/", g.remote("with space/")},
			wantRoot(g, "opts/with space", files)},
		{"glob pull", []string{"-a", g.remote("src/*.txt"), "DST/"}, wantTree(map[string]string{"a.txt": "a\n"})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst := t.TempDir()
			args := make([]string, len(c.args))
			for i, a := range c.args {
				args[i] = strings.Replace(a, "DST", dst, 1)
			}
			res := g.rsync(tok, args...)
			if res.code != 0 {
				t.Fatalf("exit %d: %s", res.code, res.stderr)
			}
			c.check(t, res, dst)
		})
	}
}

func wantTree(want map[string]string) func(*testing.T, result, string) {
	return func(t *testing.T, _ result, dst string) { sameTree(t, readTree(t, dst), want) }
}

func wantRoot(g *gateway, rel string, want map[string]string) func(*testing.T, result, string) {
	return func(t *testing.T, _ result, _ string) { sameTree(t, readTree(t, g.root(rel)), want) }
}

func wantHas(name string) func(*testing.T, result, string) {
	return func(t *testing.T, _ result, dst string) {
		if _, ok := readTree(t, dst)[name]; !ok {
			t.Fatalf("%s did not arrive: %v", name, keys(readTree(t, dst)))
		}
	}
}

func wantStdout(s string) func(*testing.T, result, string) {
	return func(t *testing.T, res result, _ string) {
		if !strings.Contains(res.stdout, s) {
			t.Fatalf("stdout lacks %q:\n%s", s, res.stdout)
		}
	}
}
