# rekindle: build, test, benchmark.  `make test` is the full test run.
#
# Variables (override on the command line, e.g. `make test GOFLAGS=-race`):
#   GO            go command                      (go)
#   GOFLAGS       passed to every go command      (environment)
#   PKGS          packages for `test`             (./... plus the Go packages under testdata/)
#   TESTFLAGS     extra `go test` flags           (e.g. -run TestX -v)
#   TEST_TIMEOUT  go test -timeout                (40m)
#   RACE          race detector flag for `test`   (-race; RACE= to run without)
#   BENCH         -bench regexp                   (.)
#   BENCHTIME     -benchtime                      (1s)
#   BENCHCOUNT    -count for benchmarks           (3)
#   FUZZTIME      time per fuzz target            (30s)
#   SOAK_DURATION each of the two runs of `soak`   (60s; issue 12 asks 10m)

GO           ?= go
TEST_TIMEOUT ?= 40m
TESTFLAGS    ?=
RACE         ?= -race
BENCH        ?= .
BENCHTIME    ?= 1s
BENCHCOUNT   ?= 3
FUZZTIME     ?= 30s
export GOFLAGS

SHELL       := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# `./...` skips directories named testdata: name the Go packages under it explicitly.
TESTDATA_PKGS := $(sort $(patsubst %/,./%,$(dir $(shell find testdata -name '*.go' -not -path 'testdata/cache/*' 2>/dev/null))))
PKGS ?= ./... $(TESTDATA_PKGS)

.PHONY: all build man deps deps-bench test vet bench bench-nfs demo soak fuzz testvm clean distclean

all: build

VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/rekindle ./cmd/rekindle

# The manual page, generated from the command tree (TestManPage fails when
# docs/man/rekindle.1 is stale). Installs as /usr/share/man/man1/rekindle.1.
man:
	@mkdir -p docs/man
	$(GO) run ./cmd/rekindle man > docs/man/rekindle.1.tmp
	mv docs/man/rekindle.1.tmp docs/man/rekindle.1

deps:
	scripts/install-deps

deps-bench:
	scripts/install-deps --bench

vet:
	$(GO) vet $(PKGS)

# The test VM is built outside the network namespace: it downloads the kernel package.
testvm:
	testdata/testvm/build.sh

test: deps
	@$(MAKE) --no-print-directory testvm
	@$(MAKE) --no-print-directory vet
	scripts/netns-run $(GO) test $(RACE) -count=1 -timeout $(TEST_TIMEOUT) $(TESTFLAGS) $(PKGS)

bench:
	@mkdir -p bin
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) -timeout 10m ./backupfs/... | tee bin/bench.txt
	@echo "figures saved in bin/bench.txt"

bench-nfs: deps-bench
	bench/nfs.sh

demo:
	$(GO) run ./cmd/rekindle demo

# Issue 12's soak: legitimate clients alone, then beside hostile ones; not a test.
SOAK_DURATION ?= 60s
soak:
	SOAK_DURATION=$(SOAK_DURATION) scripts/netns-run $(GO) test -tags soak -count=1 -run '^TestSoak$$' -v -timeout 60m ./nfsd

fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) scripts/fuzz

clean:
	rm -rf bin
	rm -f coverage* cover.out cover.html *.coverprofile *.test

distclean: clean
	rm -rf testdata/cache bench/build
