# The two commands of the README:
#   make examples   install, then run every example through an embedded stack (dcodex up),
#                   and judge every solution of examples/judge (docs/judge.md)
#   make test       install with the dev tools, then ruff, ruff format --check, mypy (strict),
#                   lint-imports and the whole test suite (CONTRIBUTING.md)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: system-deps install install-dev examples test schemas

system-deps:
	./scripts/system-deps.sh

$(BIN)/python:
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: system-deps $(BIN)/python
	$(BIN)/pip install --quiet -e '.[server]'

install-dev: system-deps $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

examples: install
	$(BIN)/dcodex up -- sh -c '$(BIN)/dcodex bus run --manifest examples/manifest.toml \
		--directory examples/c --directory examples/cpp --directory examples/python \
		&& examples/judge/judge-all.sh $(BIN)/dcodex'

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	# import-linter finds the dcodex package through the same links as mypy
	PYTHONPATH=typecheck $(BIN)/lint-imports
	$(BIN)/pytest

schemas: install
	$(BIN)/dcodex schemas
