"""Explaining images: classifier features -> translator prefix -> many sampled sentences -> word counts.

`sample_sentences` is the hot loop: nucleus sampling batched across images and samples, with a
KV cache, dropping each sentence from the batch as soon as it ends. `explain_dataset` drives it
over a dataset in fixed shards written to the run store, so an interrupted run resumes at the
first missing shard with exactly the rows an uninterrupted run would have written.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch

from core.device import resolve
from core.store import Run, dataset_fingerprint, portable_root


@dataclass
class ExplainConfig:
    sentences_per_image: int = 32  # N samples per image; the paper uses many, the word shares converge ~32-64
    top_p: float = 0.9  # nucleus sampling: varied but grammatical sentences
    temperature: float = 0.9
    max_new_tokens: int = 20  # captions are one short sentence
    batch_rows: int = 512  # sequences generated together (images x samples)
    shard_size: int = 64  # images per store shard: the unit of resumption
    keep_sentences: int | None = None  # sentences stored per image (None = all: sentence-level stats can be redone)
    image_batch: int = 32  # images per classifier forward pass
    seed: int = 0
    device: str = "auto"
    dtype: str | None = None  # None: bf16 on CUDA, float32 on CPU

    def __post_init__(self):
        for name in ("sentences_per_image", "max_new_tokens", "batch_rows", "shard_size", "image_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def sampling_settings(self) -> dict:
        """The settings that determine the output (recorded in the manifest, checked on resume)."""
        d = asdict(self)
        for speed_only in ("device", "image_batch", "batch_rows"):  # never change the random numbers drawn
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


def _sample_top_p(logits: torch.Tensor, top_p: float, temperature: float, u: torch.Tensor,
                  rows: torch.Tensor | None = None, consume: bool = False) -> torch.Tensor:
    """Nucleus sampling by inverse CDF: one token per uniform in u (R,).

    `logits` (S, V) holds one distribution per state and `rows` (R,) says which state each
    uniform draws from (default: uniform i from state i), so sequences that share a history
    share the work on its distribution.

    Sorting the whole vocabulary for every state costs as much as the LM step itself on a CPU,
    yet a caption's nucleus is usually a few dozen tokens (SmolLM2 on the demo: median 8, 80%
    under 64). So each state's nucleus is looked for among its top 64 tokens, then its top
    1024, and only the rest are fully sorted. Every tier computes the same numbers as a full
    sort (same softmax; cumulative sums are sequential prefixes), so the choice is identical.
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
    for k in _NUCLEUS_TIERS if top_p < 1.0 else ():
        if k >= V:
            break
        top, idx = probs[left].topk(k + 1, dim=-1)  # sorted, descending
        # Exact when the (k+1)-th token is already outside the nucleus (and so is every later one).
        fits = top.cumsum(-1)[:, -1] - top[:, -1] > top_p
        draw(left[fits], top[fits], idx[fits])
        left = left[~fits]
        if not left.numel():
            return out
    draw(left, *probs[left].sort(dim=-1, descending=True))
    return out


def _inverse_cdf(sorted_p: torch.Tensor, idx: torch.Tensor, top_p: float, u: torch.Tensor,
                 which: torch.Tensor) -> torch.Tensor:
    """Token ids for uniforms u drawn from states `which`, given each state's probabilities sorted
    descending (all, or a prefix that holds the nucleus) and their token ids."""
    if top_p < 1.0:
        # Keep the smallest set of tokens whose mass reaches top_p (the first token always survives).
        sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p > top_p, 0.0)
    cdf = sorted_p.double().cumsum(-1)[which]  # (R, k)
    target = (u * cdf[:, -1]).unsqueeze(-1)  # (R, 1)
    choice = torch.searchsorted(cdf, target, right=True).clamp_max(cdf.shape[-1] - 1)
    return idx[which].gather(-1, choice).squeeze(-1)


