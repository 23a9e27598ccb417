# The README's two commands: `make demo` and `make test`. Both set up .venv first (once).
# torch is installed on its own, first: on a machine without a GPU, `torch==2.13.0` is the CPU build;
# letting pip resolve torch as a dependency would pull the newest CUDA build (several GB).
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0

.PHONY: demo test lint setup
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/llmtune-tui demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
