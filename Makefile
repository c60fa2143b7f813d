# Two commands do everything on a fresh machine: `make train` and `make test`.
.PHONY: setup train demo test test-slow bench
VENV ?= .venv

setup:
	@bash scripts/setup.sh

train: setup
	$(VENV)/bin/python train.py $(ARGS)

demo: train

test: setup
	$(VENV)/bin/python -m pytest -q

test-slow: setup
	$(VENV)/bin/python -m pytest -q -m slow

bench: setup
	$(VENV)/bin/horse bench model --preset small --tokens 4096
	$(VENV)/bin/horse bench model --preset small --tokens 4096 --forward-only
	$(VENV)/bin/horse bench loader
