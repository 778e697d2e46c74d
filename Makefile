# tokengate: `make dev` to try it, `make test` to prove it.
GO ?= go
BIN := bin/gateway

.PHONY: all build dev test lint deps clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/gateway

deps:
	./scripts/deps.sh

# The main job on one machine: embedded store, temporary dirs, a fresh token
# and the rsync command to try, printed at start.
dev: deps build
	./$(BIN) dev

# Installs what the tests need, checks style, and runs every test: unit
# tests, the race detector on the concurrent packages, and the end-to-end
# suite against real rsync, ssh and redis-server.
test: deps lint
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -race ./auth/... ./proxy/... ./audit/... ./session/... ./client/... ./metrics/...

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

clean:
	rm -rf bin

# Compares the gateway with OpenSSH (sshd + rrsync) on loopback and writes
# bench/results.json (or BENCH_OUT). Installs openssh-server if missing.
# BENCH_QUICK=1 for a smoke run of a few minutes. Not part of `make test`.
.PHONY: bench
bench:
	./bench/run.sh $(BENCH_OUT)
