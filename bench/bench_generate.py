"""Generation throughput: TExplain's batched sampler against the naive path (HF generate per image).

    python -m bench.bench_generate [--images 8] [--n 64] [--device auto] [--random-weights]

Both paths use the same LM, N sentences per image, maximum length and sampling settings. The
naive path is what a first implementation does: `generate(inputs_embeds=prefix,
num_return_sequences=N)` one image at a time. The figures are printed and compared as a ratio
within the same run, since these machines are noisy. `--random-weights` builds the LM's
architecture from its config with random weights and makes every sentence run to the maximum
length (for GPUs without the weights; same cost per token).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import core  # noqa: F401  (offline environment)
from core import paths
from core.engine.config import ExplainConfig
from core.engine.sampling import sample_sentences

WATER = {"water", "lake", "sea", "ocean", "shore", "beach", "river", "pond", "wave", "waves", "coast"}

# SmolLM2-135M's architecture, for --random-weights where the converted weights are not available.
SMOLLM2_CONFIG = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                      rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)


def _id_word(i: int) -> str:
    """Token id -> a made-up word of letters (base 26), so word counting has real work to do."""
    out = ""
    while True:
        i, d = divmod(i, 26)
        out = chr(97 + d) + out
        if not i:
            return "w" + out


class _IdTokenizer:
    """Random weights make no words; token ids stand in for text, one made-up word per id."""

    def batch_decode(self, seqs, skip_special_tokens=True):
        return [" ".join(map(_id_word, s)) for s in seqs]


class _RandomLM:
    """The LanguageModel interface over a random-weight model; EOS is never sampled (fixed length)."""

    def __init__(self, device, dtype, config: dict | None = None):
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        self.model = LlamaForCausalLM(LlamaConfig(**(config or SMOLLM2_CONFIG))).to(device, dtype).eval()
        self.model.requires_grad_(False)
        self.eos_token_id = -1  # no token id matches: every sentence runs to max_new_tokens
        self.name, self.identity = "random-smollm2-arch", "random"
        self.tokenizer = _IdTokenizer()

    stop_token_ids = property(lambda self: [self.eos_token_id])  # as core.models.lm.LanguageModel
    hidden_size = property(lambda self: self.model.get_input_embeddings().weight.shape[1])
    device = property(lambda self: self.model.get_input_embeddings().weight.device)

    def embed(self, ids):
        return self.model.get_input_embeddings()(ids)


def _prefixes(lm, n_images: int, device, dtype, random_weights: bool):
    """Real prefixes from the shipped demo translator on real demo images when available."""
    if not random_weights and (paths.CHECKPOINTS / "translators" / "erm" / "config.json").exists():
        from core.data import read_waterbirds
        from core.engine.explainer import classify_images
        from core.models.classifier import from_pretrained
        from core.models.translator import Translator

        clf = from_pretrained(paths.CHECKPOINTS / "classifiers" / "erm")
        tr = Translator.from_pretrained(paths.CHECKPOINTS / "translators" / "erm", clf, lm)
        test = read_waterbirds(paths.DEMO_DATA).split("test")
        # The same images in every run (str hashes are salted per process), alternating the four
        # groups so water and land scenes are both represented.
        by_group: dict = {}
        for r in sorted(test.records, key=lambda r: r.image_id):
            by_group.setdefault(r.group, []).append(r)
        recs = [r for rs in zip(*by_group.values()) for r in rs][:n_images]
        z, _ = classify_images(clf, [test.load_image(r) for r in recs], torch.device("cpu"))
        with torch.inference_mode():
            return tr(z).to(device, dtype), [r.place for r in recs], "demo translator on demo test images"
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n_images, 10, 576, generator=g) * 0.02).to(device, dtype), None, "random prefixes"


@torch.inference_mode()
def naive_path(lm, prefix, n: int, cfg: ExplainConfig, seed: int) -> tuple[list[list[str]], int]:
    torch.manual_seed(seed)
    out_sents, tokens = [], 0
    for i in range(prefix.shape[0]):
        p = prefix[i:i + 1]
        out = lm.model.generate(inputs_embeds=p,
                                attention_mask=torch.ones(p.shape[:2], dtype=torch.long, device=p.device),
                                do_sample=True, top_p=cfg.top_p, temperature=cfg.temperature, top_k=0,
                                max_new_tokens=cfg.max_new_tokens, num_return_sequences=n,
                                eos_token_id=lm.stop_token_ids if lm.eos_token_id >= 0 else None,
                                pad_token_id=max(lm.eos_token_id, 0),
                                min_new_tokens=cfg.max_new_tokens if lm.eos_token_id < 0 else 0)
        tokens += int((out != max(lm.eos_token_id, 0)).sum()) if lm.eos_token_id >= 0 else out.numel()
        out_sents.append(lm.tokenizer.batch_decode(out.tolist(), skip_special_tokens=True))
    return out_sents, tokens


def _water_share(sentences, places):
    if places is None:
        return None
    out = {}
    for place in (0, 1):
        sents = [s for ss, p in zip(sentences, places) if p == place for s in ss]
        if sents:
            out["water" if place else "land"] = round(sum(any(w in s.lower().split() for w in WATER) for s in sents)
                                                      / len(sents), 3)
    return out


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(quick: bool = False, images: int | None = None, n: int = 64, max_new_tokens: int = 20, device: str = "auto",
        dtype: str | None = None, random_weights: bool = False, batch_rows: int | None = None,
        compare_kv_cache: bool = False, lm=None, prefix: torch.Tensor | None = None) -> dict:
    """`lm` and `prefix` (images, k, d): an LM already loaded and prefixes to use (gpu_check passes the
    carried LM and the carried demo prefixes); by default they are loaded or made here."""
    from core.device import resolve

    compute = resolve(device, dtype)
    images = images or (3 if quick else 8)  # 8 x 64 = one full CPU batch, as in a dataset run
    if lm is not None:
        pass
    elif random_weights:
        lm = _RandomLM(compute.device, compute.dtype)
    else:
        from core.models.lm import load_language_model

        lm = load_language_model(device=compute.device, dtype=compute.dtype)
    if prefix is not None:
        prefix, places, source = prefix[:images].to(compute.device, compute.dtype), None, "given prefixes"
    else:
        prefix, places, source = _prefixes(lm, images, compute.device, compute.dtype, random_weights)
    rows = batch_rows or (512 if compute.device.type == "cpu" else 8192)
    cfg = ExplainConfig(sentences_per_image=n, max_new_tokens=max_new_tokens, batch_rows=rows)
    # Warm-up (first-call allocations and kernel selection) on one image, for both paths.
    naive_path(lm, prefix[:1], min(n, 8), cfg, 0)
    sample_sentences(lm, prefix[:1], min(n, 8), cfg)
    _sync(compute.device)
    t = time.perf_counter()
    naive_sents, naive_tokens = naive_path(lm, prefix, n, cfg, 0)
    _sync(compute.device)
    t_naive = time.perf_counter() - t
    t = time.perf_counter()
    fast_sents = sample_sentences(lm, prefix, n, cfg)
    _sync(compute.device)
    t_fast = time.perf_counter() - t
    t_other = None
    if compare_kv_cache:  # the other KV cache (dynamic <-> preallocated) on the same prefixes: same sentences
        other = "preallocated" if compute.device.type == "cpu" else "dynamic"
        cfg_other = ExplainConfig(sentences_per_image=n, max_new_tokens=max_new_tokens, batch_rows=rows, kv_cache=other)
        t = time.perf_counter()
        other_sents = sample_sentences(lm, prefix, n, cfg_other)
        _sync(compute.device)
        t_other = time.perf_counter() - t
    res = {"device": compute.label, "source": source, "images": images, "sentences_per_image": n,
           "max_new_tokens": max_new_tokens, "batch_rows": rows,
           "naive_images_per_s": round(images / t_naive, 3), "naive_sentences_per_s": round(images * n / t_naive, 1),
           "fast_images_per_s": round(images / t_fast, 3), "fast_sentences_per_s": round(images * n / t_fast, 1),
           "speedup": round(t_naive / t_fast, 2),
           "naive_water_share": _water_share(naive_sents, places), "fast_water_share": _water_share(fast_sents, places)}
    if t_other is not None:
        res[f"{other}_kv_cache_images_per_s"] = round(images / t_other, 3)
        res[f"{other}_kv_cache_vs_default"] = round(t_fast / t_other, 2)
        res[f"{other}_kv_cache_same_sentences"] = other_sents == fast_sents
    if not random_weights:
        res["mean_tokens_naive"] = round(naive_tokens / (images * n), 1)
    if compute.device.type == "cuda":
        # Forward FLOPs per generated token ~ 2 x parameters (tied embeddings count once, as the head).
        n_params = sum(p.numel() for p in lm.model.parameters())
        tok_s = images * n * max_new_tokens / t_fast if random_weights else None
        if tok_s:
            peak = 989e12 if "H100" in compute.label or "H200" in compute.label else None
            res["fast_tokens_per_s"] = round(tok_s)
            res["model_tflops"] = round(2 * n_params * tok_s / 1e12, 2)
            if peak:
                res["fraction_of_bf16_peak"] = round(2 * n_params * tok_s / peak, 4)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--batch-rows", type=int, default=None)
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--quick", action="store_true", help="3 images instead of 8")
    ap.add_argument("--compare-kv-cache", action="store_true",
                    help="also time the sampler with the other KV cache (preallocated on CPU, dynamic on CUDA)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args(argv)
    res = run(a.quick, a.images, a.n, a.max_new_tokens, a.device, a.dtype, a.random_weights, a.batch_rows,
              a.compare_kv_cache)
    print(f"generation on {res['device']} ({res['source']}), {res['images']} images x N={res['sentences_per_image']}, "
          f"<= {res['max_new_tokens']} tokens")
    print(f"  naive (HF generate per image): {res['naive_images_per_s']:8.3f} images/s  "
          f"{res['naive_sentences_per_s']:9.1f} sentences/s")
    print(f"  TExplain batched sampler     : {res['fast_images_per_s']:8.3f} images/s  "
          f"{res['fast_sentences_per_s']:9.1f} sentences/s")
    print(f"  speed-up: {res['speedup']}x   water-word share (land/water scenes) naive {res['naive_water_share']} "
          f"vs fast {res['fast_water_share']}")
    for k in ("fast_tokens_per_s", "model_tflops", "fraction_of_bf16_peak", "preallocated_kv_cache_vs_default",
              "preallocated_kv_cache_same_sentences", "dynamic_kv_cache_vs_default", "dynamic_kv_cache_same_sentences"):
        if k in res:
            print(f"  {k}: {res[k]}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
