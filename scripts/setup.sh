#!/usr/bin/env bash
# Sets up everything TExplain Studio needs on a fresh Debian machine, offline but for package registries.
# Idempotent: a venv matching the requirements' hash is reused and finished asset steps are skipped.
#   scripts/setup.sh          runtime venv + offline assets (what `make run` needs)
#   scripts/setup.sh --dev    also test tools and Debian's chromium (what `make test` needs)
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
REQ_HASH=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-12)
# Outside the clone so that fresh clones on one machine (CI) share it; keyed by the requirements.
VENV="${TEXPLAIN_VENV:-$HOME/.cache/texplain-studio/venv-$REQ_HASH}"

say() { printf '[setup] %s\n' "$*"; }
# pip's local-index warnings on this kind of machine are noise; real errors still show.
pipq() { "$VENV/bin/pip" install -q "$@" 2> >(grep -v '^WARNING: Location' >&2); }

if [[ ! -f "$VENV/.complete-runtime" ]]; then
  say "creating the virtual environment $VENV (torch installs from local disk; a few minutes once)"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  pipq -r requirements.txt
  touch "$VENV/.complete-runtime"
else
  say "virtual environment: reusing $VENV"
fi
if [[ $DEV == 1 && ! -f "$VENV/.complete-dev" ]]; then
  say "installing test tools"
  pipq -r requirements-dev.txt
  touch "$VENV/.complete-dev"
fi
ln -sfn "$VENV" .venv
# The package itself, editable, so `texplain` is on the venv's PATH. The venv is shared by clones (keyed by the
# requirements), so it is pointed at this clone whenever it points elsewhere.
installed=$(cd / && "$VENV/bin/python" -c 'import core, pathlib; print(pathlib.Path(core.__file__).resolve().parent.parent)' 2>/dev/null || true)
if [[ "$installed" != "$(pwd -P)" || ! -x "$VENV/bin/texplain" ]]; then
  say "installing this checkout as the texplain package (editable)"
  pipq --no-deps --no-build-isolation -e .
fi

if [[ $DEV == 1 ]] && ! command -v chromium >/dev/null && [[ ! -x /usr/bin/chromium ]]; then
  say "installing Debian's chromium for the browser tests"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; }
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$VENV/bin/texplain" setup
