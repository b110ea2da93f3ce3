# Dispatch: `make run` starts everything on a fresh machine; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
HOST   ?= 127.0.0.1
SMTP_SINK_PORT ?= 1025
export PORT
# The address `make run` serves, as a URL host (an IPv6 address goes in brackets).
URL_HOST = $(if $(and $(findstring :,$(HOST)),$(if $(findstring [,$(HOST)),,x)),[$(HOST)],$(HOST))

.PHONY: run test test-fast test-integration test-browser test-faults install lint bench bench-postoffice bench-smtp-sink clean help

help:
	@echo "make run    install, migrate, seed demo data, start web + worker + beat + SMTP sink"
	@echo "make test   install and run the whole test suite (pytest)"
	@echo "make test-fast | test-integration | test-browser | test-faults   one suite alone"
	@echo "make lint   ruff"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $@

install: $(VENV)/.installed

# Every process of `make run` (Procfile) sends to the sink it starts and builds links (and the CSRF
# trusted origins) on the address it serves, whatever PORT, HOST and SMTP_SINK_PORT say, unless
# EMAIL_URL or SITE_URL are set.
run: export HOST := $(HOST)
run: export SMTP_SINK_PORT := $(SMTP_SINK_PORT)
run: export EMAIL_URL ?= smtp://127.0.0.1:$(SMTP_SINK_PORT)
run: export SITE_URL ?= http://$(URL_HOST):$(PORT)
run: install
	@mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	@echo ""
	@echo "  Dispatch is starting on http://$(URL_HOST):$(PORT)/  (Ctrl-C stops every process)"
	@echo "  Mailbox of the local SMTP sink (port $(SMTP_SINK_PORT)): http://$(URL_HOST):$(PORT)/dev/mailbox/ (as admin)"
	@echo ""
	$(BIN)/python -m system.procfile

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not integration and not browser and not faults" $(PYTEST_ARGS)

test-integration: install
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

test-browser: install
	$(BIN)/python -m pytest -m browser $(PYTEST_ARGS)

test-faults: install
	$(BIN)/python -m pytest -m faults $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	@echo "See bench/README.md for each benchmark's command."

# django-post-office, the peer of the send benchmark, in a virtualenv of its own (bench/README.md).
bench/.venv-postoffice/bin/python:
	$(PYTHON) -m venv bench/.venv-postoffice
	bench/.venv-postoffice/bin/python -m pip install --quiet "Django==5.2.*" "django-post-office==3.12.*" "psycopg[binary]==3.*"

bench-postoffice: bench/.venv-postoffice/bin/python

# Postfix's smtp-sink (C), a loopback relay faster than any worker, from Debian's package without
# installing a mail server: bench/.postfix/usr/sbin/smtp-sink (bench/README.md).
bench/.postfix/usr/sbin/smtp-sink:
	mkdir -p bench/.postfix
	cd bench/.postfix && apt-get download postfix && dpkg -x postfix_*.deb . && rm -f postfix_*.deb

bench-smtp-sink: bench/.postfix/usr/sbin/smtp-sink

clean:
	rm -rf var/broker var/mailbox var/test.sqlite3
