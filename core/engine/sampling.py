"""The sampler: many nucleus-sampled sentences per image from a language model given soft prefixes.

`sample_sentences` is the hot loop: batched across images and samples, with a KV cache, dropping each
sentence from the batch as soon as it ends and merging sequences whose histories agree. Its random numbers
are counter-based (a pure function of image, sample and step), so a sentence comes out the same whatever
else shares its batch: every batching, placement and resumption gives the same tables.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from core.engine.config import ExplainConfig

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


def sample_top_p(logits: torch.Tensor, top_p: float, temperature: float, u: torch.Tensor,
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
        out[r] = inverse_cdf(sorted_p, idx, top_p, u[r], slot[rows[r]])

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


def inverse_cdf(sorted_p: torch.Tensor, idx: torch.Tensor, top_p: float, u: torch.Tensor,
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


def pack_rows(counts: Sequence[int], batch_rows: int) -> list[range]:
    """Consecutive images whose sequences (counts[i] each) fill sampler calls of at most batch_rows rows;
    an image is never split across calls (its samples share one prefill), and a call holds at least one image.
    With equal counts this is batch_rows // n images a call."""
    out, i0, rows = [], 0, 0
    for i, c in enumerate(counts):
        if rows and rows + c > batch_rows:
            out.append(range(i0, i))
            i0, rows = i, 0
        rows += c
    if i0 < len(counts):
        out.append(range(i0, len(counts)))
    return out


