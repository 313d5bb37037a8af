# raftproxy — see README.md.
GO ?= go
BIN := bin/raftproxy

.PHONY: all build run stop status clean test unit integration fuzz bench soak deps

all: build

build:
	$(GO) build -o $(BIN) ./cmd/raftproxy

# Installs what the project needs from the system (redis-server) if missing.
deps:
	@scripts/install-redis.sh

# Builds and starts a local 3-node cluster on 127.0.0.1 (idempotent).
run: deps build
	@scripts/cluster.sh start

stop:
	@scripts/cluster.sh stop

status:
	@scripts/cluster.sh status

clean:
	-@[ -d .run ] && scripts/cluster.sh stop || true
	rm -rf .run bin

# The whole suite, as CI runs it.
test: deps
	$(GO) vet ./...
	$(MAKE) unit fuzz integration

unit:
	$(GO) test -race -short -count=1 $$($(GO) list ./... | grep -v /test)

# A short run of each fuzzer on top of the checked-in corpus.
FUZZTIME ?= 10s
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzReadCommand$$' -fuzztime=$(FUZZTIME) ./resp
	$(GO) test -run='^$$' -fuzz='^FuzzReadReply$$' -fuzztime=$(FUZZTIME) ./resp
	$(GO) test -run='^$$' -fuzz='^FuzzUnmarshal$$' -fuzztime=$(FUZZTIME) ./entry

integration:
	$(GO) test -count=1 -timeout 20m ./test/...

bench: deps build
	$(GO) test -run='^$$' -bench=. -benchmem ./resp ./entry
	scripts/bench.sh
	scripts/bench-snapshot.sh

# Disk and memory under a write load that never stops (SOAK_SECONDS, default 300).
soak: deps build
	scripts/soak.sh
