# The two commands: `make run` (dashboard on the demo, real models) and `make test`.
SHELL := /bin/bash
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
PY := .venv/bin/python
PORT ?= 8501

.PHONY: run test setup setup-dev bench demo clean-assets

run: setup
	$(PY) -m streamlit run dashboard/Home.py --server.address 127.0.0.1 --server.port $(PORT)

test: setup-dev
	$(PY) -m pytest -q tests

setup:
	@scripts/setup.sh

setup-dev:
	@scripts/setup.sh --dev

bench: setup
	$(PY) -m bench

clean-assets:
	rm -rf .assets
