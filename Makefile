# Fledge: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
SHARED ?= $(abspath ../shared)
CAPI_VALIDATE ?= $(SHARED)/tools/capi-validate
MANAGER := target/debug/fledge-manager
# The kill points (failpoints) of the pivot and the pipeline are compiled into the debug binaries
# the tests run; without FAILPOINTS in the environment they do nothing. Both `build` and `unit`
# use the same features, so cargo never rebuilds the manager without them in between.
FEATURES ?= --features fledge-manager/failpoints

.PHONY: all build test lint fmt-check clippy unit capi-validate demo demo-test deps clean-state bench

all: build

## deps: what the tests need besides the Rust toolchain (python3 + PyYAML for capi-validate)
deps:
	@python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet PyYAML

## build: every binary of the workspace
build:
	$(CARGO) build --workspace --bins $(FEATURES)

## test: formatting, lints, every test, and capi-validate of every example
test: deps fmt-check clippy unit capi-validate demo-test

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets $(FEATURES) -- -D warnings

lint: fmt-check clippy

unit: build
	$(CARGO) test --workspace $(FEATURES)

## capi-validate: both phases of every example must be 0 invalid against the upstream CRDs
capi-validate: build deps
	@CAPI_VALIDATE=$(CAPI_VALIDATE) MANAGER=$(MANAGER) scripts/capi-validate-examples.sh

## demo: the main job on the embedded default (KEEP=1 leaves the world and the manager running)
KEEP ?= 0
demo: build deps
	@KEEP=$(KEEP) scripts/demo.sh

## demo-test: `make demo` as a test: exit 0, every step shown, no process left behind
demo-test: build deps
	@scripts/demo-test.sh

## bench: release-mode benchmarks, then BENCHMARKS.md regenerated from target/bench/*.jsonl
## (SCALE=full for larger sizes; the default run takes about 20 minutes)
SCALE ?= default
bench:
	@status=0; \
	SCALE=$(SCALE) BENCH_COMMAND="make bench$(if $(filter full,$(SCALE)), SCALE=full)" \
		$(CARGO) bench -p kube-sim --bench api || status=$$?; \
	SCALE=$(SCALE) BENCH_COMMAND="make bench$(if $(filter full,$(SCALE)), SCALE=full)" \
		$(CARGO) bench -p fledge-sim --bench world || status=$$?; \
	$(CARGO) build --release --workspace --bins || status=$$?; \
	SCALE=$(SCALE) BENCH_COMMAND="make bench$(if $(filter full,$(SCALE)), SCALE=full)" \
		$(CARGO) bench -p fledge-manager --bench agents || status=$$?; \
	SCALE=$(SCALE) BENCH_COMMAND="make bench$(if $(filter full,$(SCALE)), SCALE=full)" \
		$(CARGO) bench -p fledge-e2e --bench flow || status=$$?; \
	python3 scripts/bench-report.py || status=$$?; \
	exit $$status
