# The two set-up commands of the README: `make demo` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: demo test lint clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/quantkit demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check quantkit tests benchmarks scripts
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check quantkit tests benchmarks scripts

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
