# The two commands: `make run` (the dashboard on the demo, real models) and `make test` (everything; what CI runs).
SHELL := /bin/bash
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
PY := .venv/bin/python
PORT ?= 8501
FAST := not browser and not ray and not demo and not gpu

.PHONY: run test test-fast setup setup-dev bench clean-assets

run: setup
	.venv/bin/texplain ui --port $(PORT)

test: setup-dev
	$(PY) -m pytest -q tests

# The unit and AppTest tier: no browser, no Ray cluster, no real models (a few minutes).
test-fast: setup-dev
	$(PY) -m pytest -q tests -m "$(FAST)"

setup:
	@scripts/setup.sh

setup-dev:
	@scripts/setup.sh --dev

bench: setup
	$(PY) -m bench

clean-assets:
	rm -rf .assets
