# Dispatch: `make run` starts everything on a fresh machine; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
export PORT

.PHONY: run test test-fast test-integration test-browser install lint bench clean help

help:
	@echo "make run    install, migrate, seed demo data, start web + worker + beat + SMTP sink"
	@echo "make test   install and run the whole test suite (pytest)"
	@echo "make test-fast | test-integration | test-browser   one suite alone"
	@echo "make lint   ruff"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $@

install: $(VENV)/.installed

run: install
	@mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	@echo ""
	@echo "  Dispatch is starting on http://127.0.0.1:$(PORT)/  (Ctrl-C stops every process)"
	@echo "  Mailbox of the local SMTP sink: http://127.0.0.1:$(PORT)/dev/mailbox/ (as admin)"
	@echo ""
	$(BIN)/honcho start

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not integration and not browser" $(PYTEST_ARGS)

test-integration: install
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

test-browser: install
	$(BIN)/python -m pytest -m browser $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	@echo "See bench/README.md for each benchmark's command."

clean:
	rm -rf var/broker var/mailbox var/test.sqlite3
