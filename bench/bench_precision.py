"""bf16 against float32 for the LM: speed of one decoding step and agreement of next-token distributions.

    python -m bench.bench_precision [--rows 64] [--device auto]

Real SmolLM2-135M and real prefixes (the demo translator on demo test images). On CPUs with
AMX or AVX-512-BF16, bf16 matrix products run in hardware; elsewhere PyTorch emulates them and
bf16 is far slower, which is why the engine picks float32 on such CPUs (core.device). Quality:
mean total-variation distance between the float32 and bf16 next-token distributions, and how
often the most likely token agrees, over the first few sampled positions.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.bench_generate import _prefixes


def cpu_bf16_units() -> str:
    """What the CPU offers for bf16 matrix products, from /proc/cpuinfo."""
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        return "unknown"
    found = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return ", ".join(found) if found else "none (no AMX, no AVX-512-BF16)"


@torch.inference_mode()
def _step_time(model, prefix: torch.Tensor, rows: int, repeats: int) -> float:
    x = prefix.repeat_interleave(max(1, rows // len(prefix)), 0)[:rows]
    out = model(inputs_embeds=x, use_cache=True, logits_to_keep=1)
    cache, e = out.past_key_values, x[:, -1:]
    model(inputs_embeds=e, past_key_values=cache, use_cache=True)  # warm-up
    cache.crop(-1)
    t = time.perf_counter()
    for _ in range(repeats):
        model(inputs_embeds=e, past_key_values=cache, use_cache=True)
        cache.crop(-1)
    return (time.perf_counter() - t) / repeats


@torch.inference_mode()
def _agreement(m32, m16, prefix: torch.Tensor, steps: int = 4) -> dict:
    """Next-token distributions of both models along the same greedy continuation of each prefix."""
    x32, tv, top1, n = prefix.float(), 0.0, 0, 0
    for _ in range(steps):
        l32 = m32(inputs_embeds=x32).logits[:, -1].float()
        l16 = m16(inputs_embeds=x32.to(torch.bfloat16)).logits[:, -1].float()
        p32, p16 = l32.softmax(-1), l16.softmax(-1)
        tv += float(0.5 * (p32 - p16).abs().sum(-1).sum())
        top1 += int((l32.argmax(-1) == l16.argmax(-1)).sum())
        n += len(l32)
        nxt = m32.get_input_embeddings()(l32.argmax(-1))[:, None]
        x32 = torch.cat([x32, nxt], 1)
    return {"total_variation_mean": round(tv / n, 4), "top1_agreement": round(top1 / n, 3)}


def run(quick: bool = False, rows: int = 64, device: str = "auto") -> dict:
    from core.device import resolve
    from core.models.lm import load_language_model

    dev = resolve(device).device
    lm = load_language_model(device=dev, dtype=torch.float32)
    prefix, _, source = _prefixes(lm, 8, dev, torch.float32, False)
    m32 = lm.model
    m16 = load_language_model(device=dev, dtype=torch.bfloat16).model
    repeats = 2 if quick or dev.type == "cpu" else 20
    t32 = _step_time(m32, prefix, rows, repeats)
    t16 = _step_time(m16, prefix.to(torch.bfloat16), rows, 1 if dev.type == "cpu" else repeats)
    return {"device": str(dev), "cpu_bf16_units": cpu_bf16_units() if dev.type == "cpu" else None,
            "source": source, "rows": rows, "float32_step_ms": round(t32 * 1e3, 1),
            "bf16_step_ms": round(t16 * 1e3, 1), "bf16_speedup": round(t32 / t16, 3),
            **_agreement(m32, m16, prefix)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    r = run(a.quick, a.rows, a.device)
    print(f"LM precision on {r['device']} (bf16 units: {r['cpu_bf16_units']}), {r['source']}")
    print(f"  one decoding step, {r['rows']} rows: float32 {r['float32_step_ms']} ms, bf16 {r['bf16_step_ms']} ms "
          f"({r['bf16_speedup']}x)")
    print(f"  next-token distributions, bf16 vs float32: mean total variation {r['total_variation_mean']}, "
          f"top-1 agreement {r['top1_agreement']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
