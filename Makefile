# switchctl — every entry point an operator or CI uses. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SITE ?= examples/phonebar/site.yaml
CONF_DIR ?= /etc/freeswitch
RENDER_DIR ?= freeswitch-conf/phonebar
DIAL ?= 9000
PRESS ?= 1 9

.PHONY: help setup run test check render deploy bench call flow-test clean asterisk-start asterisk-stop asterisk-status

help:
	@echo "make setup    install system packages (Debian) and the Python venv"
	@echo "make run      run the controller on $(SITE) (with the FreeSWITCH simulator unless SWITCHCTL_FS_ESL is set)"
	@echo "make test     the whole test suite"
	@echo "make check    validate $(SITE) and its call flows"
	@echo "make render   render the FreeSWITCH config of $(SITE) into $(RENDER_DIR)"
	@echo "make deploy   install the rendered config into CONF_DIR=$(CONF_DIR) and reload the switch"
	@echo "make call DIAL=9000 PRESS='1 9'       place a call on the running site's switch (after make run)"
	@echo "make flow-test DIAL=9000 PRESS='1 9'  run a flow on a private simulator and print its path"
	@echo "make bench    benchmarks (figures go to docs/BENCHMARKS.md)"
	@echo "make asterisk-start / asterisk-stop / asterisk-status   real Asterisk 22 (sid chroot): ARI 127.0.0.1:8088, SIP 127.0.0.1:5060"

# The Python venv, PostgreSQL's server binaries (tests start throwaway clusters), then a real Asterisk 22
# in a sid chroot on loopback (tests and Asterisk sites use it; 45 s the first time, 0.1 s after). An
# unreachable Debian archive fails here with a clear message.
setup: $(VENV)/.installed
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing postgresql (Debian): the scale-out store's tests start a throwaway cluster"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi
	tools/asterisk-setup.sh setup

# Debian 12 ships python3.11 but not always venv/pip; install what is missing, once.
$(VENV)/.installed: setup.cfg pyproject.toml
	@if ! $(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1; then \
	  echo "installing python3-venv (Debian)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

run: setup
	$(BIN)/switchctl run -c $(SITE) $(if $(SWITCHCTL_FS_ESL),,--simulator)

test: setup
	$(BIN)/python -m pytest -q

check: setup
	$(BIN)/switchctl check -c $(SITE)

render: setup
	$(BIN)/switchctl render -c $(SITE) --out $(RENDER_DIR) --prune

deploy: setup
	$(BIN)/switchctl deploy -c $(SITE) --conf-dir $(CONF_DIR)

call: setup
	$(BIN)/switchctl call -c $(SITE) $(DIAL) $(foreach p,$(PRESS),--press '$(p)')

flow-test: setup
	$(BIN)/switchctl flow test -c $(SITE) --dial $(DIAL) $(foreach p,$(PRESS),--press '$(p)')

bench: setup
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/esl_parse.py
	$(BIN)/python bench/flow_cps.py

asterisk-start:
	tools/asterisk-setup.sh start

asterisk-stop:
	tools/asterisk-setup.sh stop

asterisk-status:
	tools/asterisk-setup.sh status

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
