"""Translator training: image-caption pairs -> cached classifier features -> soft prefix -> frozen LM loss.

Neither the classifier nor the LM changes. Features are computed once per (classifier, image
list) and cached on disk; each step feeds `[T(z); caption embeddings]` to the LM and takes its
next-token cross-entropy on the caption tokens and EOS only. Validation loss after each epoch,
best checkpoint kept, and `train_state.pt` in the output folder makes a run resumable.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from core import paths
from core.device import resolve
from core.engine.config import TrainConfig
from core.errors import TrainStateError
from core.models.translator import Translator, TranslatorConfig

# --- features, computed once -----------------------------------------------------------------

def _cache_key(classifier, items: Sequence[str]) -> str:
    # Size and mtime too: a dataset rebuilt in place (same paths, new pixels) must not reuse old features.
    h = hashlib.sha256(classifier.identity.encode())
    for p in items:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\n".encode())
    return h.hexdigest()[:16]


@torch.inference_mode()
def compute_features(classifier, image_paths: Sequence[str | Path], load_image: Callable, batch_size: int = 32,
                     device: torch.device | str = "cpu", cache_dir: Path | None = paths.FEATURE_CACHE,
                     show_progress: bool = True, variant: str = "") -> torch.Tensor:
    """Features (N, D) of the images, from the on-disk cache when this classifier has seen them before.

    `variant` names what `load_image` does beyond reading the file (an augmentation), so that two
    variants of the same images get two cache entries."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    key = _cache_key(classifier, [str(p) for p in image_paths] + ([f"variant={variant}"] if variant else []))
    cache = Path(cache_dir) / f"{key}.safetensors" if cache_dir else None
    if cache and cache.exists():
        return load_file(str(cache))["features"]
    classifier.to(device)
    feats = []
    for i in tqdm(range(0, len(image_paths), batch_size), desc=f"features {variant}".strip(),
                  disable=not show_progress, unit="batch"):
        x = torch.stack([classifier.preprocess(load_image(p)) for p in image_paths[i:i + batch_size]]).to(device)
        feats.append(classifier.features(x).float().cpu())
    out = torch.cat(feats)
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({"features": out.contiguous()}, str(cache))
    return out


# Feature augmentation: the translator sees a mirrored or cropped image's features with the same caption,
# so it learns what the features say about the scene and the object rather than one vector per photo.
VIEWS = ("identity", "flip", "crop-1", "crop-2")
CROP_SCALE, CROP_RATIO = (0.55, 1.0), (3 / 4, 4 / 3)


def augment_image(image, view: str, key: str):
    """A deterministic view of a PIL image: "identity", "flip", or "crop-<i>" (a random-resized crop,
    seeded by the image's key and i, at the image's size)."""
    from PIL import Image

    if view == "identity":
        return image
    if view == "flip":
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if not view.startswith("crop-"):
        raise ValueError(f"unknown view {view!r}: use one of identity, flip, crop-<i>")
    from torchvision.transforms import RandomResizedCrop

    seed = int.from_bytes(hashlib.sha256(f"{key}\0{view}".encode()).digest()[:8], "little")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        top, left, h, w = RandomResizedCrop.get_params(image, CROP_SCALE, CROP_RATIO)
    return image.resize(image.size, Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))


def compute_feature_views(classifier, image_paths: Sequence[str | Path], load_image: Callable,
                          views: Sequence[str] = VIEWS, **kw) -> torch.Tensor:
    """Features (N, V, D) of each image under each view (cached per view, like `compute_features`)."""
    out = []
    for view in views:
        def load(p, view=view):
            return augment_image(load_image(p), view, str(p))
        out.append(compute_features(classifier, image_paths, load, variant="" if view == "identity" else view, **kw))
    return torch.stack(out, dim=1)


def caption_pairs(classifier, captions, load_image: Callable, views: Sequence[str] = VIEWS, name: str = "captions"):
    """A caption table (path, caption, split) as training data: (train features (pairs, views, D), train
    captions, val features (images, D), val captions). Every caption of every training image comes with
    the features of each view of its image; validation keeps one caption per image, unaugmented."""
    images, index, train_caps, val_z, val_caps = caption_pairs_compact(classifier, captions, load_image, views, name)
    return images[index], train_caps, val_z, val_caps


