"""Fine-tuning a classifier on a dataset: ERM or group-balanced, the last blocks of EfficientNet-Lite0.

The early blocks stay frozen and their outputs are computed once (with a horizontal flip as the
augmentation), so an epoch costs only the trainable tail: a few seconds per epoch on two CPU
cores instead of minutes. Learned state: the adapter's weights change in place.

    clf, history = finetune_classifier(open_dataset("my-data"), "classifiers/mine", FinetuneConfig())
    texplain finetune --dataset my-data --out classifiers/mine [--sampling group_balanced]

`finetune_classifier` saves in `load_classifier`'s format and keeps `finetune_state.pt` after every
epoch, so a run stopped half-way resumes at its last finished epoch when started again.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from core.engine.config import FinetuneConfig
from core.models.classifier import efficientnet_lite_module


@torch.inference_mode()
def trunk_features(adapter, images: list, start: int, flip: bool = False, batch: int = 32,
                   desc: str = "frozen blocks") -> torch.Tensor:
    """Outputs of the frozen stem and blocks [0, start) for PIL images: (N, C, H, W)."""
    m = efficientnet_lite_module(adapter).eval()
    out = []
    for i in tqdm(range(0, len(images), batch), desc=desc, unit="batch", leave=False):
        x = torch.stack([adapter.preprocess(im) for im in images[i:i + batch]])
        if flip:
            x = x.flip(-1)
        x = m._swish(m._bn0(m._conv_stem(x)))
        for idx in range(start):
            x = m._blocks[idx](x)
        out.append(x)
    return torch.cat(out)


def tail_logits(adapter, x: torch.Tensor, start: int) -> torch.Tensor:
    """The rest of EfficientNet-Lite0's forward, from block `start` to the logits."""
    m = efficientnet_lite_module(adapter)
    n = len(m._blocks)
    for idx in range(start, n):
        rate = m._global_params.drop_connect_rate
        x = m._blocks[idx](x, drop_connect_rate=rate * idx / n if rate else None)
    x = m._swish(m._bn1(m._conv_head(x)))
    return m._fc(m._dropout(m._avg_pooling(x).flatten(1)))


@torch.no_grad()
def group_accuracies(adapter, trunk: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, start: int) -> dict:
    m = efficientnet_lite_module(adapter).eval()
    preds = torch.cat([tail_logits(adapter, trunk[i:i + 128], start).argmax(-1) for i in range(0, len(trunk), 128)])
    m.train()
    correct = (preds == labels).float()
    per_group = {int(g): float(correct[groups == g].mean()) for g in groups.unique()}
    return {"average": float(correct.mean()), "worst_group": min(per_group.values()), "per_group": per_group}


def trunk_views(adapter, images: list, start: int, flips: bool) -> list[torch.Tensor]:
    """Frozen-trunk outputs of the images, and of their mirror images when `flips`."""
    views = [trunk_features(adapter, images, start, desc="cache trunk")]
    if flips:
        views.append(trunk_features(adapter, images, start, flip=True, desc="cache trunk (flipped)"))
    return views


STATE_FILE = "finetune_state.pt"


def _save_state(path: Path, module, opt, sched, gen: torch.Generator, epoch: int, history: list, best: float,
                best_state: dict | None, fingerprint: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"module": module.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "epoch": epoch,
                "history": json.dumps(history), "best": best, "best_state": best_state,
                "fingerprint": fingerprint}, tmp)
    os.replace(tmp, path)


