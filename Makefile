# vidray: two commands do all set-up on a fresh machine.
#   make demo   synth corpus -> ingest (Ray Data) -> train (Ray Train) -> eval, MLflow run, on this machine
#   make test   install (venv + package + test extras) and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo

.PHONY: install test test-fast demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	touch $@

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

demo: install
	@$(BIN)/vidray synth --out $(DEMO)/corpus --videos 60 --kind motion --seed 0
	@$(BIN)/vidray ingest $(DEMO)/corpus/manifest.csv --out $(DEMO)/data --config configs/demo_ingest.yaml
	@$(BIN)/vidray train --data $(DEMO)/data --config configs/train_demo.yaml --workers 1 --out $(DEMO)/run
	@$(BIN)/vidray eval $(DEMO)/run --data $(DEMO)/data --split test --clips 2 --crops 3
	@$(BIN)/vidray inspect $(DEMO)/data --html $(DEMO)/data.html > /dev/null && echo "dataset page: $(abspath $(DEMO))/data.html"
	@echo "MLflow: $(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath $(DEMO))/run/mlflow.db --host 127.0.0.1"

bench: install
	$(BIN)/python benchmarks/decode.py
	$(BIN)/python benchmarks/flow.py
	$(BIN)/python benchmarks/loader.py
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(DEMO) .pytest_cache
