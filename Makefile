# The README's commands. Everything runs from a project-local virtualenv (.venv).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
PIP     := $(VPY) -m pip
STAMP   := $(VENV)/.deps-stamp

.PHONY: demo test test-native test-pure hil build lint bench soak slow fuzz chaos clean venv \
	micropython-check deb image image-test power-cut recipes-test docker lint-images ci-images

$(STAMP): pyproject.toml requirements-dev.txt packaging/runtime-requirements.txt
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

build: $(STAMP)
	$(VPY) setup.py -q build_ext --inplace

demo: build
	$(VPY) -m gateway.cli demo

test: build lint-images
	GATEWAY_REQUIRE_NATIVE=1 $(VPY) -m pytest -q tests hil_tests
	GATEWAY_PUREPYTHON=1 $(VPY) -m pytest -q tests

# A real rig: make hil RIG=rig.yaml (see hil_tests/README.md); JUnit XML + summary in build/hil/.
RIG ?=
hil: build
	mkdir -p build/hil
	GATEWAY_REQUIRE_NATIVE=1 $(if $(RIG),GATEWAY_RIG=$(abspath $(RIG))) $(VPY) -m pytest -q hil_tests \
		--junitxml=build/hil/junit.xml --hil-summary=build/hil/summary.txt

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway tests hil_tests bench
	$(VENV)/bin/ruff format --check gateway tests hil_tests bench
	$(VENV)/bin/mypy gateway

bench: build
	$(VPY) bench/run_all.py

# The real pipeline for SOAK_MINUTES (default 60) at 10,000 datapoints/s with the cloud receiver
# stopped for a third of every quarter (5 min every 15 min); passes on RSS growth < 2 MB after
# warm-up and 0 lost or duplicated (bench/soak.py). `make soak SOAK_MINUTES=6`: a smoke run.
SOAK_MINUTES ?= 60
soak: build
	SOAK_MINUTES=$(SOAK_MINUTES) GATEWAY_REQUIRE_NATIVE=1 $(VPY) bench/soak.py

# Every test marked slow (the chaos runs and the long rule-parser fuzz).
slow: build
	GATEWAY_REQUIRE_NATIVE=1 $(VPY) -m pytest -q -m slow -o addopts= tests hil_tests

# The node SDK against MicroPython's stubs, in its own venv (.venv-mpy); ~1 min the first time.
micropython-check:
	PY=$(PY) sh micropython/check.sh

# Parsers and the rule-expression parser under hypothesis with 20k examples each
# (compiled == pure, bounded buffers, clean errors), downlink commands (20k direct, 4k over the
# wire); ~15 min. The receiver's message handling (real sockets, up to 12 messages from 2 hostile
# peers per example) with 10k; ~3 min.
fuzz: build
	GATEWAY_FUZZ_EXAMPLES=20000 GATEWAY_REQUIRE_NATIVE=1 $(VPY) -m pytest -q -o addopts= -p no:cacheprovider \
		tests/test_node_frame.py tests/test_can_codec.py tests/test_modbus_parity.py tests/test_rtu_stream.py \
		tests/test_downlink_fuzz.py
	GATEWAY_FUZZ_EXAMPLES=10000 $(VPY) -m pytest -q -o addopts= -p no:cacheprovider tests/test_receiver_fuzz.py
	GATEWAY_FUZZ_EXAMPLES=20000 $(VPY) -m pytest -q -m slow -o addopts= tests/test_rules_fuzz.py

# Uplink fault runs: 60 s chaos (>= 24 SIGKILL/SIGSTOP faults at 1500 rec/s) and a 10-minute
# outage at 1000 rec/s on a fast clock (600k records); about 2.5 minutes together.
chaos: build
	GATEWAY_REQUIRE_NATIVE=1 $(VPY) -m pytest -q -s -m slow -o addopts= tests/test_uplink_chaos.py

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
