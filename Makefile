# siplb developer commands. `make demo` and `make test` work on a fresh Debian machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := gcc sip-tester kamailio chromium openssl iproute2 iptables nftables redis-server redis-sentinel exabgp bird2 keepalived dnsmasq-base rtpengine-daemon systemd sngrep

.PHONY: demo test lint typecheck compile pytest pytest-pure e2e system-deps venv bench bench-media bench-parse fuzz clean screenshots

demo: $(STAMP) compile
	$(BIN)/siplb demo

test: system-deps $(STAMP) lint typecheck compile pytest-pure pytest

# The editable install is plain Python; `compile` builds the pure packages with mypyc in place
# (src/siplb/{sip,proxy,dispatch,cluster}/*.so, about 80 s), again whenever a source changed.
# A source edited since is run as plain Python until then (src/siplb/__init__.py).
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip 'setuptools>=77' wheel
	SIPLB_PURE=1 $(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

COMPILED_SOURCES := $(wildcard src/siplb/sip/*.py src/siplb/proxy/*.py src/siplb/dispatch/*.py src/siplb/cluster/*.py)
COMPILED_STAMP := build/.compiled

$(COMPILED_STAMP): $(STAMP) setup.py $(COMPILED_SOURCES)
	mkdir -p build
	$(BIN)/python setup.py --quiet build_ext --inplace --force --build-temp build/temp >build/compile.log 2>&1 \
	  || (tail -30 build/compile.log; exit 1)
	touch $(COMPILED_STAMP)

compile: system-deps $(COMPILED_STAMP)

# SIPp and Kamailio are the real peers of the end-to-end tests, Chromium the browser the
# dashboard tests drive through Playwright (Debian packages; Playwright downloads no browser);
# openssl makes the TLS tests' certificates, iproute2 and iptables build the NAT test's
# network namespaces, nftables holds bans in the kernel (tested in a namespace); redis-server and
# redis-sentinel are the cluster's shared store and its failover (started on loopback ports);
# exabgp and bird2 announce and route the anycast address, keepalived moves a VRRP address (all
# three started by the tests inside network namespaces); dnsmasq (dnsmasq-base: the binary, no
# system service) is the DNS server the destination-name tests start on a loopback port.
# rtpengine-daemon is the media engine the media tests start in userspace on loopback ports
# (no kernel module, no config file: its systemd unit never runs).
# systemd brings systemd-analyze, which verifies packaging/siplb.service offline (no systemd runs).
# sngrep is the HEP collector the capture tests start on a loopback port (no capture device).
# gcc compiles the C that mypyc makes of the pure packages (`make compile`).
system-deps:
	@missing=""; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	command -v sipp >/dev/null 2>&1 || missing="$$missing sip-tester"; \
	command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || missing="$$missing kamailio"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || missing="$$missing iproute2"; \
	command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing="$$missing iptables"; \
	command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing="$$missing nftables"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v redis-sentinel >/dev/null 2>&1 || missing="$$missing redis-sentinel"; \
	[ -x /usr/sbin/exabgp ] || [ -x /usr/bin/exabgp ] || missing="$$missing exabgp"; \
	[ -x /usr/sbin/bird ] || missing="$$missing bird2"; \
	[ -x /usr/sbin/keepalived ] || missing="$$missing keepalived"; \
	[ -x /usr/sbin/dnsmasq ] || missing="$$missing dnsmasq-base"; \
	[ -x /usr/bin/rtpengine ] || [ -x /usr/sbin/rtpengine ] || missing="$$missing rtpengine-daemon"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v sngrep >/dev/null 2>&1 || missing="$$missing sngrep"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

LINTED := $(wildcard src tests bench fuzz)

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: $(STAMP)
	$(BIN)/mypy --strict src/siplb

# pytest exits 5 when it collects no test: make treats that as the failure it is.
# The whole suite runs on the compiled build; the pure packages' own tests run once more as
# plain Python first (their coverage is counted there: compiled code is not traced).
PURE_TESTS := tests/sip tests/proxy tests/dispatch tests/cluster tests/test_build.py

pytest: $(STAMP) $(COMPILED_STAMP)
	SIPLB_BUILD=compiled $(BIN)/python -m pytest --cov=siplb --cov-branch --cov-append \
	  --cov-report=term -p no:cacheprovider

pytest-pure: $(STAMP)
	SIPLB_PURE=1 SIPLB_BUILD=pure $(BIN)/python -m pytest --cov=siplb --cov-branch \
	  --cov-report= -p no:cacheprovider -q $(PURE_TESTS)

e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e tests/media_calls -v

# siplb against Kamailio with SIPp on loopback (about 20 minutes; BENCH_ARGS="--quick" is shorter).
bench: system-deps $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# media anchoring's CPU per call (anchored against not) and offer latency, real rtpengine
bench-media: system-deps $(STAMP)
	$(BIN)/python bench/media.py $(BENCH_ARGS)

bench-parse: $(STAMP)
	$(BIN)/python bench/parse.py

# docs/dashboard*.png: the demo's dashboard in Chromium at 1600, 1400 and 820 px (about 25 s).
screenshots: system-deps $(STAMP)
	$(BIN)/python -m tests.e2e.screens docs

fuzz: $(STAMP)
	$(BIN)/pip install --quiet atheris
	$(BIN)/python fuzz/fuzz_parse.py -max_total_time=60

clean:
	rm -rf $(VENV) .coverage .mypy_cache .ruff_cache .pytest_cache .hypothesis
