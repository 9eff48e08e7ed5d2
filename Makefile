# switchctl — every entry point an operator or CI uses. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SITE ?= examples/phonebar/site.yaml
ASTERISK_SITE ?= examples/phonebar-asterisk/site.yaml
CONF_DIR ?= /etc/freeswitch
RENDER_DIR ?= freeswitch-conf/phonebar
DIAL ?= 9000
PRESS ?= 1 9
# demo-data: the site whose store gets the example rates and a funded booth (the one `make run` runs)
ifdef SWITCHCTL_FS_ESL
DEMO_SITE ?= $(SITE)
else
DEMO_SITE ?= $(ASTERISK_SITE)
endif
DEMO_BOOTHS ?= 1001
DEMO_FLOAT ?= 10.00

.PHONY: help setup demo-data run run-fs-sim call-fs-sim test check render deploy bench call flow-test clean asterisk-start asterisk-stop asterisk-status

help:
	@echo "make setup    install system packages (Debian) and the Python venv"
	@echo "make run      the example phone bar on a real Asterisk ($(ASTERISK_SITE)); with SWITCHCTL_FS_ESL: $(SITE) on that FreeSWITCH"
	@echo "make run-fs-sim                        $(SITE) on the FreeSWITCH simulator (calls: make call-fs-sim)"
	@echo "make demo-data  import the site's rates.csv, create and fund booth $(DEMO_BOOTHS) (make run does it; idempotent)"
	@echo "make test     the whole test suite"
	@echo "make check    validate $(SITE) and its call flows"
	@echo "make render   render the FreeSWITCH config of $(SITE) into $(RENDER_DIR)"
	@echo "make deploy   install the rendered config into CONF_DIR=$(CONF_DIR) and reload the switch"
	@echo "make call DIAL=9000 PRESS='1 9'       a sipp call to the running make run (PRESS: digits, '-', 'hangup')"
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

# `make run`: the example phone bar on the real Asterisk 22 of `make setup` (loopback only): start
# it, deploy the site's rendered config and prompts into it (reloaded over ARI; an http.conf
# change, which a reload cannot apply, restarts Asterisk), then the controller in the foreground.
# With SWITCHCTL_FS_ESL set: the FreeSWITCH site ($(SITE)) against that real FreeSWITCH.
ifdef SWITCHCTL_FS_ESL
run: setup demo-data
	$(BIN)/switchctl run -c $(SITE)
else
run: setup demo-data
	tools/asterisk-setup.sh start
	@http=$${SWITCHCTL_ASTERISK_ROOT:-/var/lib/switchctl/asterisk}/root/etc/asterisk/http.conf; \
	  settings() { sed -e 's/;.*//' -e '/^[[:space:]]*$$/d' "$$http" 2>/dev/null; }; \
	  before=$$(settings); \
	  $(BIN)/switchctl deploy -c $(ASTERISK_SITE) || exit 1; \
	  if [ "$$before" != "$$(settings)" ]; then \
	    echo "http.conf changed (ARI's listener): restarting Asterisk"; tools/asterisk-setup.sh restart; \
	  fi
	@echo
	@echo "switchctl runs the phone bar ($(ASTERISK_SITE)) on Asterisk: SIP 127.0.0.1:5060, ARI 127.0.0.1:8088."
	@echo "Place a call from another shell:"
	@echo "  make call                        (9000, the main menu: press 1, then 9)"
	@echo "  make call DIAL=9000 PRESS='2 hangup'"
	@echo "make call prints what the call did; the controller logs below. Stop with Ctrl-C (Asterisk keeps running: make asterisk-stop)."
	@echo
	$(BIN)/switchctl run -c $(ASTERISK_SITE)
endif

# The phone bar's money, in the store of DEMO_SITE, through the CLI, idempotently: the rate table
# rates.csv beside the site (imported only when it differs from the current version, so reruns add
# no versions), and for each of DEMO_BOOTHS its booth account (named after the extension,
# docs/BOOTHS.md) with a float of DEMO_FLOAT EUR, topped up once (a fixed idempotency key: a
# drained booth is refilled by hand, `switchctl account topup -c SITE 1001 5.00`).
demo-data: $(VENV)/.installed
	@rates=$$(dirname $(DEMO_SITE))/rates.csv; \
	  if diff -q <($(BIN)/switchctl rates export -c $(DEMO_SITE) --class default 2>/dev/null) "$$rates" >/dev/null; then \
	    echo "rates: $$rates is the current rate table"; \
	  else \
	    $(BIN)/switchctl rates import -c $(DEMO_SITE) "$$rates" --class default || exit 1; \
	  fi
	@for booth in $(DEMO_BOOTHS); do \
	  $(BIN)/switchctl account show -c $(DEMO_SITE) $$booth >/dev/null 2>&1 || \
	    $(BIN)/switchctl account create -c $(DEMO_SITE) $$booth --kind booth --currency EUR >/dev/null || exit 1; \
	  $(BIN)/switchctl account topup -c $(DEMO_SITE) $$booth $(DEMO_FLOAT) --key demo-float-$$booth \
	    --note "demo float (make demo-data)" || exit 1; \
	done

# The simulator demo: the FreeSWITCH site on switchctl's FreeSWITCH simulator; calls: make call-fs-sim
run-fs-sim: DEMO_SITE = $(SITE)
run-fs-sim: setup demo-data
	$(BIN)/switchctl run -c $(SITE) --simulator

test: setup
	$(BIN)/python -m pytest -q

check: setup
	$(BIN)/switchctl check -c $(SITE)

render: setup
	$(BIN)/switchctl render -c $(SITE) --out $(RENDER_DIR) --prune

deploy: setup
	$(BIN)/switchctl deploy -c $(SITE) --conf-dir $(CONF_DIR)

# A call on the running `make run`: a real SIP call with sipp and RFC 2833 digits (one --press
# group every 3 s after the answer) on Asterisk, an ESL call when SWITCHCTL_FS_ESL is set. Only the
# venv is needed: `setup` would rewrite the live Asterisk config under the running demo.
ifdef SWITCHCTL_FS_ESL
call: $(VENV)/.installed
	$(BIN)/switchctl call -c $(SITE) $(DIAL) $(foreach p,$(PRESS),--press '$(p)')
else
call: $(VENV)/.installed
	$(BIN)/switchctl sipcall -c $(ASTERISK_SITE) $(DIAL) $(foreach p,$(PRESS),--press '$(p)')
endif

# A call on the running `make run-fs-sim` (over the simulator's event socket)
call-fs-sim: $(VENV)/.installed
	$(BIN)/switchctl call -c $(SITE) $(DIAL) $(foreach p,$(PRESS),--press '$(p)')

flow-test: setup
	$(BIN)/switchctl flow test -c $(SITE) --dial $(DIAL) $(foreach p,$(PRESS),--press '$(p)')

# Every benchmark in docs/BENCHMARKS.md (about 10 minutes; ari_cps starts a private Asterisk).
bench: setup
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/esl_parse.py
	$(BIN)/python bench/flow_cps.py
	$(BIN)/python bench/rating.py
	$(BIN)/python bench/ari_cps.py
	$(BIN)/python bench/cutoff.py
	$(BIN)/python bench/transfer.py

asterisk-start:
	tools/asterisk-setup.sh start

asterisk-stop:
	tools/asterisk-setup.sh stop

asterisk-status:
	tools/asterisk-setup.sh status

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