@torch.inference_mode()
def sample_sentences(lm, prefix: torch.Tensor, n: int | Sequence[int], cfg: ExplainConfig,
                     keys: Sequence[int] | None = None, first: Sequence[int] | None = None) -> list[list[str]]:
    """prefix (B, k, d) -> B lists of n sentences, sampled with a KV cache, ~batch_rows sequences at a time.

    `keys` (one per image, see `image_key`) fix each image's random stream; by default 0..B-1
    mixed with cfg.seed. `cfg.batch_rows=None` takes the device's default (see `resolve_batch_rows`).

    `n` may be one count per image, and `first` (default 0) the index of each image's first sample:
    image i gets its samples first[i] .. first[i] + n[i] - 1. Sample j of an image is the same sentence
    whichever call draws it (its random numbers depend on (key, j, step) only), so an image's first n
    sentences do not depend on how many it gets in all, nor on the rounds they were drawn in.
    """
    model, stop = lm.model, torch.tensor(lm.stop_token_ids)
    B = prefix.shape[0]
    if keys is None:
        keys = [image_key(i, cfg.seed) for i in range(B)]
    counts = [int(n)] * B if isinstance(n, int) else [int(c) for c in n]
    first = [0] * B if first is None else [int(f) for f in first]
    if len(keys) != B or len(counts) != B or len(first) != B:
        raise ValueError(f"keys, n and first need one entry per prefix ({B}); got {len(keys)}, {len(counts)} and "
                         f"{len(first)}")
    if any(c < 0 for c in counts) or any(f < 0 for f in first):
        raise ValueError("sample counts and first sample indices must be >= 0")
    nucleus = _choose(cfg.nucleus, lm.device, "pivot", "tiers")
    kv_cache = _choose(cfg.kv_cache, lm.device, "preallocated", "dynamic")
    batch_rows = cfg.batch_rows or resolve_batch_rows(lm, prefix.shape[1], cfg.max_new_tokens, max(counts, default=1))
    # Sequence j of image i has key mix(key_i) + j: distinct streams for every sample.
    count_t = torch.tensor(counts, dtype=torch.long)
    starts = torch.cumsum(count_t, 0) - count_t  # (B,) each image's first row
    image_of_row = torch.arange(B).repeat_interleave(count_t)  # (rows,)
    row_keys = (_mix64(torch.tensor(list(keys), dtype=torch.long))[image_of_row] + torch.tensor(first)[image_of_row]
                + torch.arange(len(image_of_row)) - starts[image_of_row])  # (rows,)
    prefix = prefix.to(lm.device, lm.model.dtype)
    out_tokens: list[list[int]] = [[] for _ in range(len(image_of_row))]
    # whole images per chunk, so every sample of an image shares its prefill
    for images in pack_rows(counts, batch_rows):
        images = [i for i in images if counts[i]]
        if not images:
            continue
        chunk = prefix[torch.tensor(images, device=prefix.device)]  # (b, k, d)
        chunk_counts = count_t[images]
        cache = None
        if kv_cache == "preallocated":
            cache = _preallocated_cache(model.config.num_hidden_layers, int(chunk_counts.sum()),
                                        chunk.shape[1] + cfg.max_new_tokens)
        # Sequences with the same history (same image, same tokens so far) have the same next-token
        # distribution, so the cache and the LM step hold one state per distinct history, not one
        # per sequence: an image's prefix runs once for its n samples, and so do common openings
        # ("A bird standing ..."), about 10% of all steps for captions.
        # only the last position predicts
        out = model(inputs_embeds=chunk, past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache, logits = out.past_key_values, out.logits[:, -1]  # (states, V)
        alive = torch.cat([torch.arange(int(starts[i]), int(starts[i]) + counts[i]) for i in images])  # global rows
        state = torch.arange(len(images)).repeat_interleave(chunk_counts)  # each live sequence's state
        for step in range(cfg.max_new_tokens):
            u = row_uniforms(row_keys[alive], step)
            tok = sample_top_p(logits, cfg.top_p, cfg.temperature, u, state, consume=True, method=nucleus).cpu()  # (R,)
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
    texts = lm.tokenizer.batch_decode(out_tokens, skip_special_tokens=True) if out_tokens else []
    # A sentence ends at its first line break; the LM sometimes runs on into a second one.
    texts = [t.split("\n", 1)[0].strip() for t in texts]
    return [texts[int(starts[i]):int(starts[i]) + counts[i]] for i in range(B)]


MAX_DRAWS = 4  # an image whose sentences are screened draws at most this many times the sentences it keeps


def sample_accepted(lm, prefix: torch.Tensor, n: int | Sequence[int], cfg: ExplainConfig,
                    keys: Sequence[int] | None = None, rejects: Sequence[Callable[[str], bool] | None] | None = None,
                    first: Sequence[int] | None = None) -> tuple[list[list[str]], list[int]]:
    """`sample_sentences`, with the sentences that `rejects[i]` refuses drawn again: image i keeps the first n[i]
    of its samples first[i], first[i] + 1, ... that pass (fewer if MAX_DRAWS times n[i] draws do not find them).
    Returns the kept sentences and, per image, the index of its next sample: the kept ones depend only on the
    image's stream, never on the rounds that drew them. Images with no screen (None) take one call, as before."""
    B = prefix.shape[0]
    counts = [int(n)] * B if isinstance(n, int) else [int(c) for c in n]
    keys = list(keys) if keys is not None else [image_key(i, cfg.seed) for i in range(B)]
    rejects = list(rejects) if rejects is not None else [None] * B
    drawn = [0] * B if first is None else [int(f) for f in first]
    if not len(counts) == len(keys) == len(rejects) == len(drawn) == B:
        raise ValueError(f"n, keys, rejects and first need one entry per prefix ({B})")
    cap = [d + MAX_DRAWS * c for d, c in zip(drawn, counts)]
    kept: list[list[str]] = [[] for _ in range(B)]
    take = counts[:]  # the first round draws what each image wants; later ones twice the shortfall
    while todo := [i for i in range(B) if take[i] > 0]:
        new = sample_sentences(lm, prefix[todo], [take[i] for i in todo], cfg, [keys[i] for i in todo],
                               [drawn[i] for i in todo])
        for i, sentences in zip(todo, new):
            drawn[i] += take[i]
            screen = rejects[i]
            kept[i] += [s for s in sentences if screen is None or not screen(s)]
            # In stream order, so the first n[i] that pass are the same whatever the rounds.
            kept[i] = kept[i][:counts[i]]
            short = counts[i] - len(kept[i])
            take[i] = min(2 * short, cap[i] - drawn[i]) if short and screen is not None else 0
    return kept, drawn


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
