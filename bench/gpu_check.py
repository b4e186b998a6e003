"""CUDA checks for a lent GPU: bf16 correctness against float32, and generation throughput vs the naive path.

    python -m bench.gpu_check --out results.json

The GPU machine has no network and not the SmolLM2 weights, so the LM is SmolLM2-135M's
architecture with random weights (same cost per token); every sentence runs to the maximum
length. Correctness of the sampler itself is checked on the CPU by the test suite.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from bench.bench_generate import SMOLLM2_CONFIG, _RandomLM, run
from core.explain import ExplainConfig, sample_sentences


@torch.inference_mode()
def bf16_agreement(device) -> dict:
    """Next-token predictions of the LM in bf16 vs float32 on the same random weights and prefixes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    m32 = LlamaForCausalLM(LlamaConfig(**SMOLLM2_CONFIG)).to(device).eval()
    m16 = LlamaForCausalLM(LlamaConfig(**SMOLLM2_CONFIG)).to(device).eval()
    m16.load_state_dict(m32.state_dict())
    m16.to(torch.bfloat16)
    x = torch.randn(64, 12, 576, device=device) * 0.05
    l32 = m32(inputs_embeds=x).logits[:, -1].float()
    l16 = m16(inputs_embeds=x.bfloat16()).logits[:, -1].float()
    p32, p16 = l32.softmax(-1), l16.softmax(-1)
    return {"top1_agreement": float((l32.argmax(-1) == l16.argmax(-1)).float().mean()),
            "max_prob_abs_diff": float((p32 - p16).abs().max()),
            "total_variation_mean": float(0.5 * (p32 - p16).abs().sum(-1).mean())}


@torch.inference_mode()
def sampler_scaling(device, rows_list=(512, 2048, 8192, 32768), images=256, n=64, max_new=20) -> list[dict]:
    lm = _RandomLM(device, torch.bfloat16)
    prefix = (torch.randn(images, 10, 576, device=device) * 0.02).bfloat16()
    n_params = sum(p.numel() for p in lm.model.parameters())
    out = []
    for rows in rows_list:
        cfg = ExplainConfig(sentences_per_image=n, max_new_tokens=max_new, batch_rows=rows)
        sample_sentences(lm, prefix[:max(1, rows // n)], n, cfg)
        torch.cuda.synchronize()
        t = time.perf_counter()
        sample_sentences(lm, prefix, n, cfg)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
        tok_s = images * n * max_new / dt
        out.append({"batch_rows": rows, "images_per_s": round(images / dt, 2), "sentences_per_s": round(images * n / dt),
                    "tokens_per_s": round(tok_s), "fraction_of_bf16_peak": round(2 * n_params * tok_s / 989e12, 4)})
        print(out[-1], flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    dev = torch.device("cuda")
    res = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    import transformers

    res["transformers"] = transformers.__version__
    res["bf16_vs_fp32"] = bf16_agreement(dev)
    print(res, flush=True)
    res["naive_vs_fast"] = run(images=32, n=64, max_new_tokens=20, device="cuda", random_weights=True, batch_rows=2048)
    print(res["naive_vs_fast"], flush=True)
    res["scaling"] = sampler_scaling(dev)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