def caption_pairs_compact(classifier, captions, load_image: Callable, views: Sequence[str] = VIEWS,
                          name: str = "captions"):
    """`caption_pairs` with the training features kept once per image: (features (images, views, D),
    index (pairs,) into them, train captions, val features, val captions)."""
    train = captions[captions["split"] == "train"].reset_index(drop=True)
    val = captions[captions["split"] == "val"].drop_duplicates("path").reset_index(drop=True)
    if train.empty or val.empty:
        raise ValueError(f"{name}: training a translator needs train and val captions; it has "
                         f"{dict(captions['split'].value_counts())}")
    uniq = sorted(set(train["path"]))
    row = {p: i for i, p in enumerate(uniq)}
    feats = compute_feature_views(classifier, uniq, load_image, views=views)
    return (feats, torch.tensor([row[p] for p in train["path"]]), list(train["caption"]),
            compute_features(classifier, list(val["path"]), load_image), list(val["caption"]))


# --- training packs: features computed where the images are, the translator trained where the GPU is ---

PACK_FORMAT = "texplain-training-pack/1"
_PROBE_TEXT = "a small bird standing on a rock near the water"


@dataclass(frozen=True)
class FeatureSource:
    """What a translator records of its classifier; stands in for it when training from a pack."""
    name: str
    identity: str
    feature_identity: str
    feature_dim: int


@dataclass
class TrainingPack:
    source: FeatureSource
    train_features: torch.Tensor  # (pairs, views, D) float32
    train_captions: list[str]
    val_features: torch.Tensor  # (images, D) float32
    val_captions: list[str]
    lm: dict  # name, identity and a probe of the LM the pack was made for
    data_info: dict


def lm_probe(lm) -> dict:
    """A content check of an LM: a corner of its embedding table and a tokenized sentence. Two copies of
    the same weights (a local folder, the GGUF de-quantized on another machine) agree on it."""
    emb = lm.model.get_input_embeddings().weight
    return {"hidden_size": lm.hidden_size, "vocab_size": int(emb.shape[0]),
            "embedding_corner": emb[:8, :8].detach().float().cpu().flatten().tolist(),
            "probe_ids": list(lm.tokenizer(_PROBE_TEXT, add_special_tokens=False).input_ids)}


def save_training_pack(path: str | Path, classifier, lm, pairs, data_info: dict | None = None) -> Path:
    """Write `caption_pairs_compact`'s output as one safetensors file (float16 features: half the bytes,
    and what a GPU trains in anyway). `train_translator_from_pack` trains from it without the images or
    the classifier's weights."""
    from safetensors.torch import save_file

    images, index, train_caps, val_z, val_caps = pairs
    meta = {"format": PACK_FORMAT,
            "source": asdict(FeatureSource(classifier.name, classifier.identity, classifier.feature_identity,
                                           classifier.feature_dim)),
            "lm": {"name": lm.name, "identity": lm.identity, **lm_probe(lm)},
            "train_captions": list(train_caps), "val_captions": list(val_caps), "data_info": data_info or {}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"images": images.half().contiguous(), "index": index.long().contiguous(),
               "val": val_z.half().contiguous()}, str(path), metadata={"texplain": json.dumps(meta)})
    return path


def load_training_pack(path: str | Path) -> TrainingPack:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("texplain", "{}"))
            if meta.get("format") != PACK_FORMAT:
                raise ValueError(f"its format is {meta.get('format')!r}, not {PACK_FORMAT!r}")
            t = {k: f.get_tensor(k) for k in ("images", "index", "val")}
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise ValueError(f"{path} is not a training pack: {exc}") from exc
    if len(t["index"]) != len(meta["train_captions"]) or len(t["val"]) != len(meta["val_captions"]):
        raise ValueError(f"{path} is damaged: its features and captions disagree in number")
    return TrainingPack(FeatureSource(**meta["source"]), t["images"].float()[t["index"]], meta["train_captions"],
                        t["val"].float(), meta["val_captions"], meta["lm"], meta.get("data_info", {}))


