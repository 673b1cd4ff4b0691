# Switchboard: run `make run` to start a single-node gateway, `make test` to
# run everything CI runs.
GO ?= go

.PHONY: run test vet build bench bench-all soak docs

run:
	$(GO) run ./cmd/edge

build:
	$(GO) build -o bin/ ./cmd/...

vet:
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# The whole suite: vet, then every test (unit, integration with a real
# redis-server and NATS, end-to-end) under the race detector. Fuzz seed
# corpora run as ordinary tests.
test: vet
	$(GO) test -race -count=1 -timeout 30m ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Every figure of docs/benchmarks.md on this machine: the process-level
# scenarios side by side with the goroutine-per-connection baseline (idle
# memory, connect rate, echo, drain), then the Go benchmarks (@connections
# POST same node and through a router, group fan-out, registry, frame path,
# event encoding, API handler).
bench-all:
	$(GO) run ./bench/cmd/swbench all -n 15000 -repeat 3
	$(GO) test -run '^$$' -bench BenchmarkAPIPost -benchtime 3000x ./internal/app
	$(GO) test -run '^$$' -bench GroupFanout ./internal/groups
	$(GO) test -run '^$$' -bench 'BenchmarkRegister|BenchmarkRouterPost' -benchtime 3s ./internal/cluster
	$(GO) test -run '^$$' -bench . -benchmem ./internal/edge ./internal/lifecycle ./internal/api

# The soak (docs/benchmarks.md, "Soak"): 10 minutes of churn, messages, posts
# and group sends on a 2-edge + router cluster with one edge restart; fails
# if RSS or goroutines grow or a lifecycle event goes missing or doubles.
# Kept out of bench-all for its length. SOAK_FLAGS="-duration 90s -warmup 20s
# -sample 5s" for a short run.
soak:
	$(GO) run ./bench/cmd/swbench soak $(SOAK_FLAGS)

# Regenerate the flag tables of docs/configuration.md from the code.
docs:
	UPDATE_DOCS=1 $(GO) test -count=1 -run "TestConfigurationTables|TestMetricsDocListsEveryMetric" ./internal/app
