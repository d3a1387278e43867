# vmcp — developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all test lint fmt fmt-check clippy unit deps crds run bench dev-cluster cluster k8s-bin clean-cache fuzz fuzz-smoke images conformance

all: test

## test: everything CI checks: formatting, clippy (-D warnings), and every test against real peers
test: fmt-check clippy deps
	$(CARGO) test --workspace --all-features --all-targets --no-fail-fast -- --test-threads=$${VMCP_TEST_THREADS:-4}
	$(MAKE) fuzz-smoke

FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 20

## fuzz: every fuzz target (fuzz/, cargo-fuzz, nightly) for FUZZ_SECONDS each (default 300)
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

## fuzz-smoke: every fuzz target for FUZZ_SMOKE_SECONDS each (default 20; part of `make test`)
fuzz-smoke:
	scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS)

## lint: formatting and clippy only
lint: fmt-check clippy

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-features --all-targets -- -D warnings

## deps: install/build the real peers the tests use (idempotent, cached under .cache/)
deps:
	scripts/peers-install.sh
	scripts/conformance-install.sh >/dev/null
	@[ -d tests/peers/oidc/node_modules ] || npm ci --prefix tests/peers/oidc --no-audit --no-fund --silent
	scripts/keycloak-install.sh --warm >/dev/null
	scripts/k8s-bin.sh --node >/dev/null
	@command -v redis-server >/dev/null || { echo "[deps] installing redis-server (Debian package)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q redis-server || { apt-get update -q && apt-get install -y -q redis-server; }; \
	  else sudo -n apt-get install -y -q redis-server; fi; }
	$(CARGO) build -q -p vmcp-gateway -p vmcp-operator -p vmcp-example-backends

## conformance: the official MCP conformance suite's server scenarios, directly against its reference server and through a gateway with that server as only backend ("N of M passed" for both; scripts/conformance.sh)
conformance:
	scripts/conformance.sh

## run: start two example backends and the gateway (anonymous, in-memory); Ctrl-C stops all
run:
	scripts/run-local.sh

## bench: release build, then the direct backend, vmcp-gateway and ToolHive vmcp side by side (~10 min; results in target/bench/)
bench:
	$(CARGO) build --release -q -p vmcp-gateway -p vmcp-example-backends -p vmcp-bench
	$${CARGO_TARGET_DIR:-target}/release/vmcp-bench --out target/bench $(BENCH_ARGS)

## dev-cluster: throwaway etcd + kube-apiserver in the foreground (prints KUBECONFIG/PATH exports; Ctrl-C stops it and deletes its data)
dev-cluster:
	scripts/dev-cluster.sh

## cluster: a real single-node Kubernetes (containerd, kubelet, CNI, DNS) with the `make images` images loaded, in the foreground (root; prints KUBECONFIG/PATH exports; Ctrl-C stops and cleans everything)
cluster:
	scripts/cluster.sh

## k8s-bin: build (once, cached in .cache/k8s) kube-apiserver, etcd, kubectl and helm
k8s-bin:
	scripts/k8s-bin.sh >/dev/null

## images: build the gateway, operator and example-backend images locally (podman/buildah, no registry; tag = the chart's appVersion; docs/images.md)
images:
	scripts/images-build.sh

## crds: regenerate config/crd/ from the Rust types
crds:
	$(CARGO) run -q -p vmcp-operator -- crds --out-dir config/crd
	VMCP_UPDATE_CHART_CRDS=1 $(CARGO) test -q -p vmcp-operator --test chart_crds

help:
	@grep -E '^## ' Makefile | sed 's/^## //'
