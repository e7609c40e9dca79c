# fleet_exporter build and test entry points. `make test` is the README's
# test command and the one .ci/run calls.

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BRANCH      ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
VERSION_PKG := github.com/prometheus/common/version
LDFLAGS     := -s -w -X $(VERSION_PKG).Version=$(VERSION) -X $(VERSION_PKG).Revision=$(REVISION) -X $(VERSION_PKG).Branch=$(BRANCH)
TEST_TIMEOUT ?= 15m

.PHONY: all build test test-deps vet fmt-check doc-check tidy-check lint golangci-lint fuzz bench

all: fmt-check vet build test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o fleet_exporter .

# test installs the real peers the integration tests use (OpenSSH sshd,
# Prometheus, fping, pdsh, nftables) when they are missing, then runs every test.
test: test-deps
	$(GO) test -race -timeout $(TEST_TIMEOUT) ./...

test-deps:
	@./scripts/install-test-deps.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# doc-check: every package keeps its package comment in doc.go, where the
# next reader looks for it.
doc-check:
	@missing=$$($(GO) list -f '{{.Dir}}' ./... | while read -r d; do [ -f "$$d/doc.go" ] || echo "$$d"; done); \
	if [ -n "$$missing" ]; then echo "packages without doc.go:"; echo "$$missing"; exit 1; fi

tidy-check:
	@cp go.mod /tmp/go.mod.bak; cp go.sum /tmp/go.sum.bak; $(GO) mod tidy; \
	if ! git diff --quiet -- go.mod go.sum; then echo "go.mod/go.sum not tidy"; git diff -- go.mod go.sum; \
	cp /tmp/go.mod.bak go.mod; cp /tmp/go.sum.bak go.sum; exit 1; fi

# golangci-lint comes through the Go module proxy at a pinned version (no
# downloaded binaries); it is built once into GOPATH/bin.
GOLANGCI_LINT_VERSION ?= v2.15.0
GOBIN_DIR     := $(shell $(GO) env GOPATH)/bin
GOLANGCI_LINT := $(GOBIN_DIR)/golangci-lint

lint: vet fmt-check doc-check golangci-lint
	$(GOLANGCI_LINT) run ./...

golangci-lint:
	@if ! $(GOLANGCI_LINT) version 2>/dev/null | grep -q "version $(patsubst v%,%,$(GOLANGCI_LINT_VERSION)) "; then \
		echo "installing golangci-lint $(GOLANGCI_LINT_VERSION)"; \
		GOFLAGS= GOBIN=$(GOBIN_DIR) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION); \
	fi

# fuzz runs each fuzz target briefly (FUZZTIME per target).
FUZZTIME ?= 20s
fuzz:
	$(GO) test ./config/ -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)
	$(GO) test ./config/ -run '^$$' -fuzz '^FuzzExpand$$' -fuzztime $(FUZZTIME)

bench:
	./bench/run.sh
