"""Explaining images: classifier features -> translator prefix -> many sampled sentences -> word counts.

`sample_sentences` is the hot loop: nucleus sampling batched across images and samples, with a
KV cache, dropping each sentence from the batch as soon as it ends. `explain_dataset` drives it
over a dataset as a stream (decode -> classifier -> translator -> prefix queue -> sampler ->
word counts and shard writes in the background), writing fixed shards to the run store, so an
interrupted run resumes at the first missing shard with exactly the rows an uninterrupted run
would have written. Counter-based sampling makes every batching give the same tables.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
from torch.profiler import record_function  # named ranges in a profile (bench.gpu_check --profile); no-ops otherwise

from core.device import resolve
from core.store import Run, dataset_fingerprint, portable_root


@dataclass
class ExplainConfig:
    sentences_per_image: int = 32  # N samples per image; the paper uses many, the word shares converge ~32-64
    top_p: float = 0.9  # nucleus sampling: varied but grammatical sentences
    temperature: float = 0.9
    max_new_tokens: int = 20  # captions are one short sentence
    batch_rows: int | None = None  # sequences per sampler call (images x samples); None: 512 on CPU, what free GPU memory holds on CUDA
    shard_size: int = 64  # images per store shard: the unit of resumption only, never the sampler's batch
    keep_sentences: int | None = None  # sentences stored per image (None = all: sentence-level stats can be redone)
    image_batch: int | None = None  # images per classifier forward pass; None: 32 on CPU, 256 on CUDA
    num_workers: int | None = None  # image-decoding processes; None: 0 on CPU (no gain on 2 cores), up to 8 on CUDA
    nucleus: str = "auto"  # "tiers" (top-k tiers, CPU default), "pivot" (threshold search, CUDA default): same choices
    kv_cache: str = "auto"  # "dynamic" (grown by concatenation, CPU default) or "preallocated" (CUDA default): same numbers
    seed: int = 0
    device: str = "auto"
    dtype: str | None = None  # None: bf16 on CUDA, float32 on CPU

    def __post_init__(self):
        for name in ("sentences_per_image", "max_new_tokens", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("batch_rows", "image_batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or None for the device's default), got {getattr(self, name)}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (or None for the device's default), got {self.num_workers}")
        if self.nucleus not in ("auto", "tiers", "pivot"):
            raise ValueError(f"nucleus must be 'auto', 'tiers' or 'pivot', got {self.nucleus!r}")
        if self.kv_cache not in ("auto", "dynamic", "preallocated"):
            raise ValueError(f"kv_cache must be 'auto', 'dynamic' or 'preallocated', got {self.kv_cache!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def sampling_settings(self) -> dict:
        """The settings that determine the output (recorded in the manifest, checked on resume)."""
        d = asdict(self)
        for speed_only in ("device", "image_batch", "batch_rows", "num_workers", "nucleus", "kv_cache"):
            # never change the random numbers drawn, so a run may resume with other values
            d.pop(speed_only)
        return d


_MASK53 = (1 << 53) - 1


def _mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors (wrap-around arithmetic): a counter -> well-mixed bits."""
    x = x * -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64
    x = (x ^ ((x >> 30) & ((1 << 34) - 1))) * -4658895280553007687  # 0xBF58476D1CE4E5B9
    x = (x ^ ((x >> 27) & ((1 << 37) - 1))) * -7723592293110705685  # 0x94D049BB133111EB
    return x ^ ((x >> 31) & ((1 << 33) - 1))


def row_uniforms(row_keys: torch.Tensor, step: int) -> torch.Tensor:
    """One uniform in [0, 1) per sequence and step, a pure function of (sequence key, step).

    Counter-based rather than a shared generator, so a sentence comes out the same whatever
    else is in its batch: across chunkings, pruning, resumed runs and single-image re-runs. (Only
    float round-off can still differ: BLAS kernels may pick another blocking for another batch
    size, which changed 1 of 512 SmolLM2 sentences between batches of 256 and 512 rows.)
    """
    bits = _mix64(_mix64(row_keys) + step)
    return (bits & _MASK53).double() * (1.0 / (1 << 53))


_NUCLEUS_TIERS = (64, 1024)  # candidate-set sizes tried before sorting the whole vocabulary
# The pivot search bins each token by how far its log-probability lies below the top token's:
# 1/8-nat bins over 32 nats (tokens further down hold < V * e^-32 of the mass, never a boundary).
_PIVOT_BINS, _PIVOT_BINS_PER_NAT = 256, 8
# The candidate set holds top_p + margin of the mass (checked in float64), so the float32 round-off
# of the reference's sequential cumulative sum (< 4096 * 2^-24 = 2.4e-4 over a candidate set) can
# never put a token outside the set into the nucleus.
_PIVOT_MARGIN = 1e-3
_PIVOT_ROW_CHUNK = 4096  # rows per pass, bounding the search's (rows x V) temporaries
_PIVOT_MAX_CANDIDATES = 4096  # wider candidate sets (very flat rows) go to the full sort


