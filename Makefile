# Tollgate build, test and benchmark entry points.
#
# go-control-plane compiles its vtprotobuf marshalers only with the
# "vtprotobuf" build tag; every build, test and lint below uses it so the
# fast codec is what we ship and what we test.
SHELL      := /bin/bash
TAGS       := vtprotobuf
GO         ?= go
GOBIN_DIR  := $(CURDIR)/bin
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS    := -s -w -X main.version=$(VERSION)
STATICCHECK_VERSION := v0.8.2
BENCH_DURATION ?= 10s
MEMORY_DURATION ?= 60s

.PHONY: all build run test deps lint vet staticcheck unit bench bench-go bench-load clean fmt

all: build

build:
	$(GO) build -tags $(TAGS) -ldflags '$(LDFLAGS)' -o bin/tollgate ./cmd/tollgate

## run: start Tollgate on embedded development defaults (dev issuer, one service for any host).
run: build
	@echo "Tollgate dev mode. In another terminal:"
	@echo "  bin/tollgate client --token \$$(bin/tollgate dev-token --sub alice)   # ALLOWED"
	@echo "  bin/tollgate client                                                   # DENIED 401"
	bin/tollgate serve

## test: install what the tests need, then vet, staticcheck and the race-enabled test suite.
test: deps vet staticcheck unit

# System packages the tests use for real: redis-server (session and key
# stores; tests start their own on a loopback port), softhsm2 (PKCS#11 key
# store), gcc (cgo for -race and PKCS#11). Installed from Debian when missing.
SYSTEM_DEPS := redis-server:redis-server softhsm2-util:softhsm2 gcc:gcc
deps: $(GOBIN_DIR)/staticcheck
	@missing=""; for p in $(SYSTEM_DEPS); do command -v $${p%%:*} >/dev/null || missing="$$missing $${p##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(GOBIN_DIR)/staticcheck:
	GOBIN=$(GOBIN_DIR) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

vet:
	$(GO) vet -tags $(TAGS) ./...

staticcheck: $(GOBIN_DIR)/staticcheck
	$(GOBIN_DIR)/staticcheck -tags $(TAGS) ./...

unit:
	# -count=1: the end-to-end tests build and run the binary in a subprocess,
	# which go test cannot see, so a cached "ok" could hide a server change.
	$(GO) test -race -count=1 -tags $(TAGS) -timeout 20m ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

## bench: Go benchmarks of the pipeline plus a load run over loopback gRPC against a do-nothing baseline.
bench: bench-go bench-load

bench-go: deps
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -benchmem -count 1 ./authz/ ./jwks/ ./jwks/keyring/ ./policy/ ./session/ ./internal/vtcodec/

bench-load: build
	$(GO) build -tags $(TAGS) -o bin/nullauthz ./test/load/nullauthz
	$(GO) run -tags $(TAGS) ./test/load -tollgate bin/tollgate -null bin/nullauthz -duration $(BENCH_DURATION) -memory-duration $(MEMORY_DURATION)

clean:
	rm -rf bin