def finetune(adapter, train_images: list, train_labels, train_groups, cfg: FinetuneConfig,
             val_images: list | None = None, val_labels=None, val_groups=None, show_progress: bool = True,
             train_views: list[torch.Tensor] | None = None, val_trunk: torch.Tensor | None = None,
             state_path: str | Path | None = None, fingerprint: str = "") -> dict:
    """Train the adapter's last blocks and head; returns the history (per-epoch val accuracies).

    `train_views` / `val_trunk` reuse frozen-trunk outputs computed once for several classifiers
    that share the same frozen blocks (e.g. ERM and group-balanced runs from the same weights).
    With `state_path`, the state after each epoch is saved there and a saved state with the same
    `fingerprint` (settings and data) is resumed; one with another fingerprint is an error.
    """
    torch.manual_seed(cfg.seed)
    m = efficientnet_lite_module(adapter)
    start = cfg.train_from_block
    if not 0 <= start <= len(m._blocks):
        raise ValueError(f"train_from_block must be 0..{len(m._blocks)} ({adapter.arch} has {len(m._blocks)} blocks), "
                         f"got {start}")
    y = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    g = torch.as_tensor(np.asarray(train_groups), dtype=torch.long)
    feats = train_views if train_views is not None else trunk_views(adapter, train_images, start, cfg.flips)
    X = torch.cat(feats)  # (V*N, C, H, W): every view of every image
    Y, G = y.repeat(len(feats)), g.repeat(len(feats))
    has_val = val_trunk is not None or (val_images is not None and len(val_images) > 0)
    if has_val:
        Xv = val_trunk if val_trunk is not None else trunk_features(adapter, val_images, start, desc="cache val")
        yv = torch.as_tensor(np.asarray(val_labels), dtype=torch.long)
        gv = torch.as_tensor(np.asarray(val_groups), dtype=torch.long)
    for p in m.parameters():
        p.requires_grad_(False)
    trainable = [*m._blocks[start:], m._conv_head, m._bn1, m._fc]
    params = [p for mod in trainable for p in mod.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = int(np.ceil(len(X) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.1)
    if cfg.sampling == "group_balanced":
        counts = torch.bincount(G, minlength=int(G.max()) + 1).float()
        weights = (1.0 / counts.clamp_min(1))[G]
    gen = torch.Generator().manual_seed(cfg.seed)
    history, best, best_state, first_epoch = [], -1.0, None, 0
    state_path = Path(state_path) if state_path is not None else None
    if state_path is not None and state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        if st.get("fingerprint") != fingerprint:
            raise ValueError(f"{state_path} holds a fine-tuning state for other settings or data; delete it (or "
                             "choose another output folder) to start over")
        m.load_state_dict(st["module"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        history, best, best_state, first_epoch = json.loads(st["history"]), st["best"], st["best_state"], st["epoch"]
    m.train()
    for trainable_mod in [m._conv_stem, m._bn0, *m._blocks[:start]]:
        trainable_mod.eval()  # frozen BatchNorm statistics
    for epoch in tqdm(range(first_epoch, cfg.epochs), desc=f"fine-tune ({cfg.sampling})", initial=first_epoch,
                      total=cfg.epochs, disable=not show_progress):
        if cfg.sampling == "group_balanced":
            order = torch.multinomial(weights, len(X), replacement=True, generator=gen)
        else:
            order = torch.randperm(len(X), generator=gen)
        total = 0.0
        for b in range(steps):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            loss = F.cross_entropy(tail_logits(adapter, X[idx], start), Y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        row = {"epoch": epoch + 1, "train_loss": round(total / steps, 4)}
        if has_val:
            acc = group_accuracies(adapter, Xv, yv, gv, start)
            row.update(val_average=round(acc["average"], 4), val_worst_group=round(acc["worst_group"], 4))
            if cfg.select == "worst_group" and acc["worst_group"] > best:
                best, best_state = acc["worst_group"], copy.deepcopy(m.state_dict())
        history.append(row)
        if state_path is not None:
            _save_state(state_path, m, opt, sched, gen, epoch + 1, history, best, best_state, fingerprint)
    if best_state is not None:
        m.load_state_dict(best_state)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    adapter.refresh_identity()
    return {"settings": asdict(cfg), "history": history}


def test_metrics(folder: str | Path, images: list, records: list, start: int) -> dict:
    """Average and per-group accuracy of the classifier saved at `folder` (as shipped: float16 weights) on
    the given images; written into its config.json under metrics.test."""
    from core.models.classifier import from_pretrained

    folder = Path(folder)
    shipped = from_pretrained(folder)
    x = trunk_features(shipped, images, start)
    groups = torch.tensor([r.group if r.group is not None else 0 for r in records])
    acc = group_accuracies(shipped, x, torch.tensor([r.label for r in records]), groups, start)
    cfg_json = json.loads((folder / "config.json").read_text())
    cfg_json["metrics"] = {"test": acc}
    (folder / "config.json").write_text(json.dumps(cfg_json, indent=2))
    return acc


def _fingerprint(cfg: FinetuneConfig, dataset, train: list, val: list) -> str:
    h = hashlib.sha256(json.dumps({"cfg": asdict(cfg), "classes": list(dataset.class_names)}, sort_keys=True).encode())
    for r in [*train, *val]:
        h.update(f"{r.image_id}\0{r.split}\0{r.label}\0{r.group}\n".encode())
    return h.hexdigest()[:16]


def finetune_classifier(dataset, out: str | Path, cfg: FinetuneConfig | None = None, name: str | None = None,
                        show_progress: bool = True):
    """Fine-tune the offline EfficientNet-Lite0 for `dataset`'s classes on its train split (val, when there is
    one, for `select="worst_group"` and the history), save it at `out` in `load_classifier`'s format with its
    test metrics, and return (classifier, history). Resumes from `out/finetune_state.pt`."""
    from core.errors import DatasetError
    from core.models.classifier import efficientnet_lite0

    cfg = cfg or FinetuneConfig()
    out = Path(out)
    if "train" not in dataset.splits:
        raise DatasetError(f"{dataset.name} has no train split to fine-tune on (its splits: {dataset.splits})")
    train = dataset.split("train").records
    val = dataset.split("val").records if "val" in dataset.splits else []
    classes = sorted({r.label for r in train})
    if len(classes) < 2:
        present = ", ".join(dataset.class_names[c] for c in classes) or "none"
        raise DatasetError(f"the train split of {dataset.name} holds {len(classes)} class ({present}) of "
                           f"{len(dataset.class_names)}; a classifier needs images of at least two classes to learn "
                           "to tell them apart (check the split column, or the class folders under train/)")
    if cfg.sampling == "group_balanced" and any(r.group is None for r in train):
        raise DatasetError(f"sampling='group_balanced' needs groups, but {dataset.name} has none; name the attribute "
                           "to group by (group_by=COLUMN, --group-by)")
    if cfg.select == "worst_group" and not val:
        raise DatasetError(f"select='worst_group' needs a val split; {dataset.name} has {dataset.splits}")
    t0 = time.time()
    load = lambda recs: [dataset.load_image(r) for r in tqdm(recs, desc="read images", leave=False,  # noqa: E731
                                                             disable=not show_progress)]
    torch.manual_seed(cfg.seed)  # the new head's initialisation
    clf = efficientnet_lite0(num_classes=len(dataset.class_names), class_names=dataset.class_names,
                             name=name or out.name)
    groups = lambda recs: [r.group if r.group is not None else 0 for r in recs]  # noqa: E731
    out.mkdir(parents=True, exist_ok=True)
    hist = finetune(clf, load(train), [r.label for r in train], groups(train), cfg, load(val) if val else None,
                    [r.label for r in val], groups(val), show_progress=show_progress,
                    state_path=out / STATE_FILE, fingerprint=_fingerprint(cfg, dataset, train, val))
    clf.save_pretrained(out, extra={"training": {**hist, "dataset": dataset.name,
                                                 "seconds": round(time.time() - t0, 1)}})
    if "test" in dataset.splits:
        test = dataset.split("test").records
        hist["test"] = test_metrics(out, load(test), test, cfg.train_from_block)
    return clf, hist
