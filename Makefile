# corral: `make run` starts a node with a demo VM; `make test` runs every check.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CORRAL := $(VENV)/bin/corral
STAMP := $(VENV)/.installed

.PHONY: run test lint unit integration bench deps venv node_modules down clean

deps:
	@bash scripts/install-deps.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# The web UI's browser assets come from npm (package.json + package-lock.json, exact
# versions): `npm ci` installs them, and the files the engine serves are copied into the
# package (engine/ui/static/vendor, not in git) so an installed corral serves them too.
UI_VENDOR := src/corral/engine/ui/static/vendor
NODE_STAMP := node_modules/.corral-installed

$(NODE_STAMP): package.json package-lock.json
	@npm ci --no-audit --no-fund --loglevel=error
	@install -D -m 0644 node_modules/htmx.org/dist/htmx.min.js $(UI_VENDOR)/htmx.min.js
	@install -D -m 0644 -t $(UI_VENDOR)/xterm node_modules/@xterm/xterm/lib/xterm.js \
		node_modules/@xterm/xterm/css/xterm.css node_modules/@xterm/addon-fit/lib/addon-fit.js
	@rm -rf $(UI_VENDOR)/novnc && mkdir -p $(UI_VENDOR)/novnc
	@cp -R node_modules/@novnc/novnc/core node_modules/@novnc/novnc/vendor $(UI_VENDOR)/novnc/
	@install -D -m 0644 -t $(UI_VENDOR)/uplot node_modules/uplot/dist/uPlot.iife.min.js \
		node_modules/uplot/dist/uPlot.min.css
	@touch $(NODE_STAMP)

node_modules: deps $(NODE_STAMP)

venv: deps node_modules $(STAMP)

run: venv
	@bash scripts/run-demo.sh

down:
	@$(CORRAL) down || true

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

# The unit tests run on $(UNIT_WORKERS) pytest-xdist workers (each its own temporary dirs,
# ports and servers); the integration tests in $(INTEGRATION_WORKERS) lanes, a whole module
# at a time on whichever is free: each lane starts its own node on first use (its own lab
# host, name and index), a lab module brings its own lab (namespaces, prefix, root and lab
# indexes apart per lane: tests/integration/labutil.py). (--dist loadgroup would keep the
# node's modules on one worker, but pytest 9 ignores the group suffix xdist 3.8 sets.)
# The HA labs (marked solo) run afterwards, alone: under the other lane's TCG guests a lab
# host's agent went silent past ha.detect_s and was fenced mid-test.
UNIT_WORKERS ?= 2
INTEGRATION_WORKERS ?= 2
LANES = -n $(INTEGRATION_WORKERS) --dist loadfile

unit: venv
	$(VENV)/bin/pytest -q --durations=25 -n $(UNIT_WORKERS) tests/unit

# Both phases run even when the first fails; the target fails if either did.
integration: venv
	rc=0; \
	$(VENV)/bin/pytest -q --durations=25 $(LANES) -m "not solo" tests/integration || rc=$$?; \
	$(VENV)/bin/pytest -q --durations=15 -m solo tests/integration || rc=$$?; \
	exit $$rc

test: venv
	@$(MAKE) --no-print-directory lint unit integration

# Each benchmark starts its own lab host (detection, cluster_api, cluster_rss: a 3-host
# `corral lab up`; scheduler none; api_projects the engine alone, `corral up
# --no-local-agent`; migration a 2-host lab with a shared pool; ha_failover a 3-host lab
# with a shared pool; web_ui the engine alone and Debian's chromium) and writes its own
# section of docs/benchmarks.md.
# bench/all.py runs every one of them (one failing does not skip the others), then prints
# which passed, missed a target or failed; it fails when one failed. `make bench BENCHES=run`
# runs one.
BENCHES := run node_createstart provision image_import network snapshots storage_throughput firmware_boot vm_settings scheduler \
	detection cluster_api cluster_rss api_projects migration ha_simulator ha_failover \
	ha_lease_failover web_ui

bench: venv
	@$(PY) bench/all.py $(BENCHES)

clean:
	rm -rf $(VENV) build *.egg-info node_modules $(UI_VENDOR)
