# Switchboard: run `make run` to start a single-node gateway, `make test` to
# run everything CI runs.
GO ?= go

.PHONY: run test vet build bench docs

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

# Regenerate the flag tables of docs/configuration.md from the code.
docs:
	UPDATE_DOCS=1 $(GO) test -count=1 -run "TestConfigurationTables|TestMetricsDocListsEveryMetric" ./internal/app
