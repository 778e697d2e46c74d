package proxy

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	gossh "golang.org/x/crypto/ssh"
)

// HostKeyFile is the name of the host key inside the state dir.
const HostKeyFile = "ssh_host_ed25519_key"

// LoadOrCreateHostKey returns the gateway's ed25519 host key, creating it on
// first start. The same key is reused on every later start so that clients'
// known_hosts entries stay valid. The file is written 0600 and a key file
// readable by others is refused, as sshd does.
func LoadOrCreateHostKey(stateDir string) (gossh.Signer, error) {
	path := filepath.Join(stateDir, HostKeyFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		st, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		if st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("host key %s is readable by others (mode %v); chmod 600 it",
				path, st.Mode().Perm())
		}
		signer, err := gossh.ParsePrivateKey(data)
		if err != nil {
			return nil, fmt.Errorf("host key %s: %w", path, err)
		}
		return signer, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("reading host key: %w", err)
	}

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := gossh.MarshalPrivateKey(priv, "tokengate host key")
	if err != nil {
		return nil, err
	}
	// Write a temporary file, then link it into place: two gateways starting
	// at once on one state dir never see a half-written key, and the loser
	// of the race uses the winner's key.
	tmp, err := os.CreateTemp(stateDir, ".hostkey-*")
	if err != nil {
		return nil, fmt.Errorf("creating host key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, err
	}
	if _, err := tmp.Write(pem.EncodeToMemory(block)); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("writing host key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return LoadOrCreateHostKey(stateDir)
	} else if err != nil {
		return nil, fmt.Errorf("installing host key: %w", err)
	}
	return gossh.NewSignerFromKey(priv)
}