def image_key(image_id: str | int, seed: int) -> int:
    """A stable 63-bit key for an image's sampling stream, from its id and the run's seed."""
    import hashlib

    h = hashlib.blake2b(f"{seed}:{image_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


@torch.inference_mode()
def sample_sentences(lm, prefix: torch.Tensor, n: int, cfg: ExplainConfig,
                     keys: Sequence[int] | None = None) -> list[list[str]]:
    """prefix (B, k, d) -> B lists of n sentences, sampled with a KV cache, ~cfg.batch_rows sequences at a time.

    `keys` (one per image, see `image_key`) fix each image's random stream; by default 0..B-1
    mixed with cfg.seed.
    """
    model, eos = lm.model, lm.eos_token_id
    B = prefix.shape[0]
    if keys is None:
        keys = [image_key(i, cfg.seed) for i in range(B)]
    if len(keys) != B:
        raise ValueError(f"keys has {len(keys)} entries for {B} prefixes")
    # Sequence j of image i has key mix(key_i) + j: distinct streams for every sample.
    row_keys = (_mix64(torch.tensor(list(keys), dtype=torch.long)).repeat_interleave(n)
                + torch.arange(n).repeat(B))  # (B*n,)
    prefix = prefix.to(lm.device, lm.model.dtype)
    out_tokens: list[list[int]] = [[] for _ in range(B * n)]
    per_chunk = max(1, cfg.batch_rows // n)  # whole images per chunk, so every sample of an image shares its prefill
    for i0 in range(0, B, per_chunk):
        chunk = prefix[i0:i0 + per_chunk]  # (b, k, d)
        # Sequences with the same history (same image, same tokens so far) have the same next-token
        # distribution, so the cache and the LM step hold one state per distinct history, not one
        # per sequence: an image's prefix runs once for its n samples, and so do common openings
        # ("A bird standing ..."), about 10% of all steps for captions.
        out = model(inputs_embeds=chunk, use_cache=True, logits_to_keep=1)  # only the last position predicts
        cache, logits = out.past_key_values, out.logits[:, -1]  # (states, V)
        alive = torch.arange(i0 * n, (i0 + chunk.shape[0]) * n)  # global row of each live sequence
        state = torch.arange(chunk.shape[0]).repeat_interleave(n)  # each live sequence's state
        for step in range(cfg.max_new_tokens):
            u = row_uniforms(row_keys[alive], step)
            tok = _sample_top_p(logits, cfg.top_p, cfg.temperature, u, state, consume=True).cpu()  # (R,)
            ended = tok == eos
            keep = (~ended).nonzero().squeeze(-1)
            alive, tok, state = alive[keep], tok[keep], state[keep]
            for r, t in zip(alive.tolist(), tok.tolist()):
                out_tokens[r].append(t)
            if not len(alive):
                break
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
                    force: bool = False) -> Run:
    """Explain every image of `dataset` (optionally one split) into the run folder `out_dir`; resumable.

    Resuming checks the settings, models and data (`dataset_fingerprint`) against the run's and refuses
    a mismatch; `force=True` deletes the run in `out_dir` (if any) and starts over. A second process
    writing the same folder is refused (the run's lock).
    """
    from tqdm.auto import tqdm

    from core.translator import check_compatible
    from core.words import WordExtractor

    cfg = cfg or ExplainConfig()
    extractor = extractor or WordExtractor()
    check_compatible(translator.config, classifier, lm)
    ds = dataset.split(split) if split else dataset
    records = list(ds.records)
    if not records:
        raise ValueError(f"dataset {dataset.name!r}{f' split {split!r}' if split else ''} has no images to explain")
    compute = resolve(cfg.device, cfg.dtype)
    classifier.to(compute.device)
    translator.to(compute.device)
    lm.model.to(compute.device, compute.dtype)
    manifest = {
        "name": name or Path(out_dir).name,
        "kind": "explain",
        "models": {"classifier": classifier.name, "classifier_identity": classifier.identity,
                   "classifier_source": portable_root(classifier.source) if classifier.source else None,
                   "translator": portable_root(translator.source) if translator.source else "in-memory",
                   "translator_mapper": translator.config.mapper, "lm": lm.name, "lm_identity": lm.identity},
        "dataset": {"name": dataset.name, "kind": dataset.kind, "root": portable_root(dataset.root), "split": split,
                    "class_names": list(dataset.class_names),
                    "group_names": {str(k): v for k, v in (dataset.group_names or {}).items()} or None,
                    "train_group_counts": _train_group_counts(dataset)},
        "settings": {**cfg.sampling_settings(), "dtype": str(compute.dtype).removeprefix("torch.")},
        "device": compute.label,
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
    done_images = sum(len(shards[s]) for s in done)
    bar = tqdm(total=len(records), initial=done_images, unit="img", desc=f"explain {manifest['name']}",
               disable=not show_progress)
    t0, n_new = time.time(), 0
    for s in todo:
        if should_stop and should_stop():
            run.update_manifest(status="stopped")
            bar.close()
            return run
        images_df, words_df, sents_df = _explain_shard(shards[s], s, ds, classifier, translator, lm, cfg, extractor, compute)
        run.write_shard(s, images_df, words_df, sents_df, total_images=len(records))
        done_images += len(shards[s])
        n_new += len(shards[s])
        bar.update(len(shards[s]))
        rate = n_new / max(time.time() - t0, 1e-9)
        bar.set_postfix(sent_s=f"{rate * cfg.sentences_per_image:.0f}")
        run.update_manifest(rate_images_per_s=round(rate, 3))
        if progress:
            progress(done_images, len(records), {"shard": s, "images_per_s": rate})
    bar.close()
    if len(run.done_shards()) == len(shards):
        run.finish()
    else:
        run.update_manifest(status="partial")
    return run


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


def _explain_shard(records, shard: int, ds, classifier, translator, lm, cfg: ExplainConfig, extractor,
                   compute) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from core.data import DatasetError

    ok, imgs, failed = [], [], []
    for r in records:
        try:
            imgs.append(ds.load_image(r))
            ok.append(r)
        except DatasetError as exc:  # an unreadable image is recorded and skipped, never fatal
            failed.append((r, str(exc)))
    image_rows, word_rows, sent_rows = [], [], []
    for i in range(0, len(ok), cfg.image_batch):
        recs, batch = ok[i:i + cfg.image_batch], imgs[i:i + cfg.image_batch]
        z, probs = classify_images(classifier, batch, compute.device)
        with torch.inference_mode():
            prefix = translator(z)
        sentences = sample_sentences(lm, prefix, cfg.sentences_per_image, cfg,
                                     [image_key(r.image_id, cfg.seed) for r in recs])
        counts = extractor.count_many(sentences)
        for r, p, sents, cnt in zip(recs, probs, sentences, counts):
            conf, pred = p.max(-1)
            image_rows.append({"image_id": r.image_id, "path": _rel(r.path, ds.root), "split": r.split,
                               "label": int(r.label), "label_name": ds.class_names[r.label] if r.label is not None else None,
                               "prediction": int(pred), "prediction_name": classifier.class_names[int(pred)],
                               "confidence": float(conf), "group": r.group, "place": r.place,
                               "n_sentences": len(sents)})
            word_rows += [{"image_id": r.image_id, "word": w, "count": c, "sentences": s} for w, (c, s) in cnt.items()]
            sent_rows += [{"image_id": r.image_id, "idx": j, "text": t} for j, t in enumerate(sents[:cfg.keep_sentences])]
    for r, err in failed:
        image_rows.append({"image_id": r.image_id, "path": _rel(r.path, ds.root), "split": r.split,
                           "label": int(r.label), "label_name": ds.class_names[r.label], "prediction": None, "prediction_name": None,
                           "confidence": None, "group": r.group, "place": r.place, "n_sentences": 0,
                           "error": err})
    images_df = pd.DataFrame(image_rows)
    if "error" not in images_df:
        images_df["error"] = None
    images_df = images_df.astype({"label": "int64", "n_sentences": "int64", "group": "Int64", "place": "Int64",
                                  "prediction": "Int64", "confidence": "float64"})
    words_df = pd.DataFrame(word_rows, columns=["image_id", "word", "count", "sentences"]).astype(
        {"count": "int32", "sentences": "int32"})
    sents_df = pd.DataFrame(sent_rows, columns=["image_id", "idx", "text"]).astype({"idx": "int32"})
    return images_df, words_df, sents_df
