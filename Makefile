# The README's commands. Everything runs from a project-local virtualenv (.venv).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
PIP     := $(VPY) -m pip
STAMP   := $(VENV)/.deps-stamp

.PHONY: demo test test-native test-pure hil build lint bench soak fuzz chaos clean venv micropython-check

$(STAMP): pyproject.toml requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

build: $(STAMP)
	$(VPY) setup.py -q build_ext --inplace

demo: build
	$(VPY) -m gateway.cli demo

test: build
	GATEWAY_REQUIRE_NATIVE=1 $(VPY) -m pytest -q tests hil_tests
	GATEWAY_PUREPYTHON=1 $(VPY) -m pytest -q tests

hil: build
	GATEWAY_REQUIRE_NATIVE=1 $(VPY) -m pytest -q hil_tests

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway tests hil_tests bench
	$(VENV)/bin/ruff format --check gateway tests hil_tests bench
	$(VENV)/bin/mypy gateway

bench: build
	$(VPY) bench/run_all.py

soak: build
	GATEWAY_REQUIRE_NATIVE=1 $(VPY) -m pytest -q -m slow -o addopts= tests hil_tests

# The node SDK against MicroPython's stubs, in its own venv (.venv-mpy); ~1 min the first time.
micropython-check:
	PY=$(PY) sh micropython/check.sh

# Parsers and the rule-expression parser under hypothesis with 20k examples each
# (compiled == pure, bounded buffers, clean errors); ~9 min.
fuzz: build
	GATEWAY_FUZZ_EXAMPLES=20000 GATEWAY_REQUIRE_NATIVE=1 $(VPY) -m pytest -q -o addopts= -p no:cacheprovider \
		tests/test_node_frame.py tests/test_can_codec.py tests/test_modbus_parity.py tests/test_rtu_stream.py
	GATEWAY_FUZZ_EXAMPLES=20000 $(VPY) -m pytest -q -m slow -o addopts= tests/test_rules_fuzz.py

# Uplink fault runs: 60 s chaos (>= 24 SIGKILL/SIGSTOP faults at 1500 rec/s) and a 10-minute
# outage at 1000 rec/s on a fast clock (600k records); about 2.5 minutes together.
chaos: build
	GATEWAY_REQUIRE_NATIVE=1 $(VPY) -m pytest -q -s -m slow -o addopts= tests/test_uplink_chaos.py

clean:
	rm -rf build dist *.egg-info .venv-mpy gateway/_native/*.so gateway/_native/*.c native/*.c