def adopt_pack_lm(pack: TrainingPack, lm) -> None:
    """Check that `lm` holds the weights the pack was made for; a copy loaded from elsewhere (a different
    path, hence identity) takes the pack's identity, so the translator loads beside the original."""
    probe = lm_probe(lm)
    want = pack.lm
    same = (probe["hidden_size"] == want["hidden_size"] and probe["vocab_size"] == want["vocab_size"]
            and probe["probe_ids"] == want["probe_ids"]
            and torch.allclose(torch.tensor(probe["embedding_corner"]), torch.tensor(want["embedding_corner"]),
                               atol=1e-4))
    if not same:
        raise ValueError(f"the language model {lm.name!r} is not the one the pack was made for "
                         f"({want['name']!r}): their weights or tokenizers differ")
    lm.identity, lm.name = want["identity"], want["name"]


def train_translator_from_pack(pack: TrainingPack, lm, out_dir: str | Path, cfg: "TrainConfig | None" = None,
                               **kw) -> Translator:
    adopt_pack_lm(pack, lm)
    return train_translator(pack.source, lm, pack.train_features, pack.train_captions, out_dir, pack.val_features,
                            pack.val_captions, cfg, data_info=pack.data_info, **kw)


# --- the loss --------------------------------------------------------------------------------

