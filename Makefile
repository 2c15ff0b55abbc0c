# DeviceVault: `make demo` backs up the simulated lab; `make test` runs the test suite.
# Both set up everything they need on a fresh Debian machine (virtualenv, redis-server).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export LC_ALL := C.UTF-8
export LANG := C.UTF-8

.PHONY: setup demo demo-stop test clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt  # this checkout, editable, with its test extras
	touch $@

setup: $(VENV)/.installed
	@command -v redis-server >/dev/null || { \
	  echo "installing Debian's redis-server"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null \
	  || { echo "could not install redis-server (run as root, or: sudo apt-get install redis-server)"; exit 1; }; }
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium (the portal's browser test)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
	  || { echo "could not install chromium (run as root, or: sudo apt-get install chromium)"; exit 1; }; }

demo: setup
	$(VENV)/bin/devicevault demo

demo-stop:
	$(VENV)/bin/devicevault demo --stop

test: setup
	$(PY) -m pytest -q -rs -n 2 --dist loadfile --durations=30

clean:
	-$(VENV)/bin/devicevault demo --stop
	rm -rf var
