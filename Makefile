# The README's commands. Everything runs from a project-local virtualenv (.venv).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
PIP     := $(VPY) -m pip
STAMP   := $(VENV)/.deps-stamp
DEMO_STAMP := $(VENV)/.demo-stamp
# What `make build`/`make demo` install: the runtime (packaging/runtime-requirements.txt), the
# build tools and the simulators (pymodbus, asyncua), at the versions pinned in requirements-dev.txt; not the
# test, lint and type-check tools (`make test`/`make lint` add those: requirements-dev.txt).
DEMO_PKGS := setuptools wheel Cython pymodbus asyncua
DEMO_PINS = $(shell grep -E '^($(subst $(SPACE),|,$(DEMO_PKGS)))(==.*)?$$' requirements-dev.txt)
SPACE := $(subst ,, )

.PHONY: demo test test-native test-pure hil build lint bench soak slow fuzz fuzz-api chaos clean venv \
	bench-web test-web opcua-node \
	micropython-check deb image image-test power-cut recipes-test docker lint-images ci-images

$(VPY):
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The project itself is installed editable: `.venv/bin/gateway`, and `import gateway` finds this
# tree and the extensions `make build` compiles in place (not compiled here a second time).
$(DEMO_STAMP): pyproject.toml requirements-dev.txt packaging/runtime-requirements.txt | $(VPY)
	$(PIP) install -q -r packaging/runtime-requirements.txt $(DEMO_PINS)
	GATEWAY_PUREPYTHON=1 $(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

$(STAMP): pyproject.toml requirements-dev.txt packaging/runtime-requirements.txt | $(VPY)
	$(PIP) install -q -r requirements-dev.txt
	touch $@

venv: $(DEMO_STAMP)

build: $(DEMO_STAMP)
	$(VPY) setup.py -q build_ext --inplace

demo: build
	$(VPY) -m gateway demo

test: $(STAMP) build lint-images opcua-node
	GATEWAY_REQUIRE_NATIVE=1 $(VPY) -m pytest -q tests hil_tests
	GATEWAY_PUREPYTHON=1 $(VPY) -m pytest -q tests

# The node-opcua interop server of the OPC UA tests (tests/opcua_node), at its locked versions;
# again only when the lockfile changed. Needs Node.js >= 18 and npm (.ci/run installs them).
opcua-node: tests/opcua_node/node_modules/.installed
tests/opcua_node/node_modules/.installed: tests/opcua_node/package.json tests/opcua_node/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js >= 18 and npm (apt-get install nodejs npm)"; exit 1; }
	cd tests/opcua_node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# A real rig: make hil RIG=rig.yaml (see hil_tests/README.md); JUnit XML + summary in build/hil/.
RIG ?=
hil: $(STAMP) build
	mkdir -p build/hil
	GATEWAY_REQUIRE_NATIVE=1 $(if $(RIG),GATEWAY_RIG=$(abspath $(RIG))) $(VPY) -m pytest -q hil_tests \
		--junitxml=build/hil/junit.xml --hil-summary=build/hil/summary.txt

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway tests hil_tests bench
	$(VENV)/bin/ruff format --check gateway tests hil_tests bench
	$(VENV)/bin/mypy gateway

bench: $(STAMP) build
	$(VPY) bench/run_all.py

# The operator page's cost: the gateway's RSS with the listener off, on, and the page open in
# Debian's chromium (~3 min). test-web: only the page's tests (Chromium; part of make test).
bench-web: $(STAMP) build
	$(VPY) bench/bench_web.py
test-web: $(STAMP) build
	$(VPY) -m pytest -q tests/test_web.py tests/test_web_assets.py tests/test_web_demo.py

# The real pipeline for SOAK_MINUTES (default 60) at 10,000 datapoints/s with the cloud receiver
# stopped for a third of every quarter (5 min every 15 min); passes on RSS growth < 2 MB after
# warm-up and 0 lost or duplicated (bench/soak.py). `make soak SOAK_MINUTES=6`: a smoke run.
SOAK_MINUTES ?= 60
soak: $(STAMP) build
	SOAK_MINUTES=$(SOAK_MINUTES) GATEWAY_REQUIRE_NATIVE=1 $(VPY) bench/soak.py

# Every test marked slow (the chaos runs and the long rule-parser fuzz).
slow: $(STAMP) build
	GATEWAY_REQUIRE_NATIVE=1 $(VPY) -m pytest -q -m slow -o addopts= tests hil_tests

# The node SDK against MicroPython's stubs, in its own venv (.venv-mpy); ~1 min the first time.
micropython-check:
	PY=$(PY) sh micropython/check.sh

# Parsers and the rule-expression parser under hypothesis with 20k examples each
# (compiled == pure, bounded buffers, clean errors), downlink commands (20k direct, 4k over the
# wire); ~15 min. The receiver's message handling (real sockets, up to 12 messages from 2 hostile
# peers per example) with 10k; ~3 min.
fuzz: $(STAMP) build
	GATEWAY_FUZZ_EXAMPLES=20000 GATEWAY_REQUIRE_NATIVE=1 $(VPY) -m pytest -q -o addopts= -p no:cacheprovider \
		tests/test_node_frame.py tests/test_can_codec.py tests/test_modbus_parity.py tests/test_rtu_stream.py \
		tests/test_downlink_fuzz.py
	GATEWAY_FUZZ_EXAMPLES=10000 $(VPY) -m pytest -q -o addopts= -p no:cacheprovider tests/test_receiver_fuzz.py
	GATEWAY_FUZZ_EXAMPLES=20000 $(VPY) -m pytest -q -m slow -o addopts= tests/test_rules_fuzz.py

# The REST API fuzzed from its OpenAPI document (schemathesis), 200 examples per operation,
# without credentials and as an operator; `make test` runs 3. About 11 minutes here.
fuzz-api: $(STAMP) build
	GATEWAY_API_FUZZ_EXAMPLES=200 $(VPY) -m pytest -q -o addopts= -o timeout=1800 tests/test_api_fuzz.py

# Uplink fault runs: 60 s chaos (>= 24 SIGKILL/SIGSTOP faults at 1500 rec/s) and a 10-minute
# outage at 1000 rec/s on a fast clock (600k records); about 2.5 minutes together. Then the cloud
# side's: 3 receivers on one PostgreSQL, 50 CurveZMQ gateways, a receiver SIGKILLed, PostgreSQL
# crashed, a receiver SIGSTOPped past its timeouts (about 1 minute).
chaos: $(STAMP) build
	GATEWAY_REQUIRE_NATIVE=1 $(VPY) -m pytest -q -s -m slow -o addopts= tests/test_uplink_chaos.py
	GATEWAY_REQUIRE_NATIVE=1 $(VPY) -m pytest -q -s -m slow -o addopts= tests/test_cloud_pg_chaos.py

clean:
	rm -rf build dist *.egg-info .venv-mpy gateway/_native/*.so gateway/_native/*.c native/*.c

# -- images, packages, containers (see images/README.md). Heavy steps cache under build/images/.
IMG      := build/images
ROOTFS   := $(IMG)/rootfs-base.tar
CBASE    := $(IMG)/container-base.tar
VERSION   = $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

lint-images: $(STAMP)
	images/host-deps.sh lint
	images/lint.sh $(VENV)/bin

deb: $(STAMP)
	images/host-deps.sh image
	$(VPY) packaging/build_deb.py --arch arm64 --out $(IMG)

$(ROOTFS): images/debian-rpi/mkrootfs.sh
	images/host-deps.sh image
	mkdir -p $(IMG)
	images/debian-rpi/mkrootfs.sh $@.tmp && mv $@.tmp $@

image: deb $(ROOTFS)
	images/debian-rpi/build-image.sh $(ROOTFS) $(IMG)/edge-gateway_$(VERSION)_arm64.deb $(IMG)

# The boot test, then POWER_CUTS power cuts of the same VM during ingest (CI: one, ~3 min more).
POWER_CUTS ?= 1
image-test: image
	$(VPY) images/debian-rpi/boot_test.py --image $(IMG)/gateway-rpi-arm64.img.zst \
		--power-cuts $(POWER_CUTS)

# Ten power cuts during ingest, each booted again from the same disk (images/README.md).
power-cut: image
	$(VPY) images/debian-rpi/boot_test.py --image $(IMG)/gateway-rpi-arm64.img.zst \
		--no-watchdog --power-cuts 10 --work $(IMG)/power-cut

recipes-test: deb $(ROOTFS)
	images/recipes-test.sh $(ROOTFS) $(IMG)/edge-gateway_$(VERSION)_arm64.deb

$(CBASE): images/docker/mkbase.sh
	images/host-deps.sh docker
	mkdir -p $(IMG)
	images/docker/mkbase.sh $@.tmp && mv $@.tmp $@

docker: $(STAMP) $(CBASE)
	images/host-deps.sh docker
	PYTHON=$(VPY) images/docker/build.sh $(CBASE) $(IMG)

# CI's second step (.ci/run): everything above from cold, about 25 minutes on 2 shared cores.
ci-images: image-test recipes-test docker
