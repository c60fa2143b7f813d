# Two commands do everything on a fresh machine: `make demo` and `make test`.
.PHONY: setup demo test test-slow bench
VENV ?= .venv

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/horse model-info --preset demo

test: setup
	$(VENV)/bin/python -m pytest -q

test-slow: setup
	$(VENV)/bin/python -m pytest -q -m slow

bench: setup
	$(VENV)/bin/horse bench model --preset small --tokens 4096
	$(VENV)/bin/horse bench model --preset small --tokens 4096 --forward-only
