# Switchboard: run `make run` to start a single-node gateway, `make test` to
# run everything CI runs.
GO ?= go

.PHONY: run test vet build bench docs

run:
	$(GO) run ./cmd/edge

build:
	$(GO) build -o bin/ ./cmd/...

vet:
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
