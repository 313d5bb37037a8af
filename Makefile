# raftproxy — see README.md.
GO ?= go
BIN := bin/raftproxy

.PHONY: all build run stop status clean test unit integration fuzz bench bench-cpu bench-go bench-memory bench-shards bench-idle bench-migrate soak deps chaos docs

all: build

# The commit goes into the binary (raftproxy version, raftproxy_build_info)
# even where Go records no VCS data itself.
COMMIT := $(shell git rev-parse HEAD 2>/dev/null)

build:
	$(GO) build -ldflags "-X github.com/raftproxy/raftproxy/version.commit=$(COMMIT)" -o $(BIN) ./cmd/raftproxy
	$(GO) build -o bin/raftbench ./cmd/raftbench

# Regenerates docs/COMMANDS.md from the command table (a unit test fails
# when it is out of date).
docs: deps
	$(GO) run ./cmd/commanddoc -out docs/COMMANDS.md

# Installs what the project needs from the system (redis-server) if missing.
deps:
	@scripts/install-redis.sh

# Builds and starts a local 3-node cluster on 127.0.0.1 (idempotent).
run: deps build
	@SHARDS=$(SHARDS) scripts/cluster.sh start

stop:
	@scripts/cluster.sh stop

status:
	@scripts/cluster.sh status

clean:
	-@[ -d .run ] && scripts/cluster.sh stop || true
	rm -rf .run bin

# The whole suite, as CI runs it.
test: deps
	@scripts/install-test-deps.sh
	$(GO) vet ./...
	@unformatted=$$("$$($(GO) env GOROOT)/bin/gofmt" -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$unformatted" ]; then echo "not gofmt-ed: $$unformatted"; exit 1; fi
	$(MAKE) unit fuzz integration

unit:
	$(GO) test -race -short -count=1 $$($(GO) list ./... | grep -v /test)

# A short run of each fuzzer on top of the checked-in corpus. The budget is
# a count, not a duration: with a duration, Go 1.26's fuzz coordinator can
# fail a clean run with "context deadline exceeded" when its workers are
# starved of CPU at the deadline (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 200000x
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzReadCommand$$' -fuzztime=$(FUZZTIME) ./resp
	$(GO) test -run='^$$' -fuzz='^FuzzReadReply$$' -fuzztime=$(FUZZTIME) ./resp
	$(GO) test -run='^$$' -fuzz='^FuzzUnmarshal$$' -fuzztime=$(FUZZTIME) ./entry

integration:
	$(GO) test -count=1 -timeout 25m ./test/...

# Throughput and latency side by side with stock redis (scripts/bench.sh),
# CPU per operation of each process (scripts/bench-cpu.sh), then snapshot
# times; results are saved under bench/results/.
bench: deps build bench-go
	scripts/bench.sh
	scripts/bench-snapshot.sh
	scripts/bench-shards.sh

# Sharded clusters of 1, 3 and 8 shards next to stock redis: SET throughput,
# CPU per SET of every process, and the idle cluster's CPU.
bench-shards: deps build
	scripts/bench-shards.sh

# An idle cluster of 64 shards: the CPU of its proxies and their
# redis-servers once every group has quiesced (a few minutes).
bench-idle: deps build
	scripts/bench-idle.sh

# A live slot move of a third of the slots holding MIGRATE_KEYS keys (1M)
# under about 10k operations a second: its time, the operations' latency
# during it, lost writes and deadlines. A few minutes.
MIGRATE_KEYS ?= 1000000
bench-migrate: deps build
	MIGRATE_BENCH=1 MIGRATE_KEYS=$(MIGRATE_KEYS) $(GO) test -count=1 -timeout 40m -run '^TestMigrationBench$$' -v ./test \
		| grep --line-buffered -E 'migrate_bench_test\.go:|^ *(---|ok|FAIL|PASS)|panic'

# CPU time per operation of each server process (SET and GET, 50 clients,
# no pipelining), stock redis and raftproxy in the same run: under a minute.
bench-cpu: deps build
	scripts/bench-cpu.sh

# Go benchmarks of the hot paths: RESP codec, log entry encoding, applying
# batches to a real redis-server.
bench-go: deps
	$(GO) test -run='^$$' -bench=. -benchmem ./resp ./entry ./backend

# Proxy memory with 1M keys under load for MEMORY_SECONDS (default 600).
bench-memory: deps build
	scripts/bench-memory.sh

# A long fault-injection campaign (see README "Chaos testing"): RUNS runs of
# DURATION each, seeds SEED, SEED+1, ... (SEED=0 picks one from the clock).
SEED ?= 0
DURATION ?= 60s
RUNS ?= 1
NEMESIS ?= kill,redis,pause,partition,torn,member,compact,script,skew,disk,redis-loss
NODES ?= 3
CLIENTS ?= 10
CHAOS_NET ?= auto
# SHARDS > 0: a sharded cluster (nemeses kill, pause, partition, compact).
SHARDS ?= 0
# PLACED=1 (with SHARDS=3 NODES=6): shards 1 and 2 on halves of the nodes.
PLACED ?= 0
# bash with pipefail, so a failed campaign fails make despite the filter.
chaos: SHELL := /bin/bash
chaos: .SHELLFLAGS := -o pipefail -c
chaos: deps
	$(GO) test -count=1 -timeout 24h -run '^TestChaosCampaign$$' -v ./test -args -chaos \
		-chaos.seed=$(SEED) -chaos.duration=$(DURATION) -chaos.runs=$(RUNS) -chaos.nemesis=$(NEMESIS) \
		-chaos.nodes=$(NODES) -chaos.clients=$(CLIENTS) -chaos.net=$(CHAOS_NET) -chaos.shards=$(SHARDS) -chaos.placed=$(if $(filter 1,$(PLACED)),true,false) \
		| grep --line-buffered -E '_test\.go:|^chaos verdict|^ *(---|ok|FAIL|PASS)|panic'

# Disk and memory under a write load that never stops (SOAK_SECONDS, default 300).
soak: deps build
	scripts/soak.sh
