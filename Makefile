# Quick start on a fresh machine: `make run` (the pipeline locally, tiny config) and `make test`.
SHELL := /bin/bash
CONFIG ?= configs/tiny.yaml
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export PYTHONPATH := $(CURDIR)
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
# local Ray workers use this environment's Python instead of building a uv copy of it
export RAY_ENABLE_UV_RUN_RUNTIME_ENV := 0

.PHONY: setup system-deps run run-full run-data test test-fast base-model bench-search lint clean clean-cache images package

system-deps:  ## Debian packages the agent's shell tool needs (tmux, bubblewrap)
	@if ! command -v tmux >/dev/null || ! command -v bwrap >/dev/null; then \
	  echo "installing tmux and bubblewrap"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq tmux bubblewrap >/dev/null; \
	fi

$(UV):
	@command -v uv >/dev/null || python3 -m pip install --quiet --user uv

setup: system-deps $(UV)  ## uv + the locked environment
	@$(UV) sync --locked --quiet

run: setup  ## the whole recipe locally on $(CONFIG) (a local Flyte execution), ending with the evaluation table
	$(UV) run pyflyte run workflows/full.py full --config $(CONFIG)

run-full: run  ## same as `run` (kept for old instructions)

run-data: setup  ## the data half only: world → synthesis → quality gates (~30 s)
	$(UV) run pyflyte run workflows/data.py data --config $(CONFIG)

test: setup  ## the whole test suite (CPU, a few minutes)
	$(UV) run pytest

test-fast: setup  ## skip the end-to-end Flyte runs
	$(UV) run pytest -m "not slow"

base-model: setup  ## re-pretrain the shipped tiny base model (registry/models/tiny-base) from generated text (2 CPU cores: ~15 min)
	$(UV) run python -m deepresearch.modeling.pretrain --out registry/models/tiny-base

bench-search: setup  ## index ≥1M paragraphs and measure query latency (several minutes)
	$(UV) run python benchmarks/search_bench.py

images: setup  ## build and push the four step-family images (needs Docker; DEEPRESEARCH_IMAGE_REGISTRY sets the registry)
	$(UV) run python -m containers.images

package: setup  ## the registrable Flyte archive for $(CONFIG) (no cluster, no image build): dist/flyte-package.tgz
	mkdir -p dist
	DEEPRESEARCH_CONFIG=$(CONFIG) $(UV) run pyflyte --pkgs workflows package --force \
	  --image "$$($(UV) run python -c 'from containers.images import DATA_IMAGE; print(DATA_IMAGE.image_name())')" \
	  --output dist/flyte-package.tgz

lint: setup
	$(UV) run ruff check deepresearch tasks workflows tests benchmarks

clean: clean-cache
	rm -rf out runs dist mlflow.db mlartifacts .pytest_cache

clean-cache:  ## this project's entries in Flyte's local cache (~/.flyte/local-cache), which outlive mlflow.db and temp dirs
	@if [ -x .venv/bin/python ]; then .venv/bin/python -m tasks.cache clear; \
	else echo "no .venv: nothing to clear with (run make setup first)"; fi