def _sample_top_p(logits: torch.Tensor, top_p: float, temperature: float, u: torch.Tensor,
                  rows: torch.Tensor | None = None, consume: bool = False, method: str = "tiers") -> torch.Tensor:
    """Nucleus sampling by inverse CDF: one token per uniform in u (R,).

    `logits` (S, V) holds one distribution per state and `rows` (R,) says which state each
    uniform draws from (default: uniform i from state i), so sequences that share a history
    share the work on its distribution.

    The reference is a full sort of each state's probabilities (descending, ties by token id),
    the smallest prefix whose mass reaches top_p, and an inverse CDF over it. Sorting the whole
    vocabulary for every state costs as much as the LM step itself, yet a caption's nucleus is
    usually a few dozen tokens (SmolLM2 on the demo: median 8, 80% under 64). Two ways to find
    a small candidate set that holds the nucleus, both exact (they compute the same numbers as a
    full sort: same softmax; cumulative sums in float64, so their round-off cannot move the nucleus's
    edge whatever the length of the candidate row), so the choice is identical:

    - "tiers" (CPU): each state's nucleus is looked for among its top 64 tokens, then its top
      1024, and only the rest are fully sorted.
    - "pivot" (GPU, where top-k over the vocabulary was 18% of the step): a threshold search
      over each row's probabilities (the idea of FlashInfer's sorting-free top-p) finds t with
      the tokens p >= t holding the nucleus; only those few are gathered and sorted.

    `consume=True` lets it scale float32 logits in place (one less S x V buffer per step).
    """
    scaled = logits.div_(temperature) if consume and logits.dtype == torch.float32 else logits.float() / temperature
    probs = torch.softmax(scaled, dim=-1)  # (S, V)
    S, V = probs.shape
    u = u.to(probs.device)
    rows = torch.arange(S, device=probs.device) if rows is None else rows.to(probs.device)
    out = torch.empty(len(rows), dtype=torch.long, device=probs.device)

    def draw(states: torch.Tensor, sorted_p: torch.Tensor, idx: torch.Tensor) -> None:
        # The uniforms whose state is among `states` draw from those states' sorted candidates.
        slot = torch.full((S,), -1, dtype=torch.long, device=probs.device)
        slot[states] = torch.arange(len(states), device=probs.device)
        r = (slot[rows] >= 0).nonzero().squeeze(-1)
        out[r] = _inverse_cdf(sorted_p, idx, top_p, u[r], slot[rows[r]])

    left = torch.arange(S, device=probs.device)  # states whose nucleus is not found yet
    if top_p < 1.0 and method == "pivot":
        left = _draw_by_pivot(probs, top_p, draw)
    elif top_p < 1.0:
        for k in _NUCLEUS_TIERS:
            if k >= V:
                break
            top, idx = probs[left].topk(k + 1, dim=-1)  # descending; equal values in no defined order
            # Put equal probabilities in token-id order, as the reference's stable full sort does.
            idx, by_id = idx.sort(dim=-1)
            top, order = top.gather(-1, by_id).sort(dim=-1, descending=True, stable=True)
            idx = idx.gather(-1, order)
            # Exact when the first token that ties with the (k+1)-th is already outside the nucleus
            # (and so is every later one): the tokens above it are the reference's, in its order.
            j = (top > top[:, -1:]).sum(-1, keepdim=True)  # (s, 1), <= k
            top64 = top.double()
            fits = (top64.cumsum(-1).gather(-1, j) - top64.gather(-1, j)).squeeze(-1) > top_p
            draw(left[fits], top[fits], idx[fits])
            left = left[~fits]
    if left.numel():
        draw(left, *probs[left].sort(dim=-1, descending=True, stable=True))
    return out


