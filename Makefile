# Switchboard: run `make run` to start a single-node gateway, `make test` to
# run everything CI runs.
GO ?= go

.PHONY: run test vet build bench bench-all docs

run:
	$(GO) run ./cmd/edge

build:
	$(GO) build -o bin/ ./cmd/...

vet:
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# The Go modules of the deployment checks (helm's and Kubernetes' libraries
# stay out of the gateway's go.mod): test/deploy lints and renders the chart
# with helm's packages; test/deploy/kubeschema is kubectl-validate's
# validator, which needs older Kubernetes libraries than helm.
DEPLOY_MODULES := test/deploy/kubeschema test/deploy

# The whole suite: vet, then every test (unit, integration with a real
# redis-server and NATS, end-to-end) under the race detector, then the
# deployment checks (Dockerfile, compose, Helm chart, dashboards). Fuzz seed
# corpora run as ordinary tests. Needs only Go and redis-server.
test: vet
	$(GO) test -race -count=1 -timeout 30m ./...
	@for m in $(DEPLOY_MODULES); do echo "cd $$m && $(GO) test -count=1 -timeout 30m ./..."; \
		(cd $$m && $(GO) vet ./... && $(GO) test -count=1 -timeout 30m ./...) || exit 1; done

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

# Regenerate the flag tables of docs/configuration.md from the code.
docs:
	UPDATE_DOCS=1 $(GO) test -count=1 -run "TestConfigurationTables|TestMetricsDocListsEveryMetric" ./internal/app
