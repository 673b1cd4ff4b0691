# Switchboard: run `make run` to start a single-node gateway, `make test` to
# run everything CI runs.
GO ?= go

.PHONY: run test test-node vet build bench bench-all bench-peers bench-scale soak docs image chart-docs console-docs chat-client

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
# corpora run as ordinary tests. Needs Go, redis-server, chromium (the
# console's browser tests), and Node.js with npm (test-node).
test: vet test-node
	$(GO) test -race -count=1 -timeout 30m ./...
	@for m in $(DEPLOY_MODULES); do echo "cd $$m && $(GO) test -count=1 -timeout 30m ./..."; \
		(cd $$m && $(GO) vet ./... && $(GO) test -count=1 -timeout 30m ./...) || exit 1; done

# The Node.js Lambda runner (sdk/node-lambda), its chat example
# (examples/node-chat) and the browser/Node client (clients/js, built with
# its own TypeScript first): npm ci from their lockfiles, then node's test
# runner against a real edge, router and redis-server that the tests start
# on free loopback ports, with binaries built once here. Needs Node.js 20.11
# or later.
NPM ?= npm
NODE ?= node
test-node:
	@$(NODE) -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||(a===20&&b<11)) { console.error("make test-node: Node.js "+process.version+" is too old, want 20.11 or later"); process.exit(1) }'
	cd sdk/node-lambda && $(NPM) ci --no-audit --no-fund --loglevel=error
	cd examples/node-chat && $(NPM) ci --no-audit --no-fund --loglevel=error
	cd clients/js && $(NPM) ci --no-audit --no-fund --loglevel=error && $(NPM) run build
	@bin="$$(mktemp -d)" && trap 'rm -rf "$$bin"' EXIT && \
	echo "$(GO) build -o $$bin/ ./cmd/edge ./cmd/router" && $(GO) build -o "$$bin/" ./cmd/edge ./cmd/router && \
	echo "cd sdk/node-lambda && node --test test/*.test.js ../../examples/node-chat/test/*.test.js" && \
	cd sdk/node-lambda && SWITCHBOARD_BIN_DIR="$$bin" $(NODE) --test --test-timeout=300000 test/*.test.js ../../examples/node-chat/test/*.test.js && \
	echo "cd clients/js && node --test test/*.test.js" && \
	cd ../../clients/js && SWITCHBOARD_BIN_DIR="$$bin" $(NODE) --test --test-timeout=300000 test/*.test.js

# The chat example's copy of the client (examples/chat/web, embedded in its
# binary, so that the example builds and its Go tests run without Node):
# clients/js built and copied. A test of make test-node fails when the copy
# is not the build of the current source.
chat-client:
	cd clients/js && $(NPM) ci --no-audit --no-fund --loglevel=error && $(NPM) run build
	cp clients/js/dist/index.js examples/chat/web/switchboard-client.js

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
	$(GO) test -run '^$$' -bench FanoutCompression -benchtime 10x ./internal/groups
	$(GO) run ./bench/cmd/swbench idle -n 15000 -servers edge -compression
	$(GO) test -run '^$$' -bench 'BenchmarkRegister|BenchmarkRouterPost' -benchtime 3s ./internal/cluster
	$(GO) test -run '^$$' -bench . -benchmem ./internal/edge ./internal/lifecycle ./internal/api

# Switchboard next to Centrifugo v6.9.1 and the goroutine baseline, end to
# end (docs/benchmarks.md, "Peers"): idle memory, connect rate through a
# backend, fan-out to 10,000 members, cross-node posts with the CPU of every
# process, on one node, 2-node and 3-node clusters of each. Every part is
# its own process on loopback ports (its own redis-server and nats-server);
# Centrifugo and nats-server are built once into the user cache. About 6
# minutes; PEERS_FLAGS="-n 5000 -connect-n 5000 -fanout-n 3000" is quicker.
bench-peers:
	$(GO) run ./bench/cmd/swbench peers $(PEERS_FLAGS)

# The operator surfaces at 100,000 connections (docs/benchmarks.md, "100k
# connections"): 6 edges, a router, redis-server and nats-server as separate
# processes; the listings, /@nodes, /@stats, GET /@connections/{id} and an
# /@events tail timed through the router. Stops by itself within 10 minutes.
bench-scale:
	$(GO) run ./bench/cmd/swbench scale $(SCALE_FLAGS)

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

# Regenerate the screenshots of docs/console.md: the console's browser test
# (headless chromium against a 2-edge + router cluster) writes them.
console-docs:
	CONSOLE_DOCS=1 $(GO) test -count=1 -run '^TestConsole$$' ./test/e2e

# The container image (the Dockerfile's runtime stage: edge, router and the
# healthcheck probe). No image is published yet: build your own, push it
# where your cluster pulls from, and install the chart with
# --set image.repository=$(IMAGE) --set image.tag=$(TAG):
#   make image IMAGE=registry.example.com/you/switchboard TAG=0.1.0 PUSH=1
# TAG defaults to the chart's appVersion, IMAGE to the chart's
# image.repository; ENGINE is docker, else podman.
IMAGE ?= ghcr.io/switchboardgw/switchboard
TAG ?= $(shell sed -n 's/^appVersion: *"*\([^"]*\)"*$$/\1/p' helm/switchboard/Chart.yaml)
ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)

image:
	@test -n "$(ENGINE)" || { echo "make image: neither docker nor podman is on PATH (set ENGINE=...)"; exit 1; }
	$(ENGINE) build --target runtime -t $(IMAGE):$(TAG) .
	$(if $(PUSH),$(ENGINE) push $(IMAGE):$(TAG))

# Regenerate the values table of helm/switchboard/README.md from values.yaml
# and values.schema.json (a test fails when they drift).
chart-docs:
	cd test/deploy && UPDATE_CHART_README=1 $(GO) test -count=1 -run TestChartReadmeListsEveryValue .