def tokenize_captions(lm, captions: Sequence[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions + EOS, right-padded: ids (N, T) and a mask of real tokens (N, T)."""
    tok = lm.tokenizer
    ids = [tok(c.strip(), add_special_tokens=False).input_ids[:max_tokens - 1] + [lm.eos_token_id] for c in captions]
    T = max(len(x) for x in ids)
    out = torch.full((len(ids), T), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.bool)
    for i, x in enumerate(ids):
        out[i, :len(x)] = torch.tensor(x)
        mask[i, :len(x)] = True
    return out, mask


def emphasis_weights(lm, captions: Sequence[str], spans: Sequence[tuple[int, int] | None], weight: float,
                     max_tokens: int) -> torch.Tensor:
    """Per-token loss weights aligned with tokenize_captions: `weight` for a token that overlaps its caption's
    character span (start, end) of the stripped caption, 1 elsewhere (EOS and padding included: the mask
    drops padding), 1 everywhere for a caption whose span is None."""
    if len(spans) != len(captions):
        raise ValueError(f"{len(spans)} emphasis spans for {len(captions)} captions")
    tok = lm.tokenizer
    rows = []
    for c, span in zip(captions, spans):
        enc = tok(c.strip(), add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"][:max_tokens - 1]
        rows.append([weight if span and a < span[1] and b > span[0] else 1.0 for a, b in offsets] + [1.0])
    out = torch.ones((len(rows), max(len(r) for r in rows)))
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r)
    return out


def unlikely_tokens(lm, captions: Sequence[str], words: Sequence[Sequence[str]], max_tokens: int) -> torch.Tensor:
    """Per caption, the token ids its image must not make the LM say, -1-padded (N, K): the first token of each of
    `words` (and of its plural) as it reads inside a sentence (after a space). A token of the caption itself is
    never one of them ("sunflower" and "sun" may share a first token)."""
    if len(words) != len(captions):
        raise ValueError(f"{len(words)} sets of unlikely words for {len(captions)} captions")
    tok, cache, rows = lm.tokenizer, {}, []
    for c, ws in zip(captions, words):
        own = set(tok(c.strip(), add_special_tokens=False).input_ids[:max_tokens - 1])
        ids = set()
        for w in ws:
            for form in (w, w + "s"):
                if form not in cache:
                    cache[form] = tok(" " + form, add_special_tokens=False).input_ids[0]
                ids.add(cache[form])
        rows.append(sorted(ids - own))
    out = torch.full((len(rows), max((len(r) for r in rows), default=0) or 1), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def single_token_words(lm, words: Iterable[str]) -> set[str]:
    """The words that unlikely_tokens can penalise without collateral: each is one token inside a sentence
    (" apple"), and so is its plural or the plural starts with that token (" apple" "s"). A longer word's first
    token is a fragment (" st" of " stapler") that many other words begin with."""
    tok, out = lm.tokenizer, set()
    for w in words:
        one = tok(" " + w, add_special_tokens=False).input_ids
        many = tok(" " + w + "s", add_special_tokens=False).input_ids
        if len(one) == 1 and one[0] != tok.unk_token_id and (len(many) == 1 or many[0] == one[0]):
            out.add(w)
    return out


def caption_loss(translator: Translator, lm, z: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                 weights: torch.Tensor | None = None, unlikely: torch.Tensor | None = None,
                 unlikely_weight: float = 0.0) -> torch.Tensor:
    """Mean next-token cross-entropy of the captions given the translator's prefix; with `weights` (N, T),
    emphasis_weights', the weighted mean over the real tokens; with `unlikely` (N, K) (unlikely_tokens) and a
    weight, plus that weight times the mean over real positions of sum_k -log(1 - p(token k))."""
    prefix = translator(z)  # (B, k, d)
    k = prefix.shape[1]
    emb = lm.embed(ids)  # (B, T, d)
    x = torch.cat([prefix.to(emb.dtype), emb], dim=1)  # (B, k+T, d)
    attn = torch.cat([torch.ones(mask.shape[0], k, dtype=torch.long, device=mask.device), mask.long()], dim=1)
    # Position k-1+t predicts caption token t; the head (49k-word vocabulary) runs only on those T+1 positions.
    logits = lm.model(inputs_embeds=x, attention_mask=attn, logits_to_keep=ids.shape[1] + 1).logits  # (B, T+1, V)
    # One log-softmax over the vocabulary serves the cross-entropy and the unlikelihood term (cross_entropy is
    # log_softmax + nll_loss: the same numbers).
    logp = logits[:, :-1].float().log_softmax(-1)  # (B, T, V)
    flat = logp.reshape(-1, logp.shape[-1])
    if weights is None:
        loss = F.nll_loss(flat, ids.masked_fill(~mask, -100).reshape(-1), ignore_index=-100)
    else:
        ce = F.nll_loss(flat, ids.reshape(-1), reduction="none")
        w = weights.to(ce.dtype).reshape(-1) * mask.reshape(-1)
        loss = (ce * w).sum() / w.sum().clamp_min(1e-12)
    if unlikely is None or not unlikely_weight:
        return loss
    picked = logp.gather(2, unlikely.clamp_min(0)[:, None, :].expand(-1, logp.shape[1], -1))
    # log(1 - p) from log p, kept finite where p rounds to 1
    ul = -torch.log1p(-picked.exp().clamp(max=1 - 1e-6)) * (unlikely >= 0)[:, None, :]
    m = mask.to(ul.dtype)
    return loss + unlikely_weight * (ul.sum(-1) * m).sum() / m.sum().clamp_min(1.0)


# --- the loop --------------------------------------------------------------------------------

def _lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(translator, lm, z, ids, mask, batch_size: int, device) -> float:
    translator.eval()
    total, n = 0.0, 0
    for i in range(0, len(z), batch_size):
        sl = slice(i, i + batch_size)
        loss = caption_loss(translator, lm, z[sl].to(device), ids[sl].to(device), mask[sl].to(device))
        total += float(loss) * (sl.stop - i if sl.stop <= len(z) else len(z) - i)
        n += min(batch_size, len(z) - i)
    translator.train()
    return total / max(n, 1)


def _save_state(path: Path, translator, opt, step: int, best: float, history: list, fingerprint: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"translator": translator.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "best": best, "history": json.dumps(history), "fingerprint": fingerprint}, tmp)
    tmp.replace(path)  # atomic: a kill mid-save keeps the previous state


def training_fingerprint(classifier, lm, cfg: "TrainConfig", features: Sequence[torch.Tensor | None],
                 captions: Sequence[Sequence[str] | None], weights: torch.Tensor | None = None,
                 unlikely: torch.Tensor | None = None) -> str:
    """What a training run is: models, settings that change the result, data. A saved state resumes only
    into the same run."""
    config = {k: v for k, v in asdict(cfg).items() if k not in ("save_every", "device", "max_steps")}
    if weights is None:  # unweighted runs keep the fingerprints they had before emphasis existed
        config.pop("emphasis_weight")
    if not config["dropout"]:  # and runs without dropout the ones they had before it existed
        config.pop("dropout")
    if unlikely is None or not config["unlikely_weight"]:  # and plain-likelihood runs theirs
        config.pop("unlikely_weight")
        unlikely = None
    h = hashlib.sha256(json.dumps({"classifier": classifier.identity, "lm": lm.identity, "config": config},
                                  sort_keys=True).encode())
    if weights is not None:
        h.update(weights.float().contiguous().numpy().tobytes())
    if unlikely is not None:
        h.update(unlikely.contiguous().numpy().tobytes())
    for f in features:
        if f is not None:
            h.update(f.detach().float().cpu().contiguous().numpy().tobytes())
    for caps in captions:
        h.update("\n".join(caps or []).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def train_translator(classifier, lm, train_features: torch.Tensor, train_captions: Sequence[str], out_dir: str | Path,
                     val_features: torch.Tensor | None = None, val_captions: Sequence[str] | None = None,
                     cfg: TrainConfig | None = None, data_info: dict | None = None,
                     progress: Callable[[dict], None] | None = None, show_progress: bool = True,
                     train_emphasis: Sequence[tuple[int, int] | None] | None = None,
                     train_unlikely: Sequence[Sequence[str]] | None = None) -> Translator:
    """Train a translator for (classifier, lm) on precomputed features; resumes from `out_dir/train_state.pt`.
    `train_emphasis`: per training caption, a character span whose tokens weigh `cfg.emphasis_weight` in
    the training loss (emphasis_weights); `train_unlikely`: per training caption, words its image must not make
    the LM say, penalised with `cfg.unlikely_weight` (unlikely_tokens). Validation loss stays the plain mean,
    comparable across runs."""
    from tqdm.auto import tqdm

    cfg = cfg or TrainConfig()
    out_dir = Path(out_dir)
    if train_features.dim() not in (2, 3):
        raise ValueError(f"train_features must be (N, D) or (N, views, D), got shape {tuple(train_features.shape)}")
    if len(train_features) != len(train_captions):
        raise ValueError(f"train_features has {len(train_features)} rows but train_captions has {len(train_captions)}")
    if len(train_features) == 0:
        raise ValueError("no training pairs: train_features is empty")
    if train_features.shape[-1] != classifier.feature_dim:
        raise ValueError(f"train_features has {train_features.shape[-1]} columns; classifier "
                         f"{classifier.name!r} gives {classifier.feature_dim}-d features")
    compute = resolve(cfg.device, None)
    dev = compute.device
    if cfg.autocast_bf16 is None:  # settled before the fingerprint, so a CPU run's fingerprint is what it always was
        cfg = replace(cfg, autocast_bf16=dev.type == "cuda")
    torch.manual_seed(cfg.seed)
    lm.model.to(dev, torch.float32)  # LM weights stay float32; bf16 autocast (optional) covers the matmuls
    tcfg = TranslatorConfig(feature_dim=classifier.feature_dim, hidden_size=lm.hidden_size,
                            prefix_length=cfg.prefix_length, mapper=cfg.mapper, mlp_hidden=cfg.mlp_hidden,
                            normalize_features=cfg.normalize_features, dropout=cfg.dropout,
                            classifier_identity=classifier.identity,
                            classifier_feature_identity=classifier.feature_identity,
                            classifier_name=classifier.name, lm_identity=lm.identity, lm_name=lm.name)
    translator = Translator(tcfg)
    if cfg.init_from:
        start = Translator.from_pretrained(cfg.init_from, classifier, lm)  # refuses another classifier's or LM's
        shape = {k: getattr(start.config, k) for k in ("prefix_length", "mapper", "mlp_hidden", "num_layers",
                                                         "num_heads", "normalize_features")}
        if shape != {k: getattr(tcfg, k) for k in shape}:
            raise ValueError(f"init_from {cfg.init_from} is a translator of another shape ({shape}); the training "
                             "settings ask for " + str({k: getattr(tcfg, k) for k in shape}))
        translator.load_state_dict(start.state_dict())
        # Provenance: the start's own training (its history, data, settings, its own start) stays on record.
        data_info = {**(data_info or {}), "started_from": start.config.training}
    else:
        translator.set_feature_stats(train_features.reshape(-1, train_features.shape[-1]))
    translator.to(dev).train()
    ids, mask = tokenize_captions(lm, train_captions, cfg.max_caption_tokens)
    weights = None
    if train_emphasis is not None and cfg.emphasis_weight != 1.0:
        weights = emphasis_weights(lm, train_captions, train_emphasis, cfg.emphasis_weight, cfg.max_caption_tokens)
    unlikely = None
    if train_unlikely is not None and cfg.unlikely_weight:
        unlikely = unlikely_tokens(lm, train_captions, train_unlikely, cfg.max_caption_tokens)
    has_val = val_features is not None and val_captions is not None and len(val_captions) > 0
    if has_val:
        v_ids, v_mask = tokenize_captions(lm, val_captions, cfg.max_caption_tokens)
    opt = torch.optim.AdamW(translator.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_features) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "train_state.pt"
    step, best, history = 0, float("inf"), []
    fingerprint = training_fingerprint(classifier, lm, cfg, (train_features, val_features if has_val else None),
                               (list(train_captions), list(val_captions) if has_val else None), weights,
                               unlikely)
    if state_path.exists():
        # Our own file, but still read weights-only: it holds tensors and plain numbers.
        try:
            st = torch.load(state_path, map_location=dev, weights_only=True)
            if not isinstance(st, dict):
                raise TypeError(f"it holds a {type(st).__name__}, not a dict")
        except Exception as exc:  # a refused pickle (UnpicklingError), a truncated file, a foreign object
            raise TrainStateError(f"{state_path} cannot be resumed: it is not a training state this code wrote "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                                  "Delete it to train from scratch, or train into a new folder.") from exc
        if st.get("fingerprint") != fingerprint:
            raise TrainStateError(f"{state_path} is the saved state of a different training run (other classifier, "
                             "language model, data or settings), so it cannot be resumed. Train into a new "
                             "folder, or delete that file to start this run from scratch.")
        translator.load_state_dict(st["translator"])
        opt.load_state_dict(st["optimizer"])
        step, best, history = int(st["step"]), float(st["best"]), json.loads(st["history"])
    gen = torch.Generator().manual_seed(cfg.seed)
    # The cached features and tokenized captions live on the device for the whole run: a step then
    # only indexes them (on a GPU, a host-to-device copy per step would leave it waiting).
    train_features, ids, mask = train_features.to(dev), ids.to(dev), mask.to(dev)
    weights = weights.to(dev) if weights is not None else None
    unlikely = unlikely.to(dev) if unlikely is not None else None
    bar = tqdm(total=total, initial=step, desc="train translator", unit="step", disable=not show_progress)
    t0, start_step = time.time(), step
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.autocast_bf16)
    while step < total:
        epoch = step // steps_per_epoch
        # The permutation depends only on (seed, epoch), so a resumed run sees the same batches.
        perm = torch.randperm(len(train_features), generator=gen.manual_seed(cfg.seed * 1000 + epoch))
        for b in range(step % steps_per_epoch, steps_per_epoch):
            if step >= total:
                break
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size].to(dev)
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total, cfg)
            z = train_features[idx]
            if z.dim() == 3:  # one view per pair, drawn from (seed, step): a resumed run draws the same ones
                pick = torch.randint(z.shape[1], (len(idx),), generator=torch.Generator().manual_seed(
                    cfg.seed * 1_000_003 + step)).to(dev)
                z = z[torch.arange(len(idx), device=dev), pick]
            with autocast:
                loss = caption_loss(translator, lm, z, ids[idx], mask[idx], None if weights is None else weights[idx],
                                    None if unlikely is None else unlikely[idx], cfg.unlikely_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(translator.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch + 1)
            if step % cfg.save_every == 0 and step % steps_per_epoch:
                _save_state(state_path, translator, opt, step, best, history, fingerprint)
            if progress:
                progress({"step": step, "total": total, "loss": loss.item(), "epoch": epoch + 1})
        end_of_epoch = step % steps_per_epoch == 0 or step >= total
        if end_of_epoch:
            val = (evaluate(translator, lm, val_features, v_ids, v_mask, cfg.batch_size * 2, dev) if has_val
                   else float("nan"))
            train_loss = loss.item()
            history.append({"epoch": epoch + 1, "step": step, "train_loss": round(train_loss, 4),
                            "val_loss": round(val, 4) if has_val else None})
            bar.write(f"epoch {epoch + 1}: train loss {train_loss:.3f}" + (f", val loss {val:.3f}" if has_val else ""))
            score = val if has_val else train_loss
            translator.config.training = {
                **(data_info or {}), "settings": asdict(cfg), "history": history, "steps": step,
                "samples_per_s": round((step - start_step) * cfg.batch_size / max(time.time() - t0, 1e-9), 2),
                "best_val_loss": round(min(best, score), 4) if has_val else None}
            if score < best or not has_val:
                best = min(best, score)
                translator.save_pretrained(out_dir / "best")
            _save_state(state_path, translator, opt, step, best, history, fingerprint)
    bar.close()
    best_model = Translator.from_pretrained(out_dir / "best", classifier, lm)
    return best_model
