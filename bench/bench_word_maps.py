"""Benchmark of word maps: seconds per map (gradient and occlusion) against the run's own cost per image.

    python -m bench.bench_word_maps            # 8 images of the Waterbirds demo's ERM test run, 2 words each
    python -m bench.bench_word_maps --quick    # 3 images

The baseline, timed in the same process on the same images, is what the map explains: classifying the image
and sampling its sentences (the run's settings). Occlusion's 49 window places (core.engine.word_map.Occlusion) are
scored in batches; the same map scored one place at a time is its baseline (the speed-up, and the largest difference
between the two maps). Scoring a word (word_log_prob: the prefix run once per image and its cache shared by the
sentences, short and long sentences fed apart, logits only where the word is predicted) has its own baseline: every
sentence fed whole after its own copy of the prefix, every position's logits (the speed-up, the largest gap). A map
should cost a fraction of an explanation, since it teacher-forces the sentences that use the word instead of
sampling. On a GPU (when one is present) the maps run there and the figure is maps per second. Real weights: the
shipped classifier, translator and SmolLM2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


def run(quick: bool = False) -> dict:
    from core.demo.evidence import WATERBIRDS_RUN, run_items, run_models
    from core.demo.worlds.waterbirds_mini import object_masks
    from core.engine.config import ExplainConfig
    from core.engine.explainer import Explainer
    from core.engine.word_map import spatial_layer, word_map
    from core.engine.words import WordExtractor
    from core.evaluation.pointing import words_to_map
    from core.store import Run

    clf, tr, lm = run_models(WATERBIRDS_RUN)
    masks = object_masks()
    items = run_items(WATERBIRDS_RUN, lambda r: (masks / r["path"]).with_suffix(".png"), 3 if quick else 8)
    ex = WordExtractor()
    s = Run.open(WATERBIRDS_RUN).manifest.get("settings") or {}
    cfg = ExplainConfig(**{k: s[k] for k in ("sentences_per_image", "top_p", "temperature", "max_new_tokens", "seed")
                           if k in s})
    explainer = Explainer(clf, tr, lm, cfg, ex)
    spatial_layer(clf)  # warm-up: the first forward pass pays one-off costs
    t_explain, t_grad, t_occl, t_single, gaps, maps = [], [], [], [], [], 0
    t_fast, t_full, score_gaps = [], [], []
    for it in items.itertuples():
        t = time.perf_counter()
        explainer.explain([it.image], [it.image_id])
        t_explain.append(time.perf_counter() - t)
        for word in filter(None, words_to_map(it.sentences, ex, {"bird"}).values()):
            t = time.perf_counter()
            word_map(it.image, word, clf, tr, lm, sentences=it.sentences, extractor=ex)
            t_grad.append(time.perf_counter() - t)
            maps += 1
        if len(t_occl) < 2:  # occlusion costs 49 forward passes: two maps tell its cost
            t = time.perf_counter()
            batched = word_map(it.image, word, clf, tr, lm, sentences=it.sentences, extractor=ex, method="occlusion")
            t_occl.append(time.perf_counter() - t)
            # The baseline of batching: the occluded images scored one at a time; the same map.
            t = time.perf_counter()
            single = word_map(it.image, word, clf, tr, lm, sentences=it.sentences, extractor=ex, method="occlusion",
                              rows_per_batch=1)
            t_single.append(time.perf_counter() - t)
            gaps.append(float(np.abs(single.heatmap - batched.heatmap).max()))
            fast, full, gap = scoring(it, word, clf, tr, lm, ex)
            t_fast.append(fast), t_full.append(full), score_gaps.append(gap)
    out = {"device": str(lm.device), "images": len(items), "maps": maps,
           "sentences_per_image": cfg.sentences_per_image,
           "explain_seconds_per_image": round(float(np.median(t_explain)), 3),
           "gradient_seconds_per_map": round(float(np.median(t_grad)), 3),
           "occlusion_seconds_per_map": round(float(np.median(t_occl)), 3),
           "gradient_map_over_explain": round(float(np.median(t_grad) / np.median(t_explain)), 3),
           "occlusion_over_gradient": round(float(np.median(t_occl) / np.median(t_grad)), 2),
           "occlusion_one_at_a_time_seconds_per_map": round(float(np.median(t_single)), 3),
           "occlusion_batching_speedup": round(float(np.median(t_single) / np.median(t_occl)), 2),
           "occlusion_batched_vs_one_at_a_time_max_gap": round(max(gaps), 5),
           "scoring_seconds_per_16_windows": round(float(np.median(t_fast)), 3),
           "scoring_full_forward_seconds_per_16_windows": round(float(np.median(t_full)), 3),
           "scoring_speedup": round(float(np.median(t_full) / np.median(t_fast)), 2),
           "scoring_vs_full_forward_max_gap": round(max(score_gaps), 5),
           "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        out["maps_per_second"] = round(1 / float(np.median(t_grad)), 2)
    return out


def full_forward(translator, lm, z, ids, attn, hit):
    """The baseline of word_log_prob: each sentence fed whole after its own copy of the prefix, all logits."""
    B, (N, T) = len(z), ids.shape
    prefix = translator(z.float())
    k = prefix.shape[1]
    prefix = prefix[:, None].expand(B, N, k, prefix.shape[-1]).reshape(B * N, k, -1)
    emb = lm.embed(ids).repeat(B, 1, 1)
    x = torch.cat([prefix.to(emb.dtype), emb], 1)
    mask = torch.cat([torch.ones(B * N, k, dtype=torch.long), attn.long().repeat(B, 1)], 1)
    logits = lm.model(inputs_embeds=x, attention_mask=mask, logits_to_keep=T + 1).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, ids.repeat(B, 1)[..., None])[..., 0]
    return (logp * hit.repeat(B, 1)).reshape(B, N * T).sum(1)


def scoring(it, word, clf, tr, lm, ex) -> tuple[float, float, float]:
    """Seconds of word_log_prob and of its baseline on 16 occluded copies of the image (one batch of windows), and
    the largest difference of their scores."""
    from core.engine.word_map import Occlusion, occluded, token_targets, word_log_prob

    ids, attn, hit = token_targets(lm, it.sentences, word, ex)
    x = clf.preprocess(it.image)
    side, places = Occlusion().boxes(x.shape[-2:])
    with torch.inference_mode():
        z = clf.features_and_logits(occluded(x, places[::len(places) // 16][:16], side, torch.zeros_like(x)))[0]
        t = time.perf_counter()
        fast = word_log_prob(tr, lm, z, ids, attn, hit)
        t_fast = time.perf_counter() - t
        t = time.perf_counter()
        full = full_forward(tr, lm, z, ids, attn, hit)
        t_full = time.perf_counter() - t
    return t_fast, t_full, float((fast - full).abs().max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    print(json.dumps(run(ap.parse_args().quick), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