def nucleus_threshold(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Per row of probs (S, V), a probability t (S,) such that the tokens with p >= t hold the whole
    top-p nucleus and few others (0 where none was found: take the whole row).

    A pivot search rather than a sort: one pass bins every token by log(p_top / p) in 1/8-nat
    bins and sums each bin's mass; the bin where the running mass passes top_p (+ one bin of
    slack) gives t, and one masked float64 sum checks that {p >= t} really holds top_p + margin.
    Passes over memory, no top-k and no sort over the vocabulary.
    """
    goal = top_p + _PIVOT_MARGIN
    out = torch.zeros(probs.shape[0], dtype=probs.dtype, device=probs.device)
    for r0 in range(0, probs.shape[0], _PIVOT_ROW_CHUNK):
        p = probs[r0:r0 + _PIVOT_ROW_CHUNK]  # (s, V), a view
        log_top = p.amax(-1).clamp_min(torch.finfo(p.dtype).tiny).log()  # (s,)
        b = p.log().neg_().add_(log_top[:, None]).mul_(_PIVOT_BINS_PER_NAT).clamp_(0, _PIVOT_BINS - 1).long()
        mass = p.new_zeros((p.shape[0], _PIVOT_BINS)).scatter_add_(1, b, p)  # (s, bins), bin 0 holds the top token
        del b
        # The first bin where the running mass passes the goal, plus one bin of slack for round-off at bin edges.
        c = (mass.cumsum(-1) <= goal).sum(-1) + 1  # (s,)
        thr = (log_top - (c + 1).to(p.dtype) / _PIVOT_BINS_PER_NAT).exp()  # the lower edge of bin c
        thr = torch.where(c < _PIVOT_BINS - 1, thr, torch.zeros_like(thr))  # the tail bin: the whole row
        ok = torch.where(p >= thr[:, None], p, 0.0).sum(-1, dtype=torch.float64) > goal
        out[r0:r0 + _PIVOT_ROW_CHUNK] = torch.where(ok, thr, torch.zeros_like(thr))
    return out


def _draw_by_pivot(probs: torch.Tensor, top_p: float, draw) -> torch.Tensor:
    """Draw for every state whose nucleus the pivot search pins to <= _PIVOT_MAX_CANDIDATES tokens;
    returns the states left for the full sort."""
    S, V = probs.shape
    thr = nucleus_threshold(probs, top_p)
    member = probs >= thr[:, None]  # (S, V)
    counts = member.sum(-1)
    small = ((counts <= _PIVOT_MAX_CANDIDATES) & (thr > 0)).nonzero().squeeze(-1)
    if small.numel():
        counts_s = counts[small]
        r, c = member[small].nonzero(as_tuple=True)  # row-major: token ids ascend within a row
        pos = torch.arange(len(r), device=probs.device) - (counts_s.cumsum(0) - counts_s)[r]
        K = int(counts_s.max())
        cand_p = probs.new_full((len(small), K), -1.0)  # padding sorts last, then counts as 0
        cand_i = torch.zeros((len(small), K), dtype=torch.long, device=probs.device)
        cand_p[r, pos] = probs[small[r], c]
        cand_i[r, pos] = c
        # Stable: equal probabilities keep ascending token ids, as in the reference's full sort.
        sorted_p, order = cand_p.sort(dim=-1, descending=True, stable=True)
        draw(small, sorted_p.clamp_min(0.0), cand_i.gather(-1, order))
    keep = torch.ones(S, dtype=torch.bool, device=probs.device)
    keep[small] = False
    return keep.nonzero().squeeze(-1)


def _inverse_cdf(sorted_p: torch.Tensor, idx: torch.Tensor, top_p: float, u: torch.Tensor,
                 which: torch.Tensor) -> torch.Tensor:
    """Token ids for uniforms u drawn from states `which`, given each state's probabilities sorted
    descending (all, or a prefix that holds the nucleus) and their token ids."""
    sorted_p = sorted_p.double()
    if top_p < 1.0:
        # Keep the smallest set of tokens whose mass reaches top_p (the first token always survives).
        # In float64: a GPU's cumsum is a parallel scan whose float32 round-off depends on the row's
        # length, which moved the cut between the pivot's and the tiers' candidate rows (seen on an H200).
        sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p > top_p, 0.0)
    cdf = sorted_p.cumsum(-1)[which]  # (R, k)
    target = (u * cdf[:, -1]).unsqueeze(-1)  # (R, 1)
    choice = torch.searchsorted(cdf, target, right=True).clamp_max(cdf.shape[-1] - 1)
    return idx[which].gather(-1, choice).squeeze(-1)


def image_key(image_id: str | int, seed: int) -> int:
    """A stable 63-bit key for an image's sampling stream, from its id and the run's seed."""
    import hashlib

    h = hashlib.blake2b(f"{seed}:{image_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def _preallocated_cache(layers: int, rows: int, length: int):
    """A KV cache sized once for a whole chunk (rows x length per layer), as a transformers Cache."""
    from transformers.cache_utils import Cache, DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        # A decoding step writes one position in place instead of concatenating the whole cache
        # (torch.cat was 9.5% of the step on an H200); dropping or branching rows gathers the
        # survivors to the front of the same buffers.
        def __init__(self):
            super().__init__()
            self.rows, self.t = 0, 0

        def lazy_initialization(self, key_states, value_states):
            self.dtype, self.device = key_states.dtype, key_states.device
            B, H, _, _ = key_states.shape
            self.k_buf = key_states.new_empty((max(rows, B), H, length, key_states.shape[-1]))
            self.v_buf = value_states.new_empty((max(rows, B), H, length, value_states.shape[-1]))
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            B, L = key_states.shape[0], key_states.shape[-2]
            if B > self.k_buf.shape[0] or self.t + L > length:
                raise RuntimeError(f"preallocated KV cache of {self.k_buf.shape[0]} rows x {length} positions "
                                   f"cannot take {B} rows at position {self.t + L}")
            self.k_buf[:B, :, self.t:self.t + L] = key_states
            self.v_buf[:B, :, self.t:self.t + L] = value_states
            self.rows, self.t = B, self.t + L
            self.keys, self.values = self.k_buf[:B, :, :self.t], self.v_buf[:B, :, :self.t]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.t

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            n = len(indices)
            # The right-hand side is gathered into a new tensor before the copy, so overlap is safe.
            self.k_buf[:n, :, :self.t] = self.k_buf[indices, :, :self.t]
            self.v_buf[:n, :, :self.t] = self.v_buf[indices, :, :self.t]
            self.rows = n
            self.keys, self.values = self.k_buf[:n, :, :self.t], self.v_buf[:n, :, :self.t]

    return Cache(layers=[PreallocatedLayer() for _ in range(layers)])


def _choose(option: str, device: torch.device, gpu: str, cpu: str) -> str:
    return option if option != "auto" else (gpu if device.type == "cuda" else cpu)


@torch.inference_mode()
def sample_sentences(lm, prefix: torch.Tensor, n: int, cfg: ExplainConfig,
                     keys: Sequence[int] | None = None) -> list[list[str]]:
    """prefix (B, k, d) -> B lists of n sentences, sampled with a KV cache, ~batch_rows sequences at a time.

    `keys` (one per image, see `image_key`) fix each image's random stream; by default 0..B-1
    mixed with cfg.seed. `cfg.batch_rows=None` takes the device's default (see `resolve_batch_rows`).
    """
    model, stop = lm.model, torch.tensor(lm.stop_token_ids)
    B = prefix.shape[0]
    if keys is None:
        keys = [image_key(i, cfg.seed) for i in range(B)]
    if len(keys) != B:
        raise ValueError(f"keys has {len(keys)} entries for {B} prefixes")
    nucleus = _choose(cfg.nucleus, lm.device, "pivot", "tiers")
    kv_cache = _choose(cfg.kv_cache, lm.device, "preallocated", "dynamic")
    batch_rows = cfg.batch_rows or resolve_batch_rows(lm, prefix.shape[1], cfg.max_new_tokens, n)
    # Sequence j of image i has key mix(key_i) + j: distinct streams for every sample.
    row_keys = (_mix64(torch.tensor(list(keys), dtype=torch.long)).repeat_interleave(n)
                + torch.arange(n).repeat(B))  # (B*n,)
    prefix = prefix.to(lm.device, lm.model.dtype)
    out_tokens: list[list[int]] = [[] for _ in range(B * n)]
    per_chunk = max(1, batch_rows // n)  # whole images per chunk, so every sample of an image shares its prefill
    for i0 in range(0, B, per_chunk):
        chunk = prefix[i0:i0 + per_chunk]  # (b, k, d)
        cache = None
        if kv_cache == "preallocated":
            cache = _preallocated_cache(model.config.num_hidden_layers, chunk.shape[0] * n,
                                        chunk.shape[1] + cfg.max_new_tokens)
        # Sequences with the same history (same image, same tokens so far) have the same next-token
        # distribution, so the cache and the LM step hold one state per distinct history, not one
        # per sequence: an image's prefix runs once for its n samples, and so do common openings
        # ("A bird standing ..."), about 10% of all steps for captions.
        out = model(inputs_embeds=chunk, past_key_values=cache, use_cache=True, logits_to_keep=1)  # only the last position predicts
        cache, logits = out.past_key_values, out.logits[:, -1]  # (states, V)
        alive = torch.arange(i0 * n, (i0 + chunk.shape[0]) * n)  # global row of each live sequence
        state = torch.arange(chunk.shape[0]).repeat_interleave(n)  # each live sequence's state
        for step in range(cfg.max_new_tokens):
            u = row_uniforms(row_keys[alive], step)
            tok = _sample_top_p(logits, cfg.top_p, cfg.temperature, u, state, consume=True, method=nucleus).cpu()  # (R,)
            ended = torch.isin(tok, stop)
            keep = (~ended).nonzero().squeeze(-1)
            alive, tok, state = alive[keep], tok[keep], state[keep]
            for r, t in zip(alive.tolist(), tok.tolist()):
                out_tokens[r].append(t)
            if not len(alive) or step == cfg.max_new_tokens - 1:
                break  # (the last step's tokens need no LM step after them)
            # Finished sentences leave, branching histories split and shared ones stay merged.
            pair, state = torch.unique(state * logits.shape[-1] + tok, return_inverse=True)
            parent, next_tok = pair // logits.shape[-1], pair % logits.shape[-1]
            if len(parent) != logits.shape[0] or bool((parent != torch.arange(len(parent))).any()):
                cache.batch_select_indices(parent.to(lm.device))
            out = model(inputs_embeds=lm.embed(next_tok.to(lm.device)[:, None]), past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1]
    texts = lm.tokenizer.batch_decode(out_tokens, skip_special_tokens=True)
    # A sentence ends at its first line break; the LM sometimes runs on into a second one.
    texts = [t.split("\n", 1)[0].strip() for t in texts]
    return [texts[i * n:(i + 1) * n] for i in range(B)]


# --- how many sequences fit on a GPU ----------------------------------------------------------

_GPU_HEADROOM = 0.85  # of free memory: the allocator's fragmentation, cuBLAS workspaces, the classifier


def sampler_bytes_per_row(lm_config, prefix_length: int, max_new_tokens: int, dtype_bytes: int = 2) -> int:
    """Peak GPU bytes one sampled sequence needs, from the LM's config (an upper estimate).

    KV cache: layers x (keys + values) x kv_heads x head_dim x positions, twice (the cache and the
    copy made when finished or branching rows are gathered). Sampler: per vocabulary entry the
    LM's logits, their float32 scaled copy and probabilities, and what the full-sort fallback of
    a flat row holds (a gathered copy, sorted values, int64 indices, a masked copy, a float64
    CDF): dtype + 40 bytes. Activations of one step (hidden, MLP) are small next to both.
    """
    heads = lm_config.num_attention_heads
    kv_heads = getattr(lm_config, "num_key_value_heads", None) or heads
    head_dim = getattr(lm_config, "head_dim", None) or lm_config.hidden_size // heads
    positions = prefix_length + max_new_tokens
    kv = lm_config.num_hidden_layers * 2 * kv_heads * head_dim * positions * dtype_bytes * 2
    sampler = lm_config.vocab_size * (dtype_bytes + 40)
    activations = (4 * lm_config.hidden_size + 3 * lm_config.intermediate_size) * 4
    return kv + sampler + activations


def batch_rows_that_fit(free_bytes: int, bytes_per_row: int, sentences_per_image: int = 1) -> int:
    """The largest batch_rows (whole images' worth of sequences, a multiple of 256 when >= 256) that
    fits in `free_bytes` with headroom; 0 when not even one image's sequences fit."""
    rows = int(free_bytes * _GPU_HEADROOM) // bytes_per_row
    rows -= rows % sentences_per_image  # whole images: the sampler never splits an image's samples
    if rows >= 256 and sentences_per_image <= 256:
        rows = max(rows // 256 * 256 // sentences_per_image * sentences_per_image, sentences_per_image)
    return max(rows, 0)


def resolve_batch_rows(lm, prefix_length: int, max_new_tokens: int, sentences_per_image: int,
                       batch_rows: int | None = None) -> int:
    """batch_rows for this LM's device: 512 on CPU (where a batch of ~256-512 sequences already
    saturates the matrix units), what free memory holds on CUDA; a value that cannot fit on the
    GPU is refused here, up front, rather than running out of memory half-way through a run."""
    device = lm.device
    if device.type != "cuda":
        return batch_rows or 512
    free, total = torch.cuda.mem_get_info(device)
    # Blocks the caching allocator holds but no tensor uses are free for the sampler too.
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    per_row = sampler_bytes_per_row(lm.model.config, prefix_length, max_new_tokens,
                                    torch.finfo(lm.model.dtype).bits // 8)
    fit = batch_rows_that_fit(free, per_row, sentences_per_image)
    if fit < sentences_per_image:
        raise ValueError(f"the GPU {device} has {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB; sampling one "
                         f"image's {sentences_per_image} sentences needs about "
                         f"{sentences_per_image * per_row / _GPU_HEADROOM / 2**30:.2f} GiB. Free GPU memory or "
                         "lower sentences_per_image")
    if batch_rows is None:
        return fit
    if batch_rows > fit:
        raise ValueError(f"batch_rows={batch_rows} needs about {batch_rows * per_row / 2**30:.1f} GiB on {device}, but "
                         f"{free / 2**30:.1f} GiB is free there; at most {fit} rows fit (or leave batch_rows unset "
                         "to size it from free memory)")
    return batch_rows


@torch.inference_mode()
def classify_images(classifier, images: Sequence, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL images -> features z (B, D) in float32 and softmax probabilities (B, C)."""
    x = torch.stack([classifier.preprocess(im) for im in images]).to(device)
    p = next(classifier.parameters())
    z, logits = classifier.features_and_logits(x.to(p.dtype))
    return z.float(), logits.float().softmax(-1)


def explain_images(images: Sequence, classifier, translator, lm, cfg: ExplainConfig | None = None,
                   extractor=None, image_ids: Sequence[str] | None = None) -> list[dict]:
    """Explain PIL images in memory (the dashboard's single-image path): prediction, sentences, word counts.

    With the `image_ids` of a run's images and its settings, the sentences are those of the run.
    """
    from core.words import WordExtractor

    cfg = cfg or ExplainConfig()
    extractor = extractor or WordExtractor()
    dev = lm.device
    z, probs = classify_images(classifier, images, next(classifier.parameters()).device)
    with torch.inference_mode():
        prefix = translator(z.to(next(translator.parameters()).device))
    keys = [image_key(i, cfg.seed) for i in (image_ids if image_ids is not None else range(len(images)))]
    sentences = sample_sentences(lm, prefix.to(dev), cfg.sentences_per_image, cfg, keys)
    out = []
    for i, sents in enumerate(sentences):
        conf, pred = probs[i].max(-1)
        out.append({"prediction": int(pred), "prediction_name": classifier.class_names[int(pred)],
                    "confidence": float(conf), "probabilities": probs[i].tolist(), "sentences": sents,
                    "words": extractor.count(sents)})
    return out


ProgressFn = Callable[[int, int, dict], None]


def explain_dataset(dataset, classifier, translator, lm, out_dir: str | Path, cfg: ExplainConfig | None = None,
                    split: str | None = None, name: str | None = None, extractor=None,
                    progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None,
                    max_shards: int | None = None, show_progress: bool = True, extra_manifest: dict | None = None,
                    force: bool = False, ray=None) -> Run:
    """Explain every image of `dataset` (optionally one split) into the run folder `out_dir`; resumable.

    Resuming checks the settings, models and data (`dataset_fingerprint`) against the run's and refuses
    a mismatch; `force=True` deletes the run in `out_dir` (if any) and starts over. A second process
    writing the same folder is refused (the run's lock).

    A stream, each stage sized for itself (DESIGN.md, Compute)::

        records -> decode + preprocess (DataLoader, cfg.num_workers processes)
                -> classifier, cfg.image_batch images at a time -> translator -> prefix queue
                -> sampler, cfg.batch_rows sequences at a time (whole images, across shards)
                -> word counting + shard writes in a background thread -> run store

    Shards are the unit of resumption only: a shard is written once all its images are done, and
    a resumed run starts at the first missing one. Every batching gives the same tables.

    `ray` runs the same stages on Ray Data instead (a local Ray, a running cluster's address, or
    `core.distributed.RayOptions`): same tables, same run folder; see `core.distributed`.

    A classifier whose classes are not the dataset's (an ImageNet classifier on ImageNet-9 or on ImageNet
    class folders) is read in the dataset's classes first (core.models.label_space; the manifest says how),
    and one that cannot be is refused: its predictions could not be scored against the labels.
    """
    from tqdm.auto import tqdm

    from core.models.label_space import read_in_dataset_classes
    from core.words import WordExtractor

    classifier = read_in_dataset_classes(classifier, dataset)
    cfg = cfg or ExplainConfig()
    extractor = extractor or WordExtractor()
    if ray is not None and ray is not False:
        from core.distributed import explain_on_ray  # Ray is imported only by runs that ask for it

        return explain_on_ray(dataset, classifier, translator, lm, out_dir, cfg, ray=ray, split=split, name=name,
                              extractor=extractor, progress=progress, should_stop=should_stop,
                              max_shards=max_shards, show_progress=show_progress, extra_manifest=extra_manifest,
                              force=force)
    _check_models(translator, classifier, lm)
    ds, records = _records(dataset, split)
    compute = resolve(cfg.device, cfg.dtype)
    classifier.to(compute.device)
    translator.to(compute.device)
    lm.model.to(compute.device, compute.dtype)
    # Settle the device-dependent sizes once, up front: a batch_rows that cannot fit fails here, not half-way.
    on_gpu = compute.device.type == "cuda"
    cfg = replace(cfg, batch_rows=resolve_batch_rows(lm, translator.config.prefix_length, cfg.max_new_tokens,
                                                     cfg.sentences_per_image, cfg.batch_rows),
                  image_batch=cfg.image_batch or (256 if on_gpu else 32),
                  num_workers=cfg.num_workers if cfg.num_workers is not None else
                  (min(8, max(1, (os.cpu_count() or 2) - 1)) if on_gpu else 0))
    plan = _start_run(dataset, ds, records, classifier, translator, lm, out_dir, cfg, split, name,
                      settings={**cfg.sampling_settings(), "dtype": str(compute.dtype).removeprefix("torch.")},
                      device=compute.label, extra_manifest=extra_manifest, force=force, max_shards=max_shards)
    run, shards, done, todo, manifest = plan.run, plan.shards, plan.done, plan.todo, plan.manifest
    done_images = sum(len(shards[s]) for s in done)
    bar = tqdm(total=len(records), initial=done_images, unit="img", desc=f"explain {manifest['name']}",
               disable=not show_progress)
    writer = _ShardWriter(run, {s: len(shards[s]) for s in todo}, len(records), ds, classifier, cfg, extractor)
    stream = _ExplainStream(ds, classifier, translator, lm, cfg, compute, writer)
    t0, n_new, stopped = time.time(), 0, False

    def report_written() -> None:
        nonlocal done_images, n_new
        for s in writer.newly_written():
            done_images += len(shards[s])
            n_new += len(shards[s])
            bar.update(len(shards[s]))
            rate = n_new / max(time.time() - t0, 1e-9)
            bar.set_postfix(sent_s=f"{rate * cfg.sentences_per_image:.0f}")
            if progress:
                progress(done_images, len(records), {"shard": s, "images_per_s": rate})

    try:
        for batch in _decode_batches([(s, r) for s in todo for r in shards[s]], ds, classifier, cfg, stream.stages):
            if should_stop and should_stop():
                stopped = True  # images decoded or sampled for unwritten shards are redone on resume
                break
            stream.push(batch)
            report_written()
        if not stopped:
            stream.flush()
        writer.close()
    finally:
        writer.close(raise_errors=False)
        bar.close()
    report_written()
    elapsed = max(time.time() - t0, 1e-9)
    throughput = {"images_per_s": round(stream.images / elapsed, 3),
                  "sentences_per_s": round(stream.sentences / elapsed, 1),
                  "mean_rows_per_batch": round(stream.rows / stream.calls, 1) if stream.calls else None,
                  "batch_rows": cfg.batch_rows, "image_batch": cfg.image_batch, "num_workers": cfg.num_workers,
                  # where the wall time went: the main thread's stages, then the writer thread's (which overlap)
                  "seconds": {"total": round(elapsed, 3),
                              **{k: round(v, 3) for k, v in {**stream.stages.seconds, **writer.stages.seconds}.items()}}}
    _end_run(run, len(shards), stopped, rate_images_per_s=round(n_new / elapsed, 3), throughput=throughput)
    return run


# --- a run's start and end, shared by every placement (one process here, Ray in core.distributed) ---

@dataclass
class _RunPlan:
    run: Run
    manifest: dict
    shards: list[list]  # records per shard, the dataset's order
    done: set[int]  # shards already written (a resumed run skips them)
    todo: list[int]  # shards this call explains


def _records(dataset, split: str | None):
    ds = dataset.split(split) if split else dataset
    records = list(ds.records)
    if not records:
        raise ValueError(f"dataset {dataset.name!r}{f' split {split!r}' if split else ''} has no images to explain")
    return ds, records


def _check_models(translator, classifier, lm) -> None:
    from core.translator import check_compatible

    check_compatible(translator.config, classifier, lm)


def _start_run(dataset, ds, records, classifier, translator, lm, out_dir, cfg: ExplainConfig, split, name,
               settings: dict, device: str, extra_manifest: dict | None, force: bool,
               max_shards: int | None) -> _RunPlan:
    """Create or resume the run folder (checking models, settings and data) and pick the shards to do."""
    manifest = {
        "name": name or Path(out_dir).name,
        "kind": "explain",
        "models": {"classifier": classifier.name, "classifier_identity": classifier.identity,
                   "classifier_source": portable_root(classifier.source) if classifier.source else None,
                   "translator": portable_root(translator.source) if translator.source else "in-memory",
                   "translator_mapper": translator.config.mapper, "lm": lm.name, "lm_identity": lm.identity,
                   **({"label_space": space.describe()} if (space := getattr(classifier, "label_space", None))
                      else {})},
        "dataset": {"name": dataset.name, "kind": dataset.kind, "root": portable_root(dataset.root), "split": split,
                    "class_names": list(dataset.class_names),
                    **({"class_synsets": list(dataset.class_synsets)} if dataset.class_synsets else {}),
                    "group_names": {str(k): v for k, v in (dataset.group_names or {}).items()} or None,
                    "train_group_counts": _train_group_counts(dataset)},
        "settings": settings,
        "device": device,
        "data_fingerprint": dataset_fingerprint(records, ds.root),
        **(extra_manifest or {}),
    }
    run = Run.create(out_dir, manifest, overwrite=force)
    shards = [records[i:i + cfg.shard_size] for i in range(0, len(records), cfg.shard_size)]
    done = run.done_shards()
    todo = [s for s in range(len(shards)) if s not in done]
    if max_shards is not None:
        todo = todo[:max_shards]
    run.update_manifest(status="running", progress={**run.manifest.get("progress", {}), "total_images": len(records),
                                                    "total_shards": len(shards)})
    return _RunPlan(run, manifest, shards, done, todo)


def _end_run(run: Run, n_shards: int, stopped: bool, **fields) -> None:
    run.update_manifest(**fields)
    if stopped:
        run.update_manifest(status="stopped")
    elif len(run.done_shards()) == n_shards:
        run.finish()
    else:
        run.update_manifest(status="partial")


# --- the stream's stages ---------------------------------------------------------------------

class _DecodeImages(torch.utils.data.Dataset):
    """(shard, record) -> (position, preprocessed image or None, error or None); runs in DataLoader workers."""

    def __init__(self, items, load_image, preprocess):
        self.items, self.load_image, self.preprocess = items, load_image, preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from core.data import DatasetError

        try:
            return i, self.preprocess(self.load_image(self.items[i][1])), None
        except DatasetError as exc:  # an unreadable image is recorded and skipped, never fatal
            return i, None, str(exc)


class _RGBTransform:
    """A classifier's preprocessing as a small picklable object (worker processes get this, not the model)."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        return self.transform(image.convert("RGB"))


class _Stages:
    """Wall seconds per pipeline stage, for the manifest's throughput (is the sampler waiting on something?),
    each stage also a named range in a torch.profiler trace. Stages on the writer thread overlap the rest."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        with record_function(f"texplain.{name}"):
            yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t


def _decode_batches(items, ds, classifier, cfg: ExplainConfig, stages: _Stages | None = None):
    """Batches of cfg.image_batch decoded items, in order: [(item, tensor | None, error | None), ...]."""
    transform = getattr(classifier, "_transform", None)
    preprocess = _RGBTransform(transform) if transform is not None else classifier.preprocess
    loader = torch.utils.data.DataLoader(
        _DecodeImages(items, ds.load_image, preprocess), batch_size=cfg.image_batch, shuffle=False,
        num_workers=cfg.num_workers, collate_fn=list, prefetch_factor=4 if cfg.num_workers else None,
        pin_memory=torch.cuda.is_available() and resolve(cfg.device, cfg.dtype).device.type == "cuda")
    batches, stages = iter(loader), stages or _Stages()
    while True:
        with stages("wait_for_images"):  # decoding itself runs in the loader's workers (num_workers > 0)
            batch = next(batches, None)
        if batch is None:
            return
        yield [(items[i], x, err) for i, x, err in batch]


class _ExplainStream:
    """Classifier and translator per image batch; prefixes queue across batches and shards until a
    sampler call of cfg.batch_rows sequences is full; results go to the writer thread."""

    def __init__(self, ds, classifier, translator, lm, cfg: ExplainConfig, compute, writer: "_ShardWriter"):
        self.ds, self.classifier, self.translator, self.lm, self.cfg = ds, classifier, translator, lm, cfg
        self.compute, self.writer = compute, writer
        self.per_call = max(1, cfg.batch_rows // cfg.sentences_per_image)  # whole images per sampler call
        self.queue: list[tuple] = []  # (shard, record, probabilities)
        self.prefixes: list[torch.Tensor] = []  # (b, k, d) per pushed batch, on the device
        self.images = self.sentences = self.rows = self.calls = 0
        self.stages = _Stages()

    @torch.inference_mode()
    def push(self, batch) -> None:
        ok = [(item, x) for item, x, err in batch if err is None]
        for (shard, r), _, err in batch:
            if err is not None:
                self.writer.put(("failed", shard, r, err))
        if ok:
            with self.stages("classify_translate"):
                x = torch.stack([x for _, x in ok]).to(self.compute.device, non_blocking=True)
                p = next(self.classifier.parameters())
                z, logits = self.classifier.features_and_logits(x.to(p.dtype))
                probs = logits.float().softmax(-1).cpu()
                self.prefixes.append(self.translator(z.float()))
            self.queue += [(shard, r, pr) for (shard, r), pr in zip((item for item, _ in ok), probs)]
        while len(self.queue) >= self.per_call:
            self._sample(self.per_call)

    def flush(self) -> None:
        while self.queue:
            self._sample(min(self.per_call, len(self.queue)))

    def _sample(self, count: int) -> None:
        prefix = torch.cat(self.prefixes) if len(self.prefixes) > 1 else self.prefixes[0]
        take, self.queue = self.queue[:count], self.queue[count:]
        self.prefixes = [prefix[count:]] if len(self.queue) else []
        n = self.cfg.sentences_per_image
        with self.stages("sample"):
            sentences = sample_sentences(self.lm, prefix[:count], n, self.cfg,
                                         [image_key(r.image_id, self.cfg.seed) for _, r, _ in take])
        self.images += count
        self.sentences += count * n
        self.rows += count * n
        self.calls += 1
        self.writer.put(("sampled", take, sentences))


class _ShardWriter:
    """Word counting, row building and shard writes in a background thread, while the LM works.

    Items arrive in dataset order; a shard is written (atomically, by the store) as soon as all its
    images have arrived, in the same row order as ever: readable images, then unreadable ones.
    """

    def __init__(self, run: Run, shard_sizes: dict[int, int], total_images: int, ds, classifier, cfg, extractor):
        self.run, self.sizes, self.total = run, shard_sizes, total_images
        self.ds, self.classifier, self.cfg, self.extractor = ds, classifier, cfg, extractor
        self.stages = _Stages()
        self.inbox: queue.Queue = queue.Queue(maxsize=8)  # bounded: a slow disk holds the GPU back, not memory
        self.pending: dict[int, dict] = {}
        self.written: queue.Queue = queue.Queue()
        self.t0, self.images_written = time.time(), 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="explain-shard-writer", daemon=True)
        self.thread.start()

    def put(self, item) -> None:
        self._raise()
        while True:
            try:
                self.inbox.put(item, timeout=1.0)
                return
            except queue.Full:
                self._raise()

    def newly_written(self) -> list[int]:
        out = []
        while not self.written.empty():
            out.append(self.written.get_nowait())
        self._raise()
        return out

    def close(self, raise_errors: bool = True) -> None:
        if self.thread.is_alive():
            self.inbox.put(None)
            self.thread.join()
        if raise_errors:
            self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"writing the run's shards failed: {self.error}") from self.error

    def _work(self) -> None:
        while True:
            item = self.inbox.get()
            if item is None:
                return
            if self.error is not None:
                continue  # keep draining so the producer never blocks
            try:
                self._take(item)
            except BaseException as exc:  # handed to the main thread, which raises it
                self.error = exc

    def _shard(self, s: int) -> dict:
        return self.pending.setdefault(s, {"images": [], "failed": [], "words": [], "sentences": [], "n": 0})

    def _take(self, item) -> None:
        if item[0] == "failed":
            _, s, r, err = item
            self._shard(s)["failed"].append(_failed_image_row(r, err, self.ds))
            self._done(s, 1)
            return
        _, take, sentences = item
        with self.stages("count_words"):
            counts = self.extractor.count_many(sentences)
        for (s, r, p), sents, cnt in zip(take, sentences, counts):
            sh = self._shard(s)
            sh["images"].append(_image_row(r, p, sents, self.ds, self.classifier))
            sh["words"] += [{"image_id": r.image_id, "word": w, "count": c, "sentences": k} for w, (c, k) in cnt.items()]
            sh["sentences"] += [{"image_id": r.image_id, "idx": j, "text": t}
                                for j, t in enumerate(sents[:self.cfg.keep_sentences])]
            self._done(s, 1)

    def _done(self, s: int, k: int) -> None:
        sh = self.pending[s]
        sh["n"] += k
        if sh["n"] == self.sizes[s]:
            with self.stages("write_shard"):
                self.run.write_shard(s, *_shard_tables(sh["images"] + sh["failed"], sh["words"], sh["sentences"]),
                                     total_images=self.total)
            self.images_written += self.sizes[s]
            # Read by the dashboard's job list for its time-left estimate (this thread owns the manifest now).
            self.run.update_manifest(rate_images_per_s=round(self.images_written / max(time.time() - self.t0, 1e-9), 3))
            del self.pending[s]
            self.written.put(s)


def _rel(path: Path, root: Path) -> str:
    # Paths relative to the dataset root keep a run valid when the data or the repo moves.
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _train_group_counts(dataset) -> dict | None:
    try:
        train = [r for r in dataset.records if r.split == "train" and r.group is not None]
    except AttributeError:
        return None
    if not train:
        return None
    counts: dict[str, int] = {}
    for r in train:
        counts[str(r.group)] = counts.get(str(r.group), 0) + 1
    return counts


def _image_row(r, probs: torch.Tensor, sents: list[str], ds, classifier) -> dict:
    conf, pred = probs.max(-1)
    return _prediction_row(r, int(pred), float(conf), len(sents), ds, classifier.class_names)


def _prediction_row(r, pred: int, conf: float, n_sentences: int, ds, class_names: Sequence[str]) -> dict:
    return {"image_id": r.image_id, "path": _rel(r.path, ds.root), "split": r.split,
            "label": int(r.label), "label_name": ds.class_names[r.label] if r.label is not None else None,
            "prediction": pred, "prediction_name": class_names[pred],
            "confidence": conf, "group": r.group, "place": r.place, "n_sentences": n_sentences}


def _failed_image_row(r, err: str, ds) -> dict:
    return {"image_id": r.image_id, "path": _rel(r.path, ds.root), "split": r.split,
            "label": int(r.label), "label_name": ds.class_names[r.label], "prediction": None, "prediction_name": None,
            "confidence": None, "group": r.group, "place": r.place, "n_sentences": 0, "error": err}


def _shard_tables(image_rows: list[dict], word_rows: list[dict],
                  sent_rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    images_df = pd.DataFrame(image_rows)
    if "error" not in images_df:
        images_df["error"] = None
    images_df = images_df.astype({"label": "int64", "n_sentences": "int64", "group": "Int64", "place": "Int64",
                                  "prediction": "Int64", "confidence": "float64"})
    words_df = pd.DataFrame(word_rows, columns=["image_id", "word", "count", "sentences"]).astype(
        {"count": "int32", "sentences": "int32"})
    sents_df = pd.DataFrame(sent_rows, columns=["image_id", "idx", "text"]).astype({"idx": "int32"})
    return images_df, words_df, sents_df
