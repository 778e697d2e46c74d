package proxy

import (
	"golang.org/x/sys/cpu"

	gossh "golang.org/x/crypto/ssh"
)

// DefaultCiphers is the cipher list the gateway offers, chosen for speed
// without giving up security.
//
// In an SSH negotiation the client's order wins, and OpenSSH clients put
// chacha20-poly1305 first. Go's chacha20-poly1305 runs at a fraction of the
// speed of its AES-GCM on CPUs with AES instructions, so on such CPUs the
// gateway leaves chacha20 out and every modern client settles on AES-GCM, an
// AEAD cipher with no known weakness. Without AES instructions, where AES-GCM
// would be the slow and less safe one, chacha20 comes first. The CTR modes
// stay for old clients; x/crypto pairs them with encrypt-then-MAC.
func DefaultCiphers() []string {
	aead := []string{gossh.CipherAES128GCM, gossh.CipherAES256GCM}
	if !hasAESHardware() {
		aead = []string{gossh.CipherChaCha20Poly1305, gossh.CipherAES128GCM, gossh.CipherAES256GCM}
	}
	return append(aead, gossh.CipherAES128CTR, gossh.CipherAES256CTR)
}

func hasAESHardware() bool {
	return (cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ) || cpu.ARM64.HasAES || cpu.S390X.HasAES
}
