# Two commands for a new user: `make demo` and `make test`. Both create the virtual
# environment and fetch the offline datasets themselves, idempotently.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
DATA   := data/datasets
STAMP  := $(VENV)/.installed

.PHONY: venv data browser demo test bench clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (SNE pins torch==2.14.1, built for Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch and torchvision first, by exact version: pip takes these builds from local disk here.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $@

data: venv
	$(PY) -m sne_core.fetch --root $(DATA)

# Debian's Chromium for the UI tests (Playwright drives it; it never downloads its own browser).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The whole Dagster graph with the demo profile (progress as it goes, the three tables at the end).
demo: data
	$(VENV)/bin/python -m pipelines.demo

test: data browser
	$(PY) -m pytest -q

bench: data
	$(PY) -m bench.zoo_train
	$(PY) -m bench.encoder
	$(PY) -m bench.store_write

clean:
	rm -rf $(VENV) data/store data/mlflow
