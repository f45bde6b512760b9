# nsq-operator: every command a person or CI needs. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
CACHE ?= $(HOME)/.cache/nsq-operator
UV := $(CACHE)/uv-$(UV_VERSION)/bin/uv
PY := .venv/bin/python
APT_PACKAGES := docker.io debootstrap openssl redis-server ca-certificates \
  containerd runc containernetworking-plugins iptables iproute2 nfacct conntrack
export NSQ_OPERATOR_CACHE := $(CACHE)

.PHONY: help deps deps-local test test-fast lint fmt demo demo-kube rig-up rig-down bench soak tools chart-crd

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv $(CACHE)/uv-$(UV_VERSION)
	$(CACHE)/uv-$(UV_VERSION)/bin/pip install --quiet uv==$(UV_VERSION)

deps: $(UV) ## Install everything the tests need: Debian packages, Python packages, the Go-built tools
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "[deps] installing Debian packages: $$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq || true; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(UV) sync --frozen --quiet
	bash tools/build.sh >/dev/null

deps-local: $(UV) ## Only what local mode needs: the Python packages and the NSQ binaries (no Kubernetes)
	$(UV) sync --frozen --quiet
	bash tools/build.sh nsq >/dev/null

tools: ## Build the pinned Go binaries into the cache (nsqd, kube-apiserver, helm, ...)
	bash tools/build.sh

lint: $(UV) ## ruff, mypy and hadolint
	$(UV) sync --frozen --quiet
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/hadolint Dockerfile examples/worker-image/Dockerfile

fmt: ## Format the code
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

test: deps lint ## Install everything, then run every test against the real parts
	$(PY) -m pytest

test-fast: ## Run the tests, assuming `make deps` has run
	$(PY) -m pytest -x

rig-up: deps ## Start the rig (NSQ, control plane, Docker); RIG_ARGS=--real-node adds a kubelet node
	$(PY) -m tests.rig up $(RIG_ARGS)

rig-down: ## Stop everything rig-up started
	$(PY) -m tests.rig down

demo: deps-local ## The demo: local mode, one worker process per nsqd, nsqds joining and leaving
	$(PY) -m demo local

demo-kube: deps ## The demo on the rig's real node: the operator and the workers as pods
	$(PY) -m demo kube

bench: deps ## Run the benchmarks and write BENCHMARKS.md
	$(PY) -m bench

soak: deps ## The long reliability scenarios, written to RELIABILITY.md
	@# The report is written even when a scenario fails (its row says what it found); make still fails.
	status=0; NSQ_SOAK=1 $(PY) -m pytest tests/reliability || status=$$?; $(PY) -m tests.reliability.report; exit $$status

chart-crd: ## Copy the CRD from deploy/crds into the chart (a test checks they match)
	cp deploy/crds/nsqconsumers.nsqoperator.dev.yaml deploy/helm/nsq-operator/files/
