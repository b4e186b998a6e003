"""Fine-tuning a classifier on a dataset: ERM or group-balanced, the last blocks of EfficientNet-Lite0.

The early blocks stay frozen and their outputs are computed once (with a horizontal flip as the
augmentation), so an epoch costs only the trainable tail: a few seconds per epoch on two CPU
cores instead of minutes. Learned state: the adapter's weights change in place.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@dataclass
class FinetuneConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    # EfficientNet-Lite0 has 16 MBConv blocks; those before this index stay frozen. 16 trains the 1x1 head
    # convolution (320 -> 1280 channels, i.e. the features z) and the classifier: depthwise-convolution
    # backward passes are ~20x slower than forward on CPUs, so the MBConv blocks stay frozen by default.
    train_from_block: int = 16
    sampling: str = "erm"  # "erm": plain; "group_balanced": each group drawn equally often
    select: str = "last"  # "last" epoch, or "worst_group": best validation worst-group accuracy
    flips: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.sampling not in ("erm", "group_balanced"):
            raise ValueError(f"sampling must be 'erm' or 'group_balanced', got {self.sampling!r}")
        if self.select not in ("last", "worst_group"):
            raise ValueError(f"select must be 'last' or 'worst_group', got {self.select!r}")


def _lite(adapter):
    if adapter.backend != "efficientnet_lite":
        raise NotImplementedError("block-wise fine-tuning is implemented for EfficientNet-Lite0 adapters")
    return adapter.module


@torch.inference_mode()
def trunk_features(adapter, images: list, start: int, flip: bool = False, batch: int = 32,
                   desc: str = "frozen blocks") -> torch.Tensor:
    """Outputs of the frozen stem and blocks [0, start) for PIL images: (N, C, H, W)."""
    m = _lite(adapter).eval()
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
    m = _lite(adapter)
    n = len(m._blocks)
    for idx in range(start, n):
        rate = m._global_params.drop_connect_rate
        x = m._blocks[idx](x, drop_connect_rate=rate * idx / n if rate else None)
    x = m._swish(m._bn1(m._conv_head(x)))
    return m._fc(m._dropout(m._avg_pooling(x).flatten(1)))


@torch.no_grad()
def group_accuracies(adapter, trunk: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, start: int) -> dict:
    m = _lite(adapter).eval()
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


def finetune(adapter, train_images: list, train_labels, train_groups, cfg: FinetuneConfig,
             val_images: list | None = None, val_labels=None, val_groups=None, show_progress: bool = True,
             train_views: list[torch.Tensor] | None = None, val_trunk: torch.Tensor | None = None) -> dict:
    """Train the adapter's last blocks and head; returns the history (per-epoch val accuracies).

    `train_views` / `val_trunk` reuse frozen-trunk outputs computed once for several classifiers
    that share the same frozen blocks (e.g. ERM and group-balanced runs from the same weights).
    """
    torch.manual_seed(cfg.seed)
    m = _lite(adapter)
    start = cfg.train_from_block
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
    history, best, best_state = [], -1.0, None
    m.train()
    for trainable_mod in [m._conv_stem, m._bn0, *m._blocks[:start]]:
        trainable_mod.eval()  # frozen BatchNorm statistics
    for epoch in tqdm(range(cfg.epochs), desc=f"fine-tune ({cfg.sampling})", disable=not show_progress):
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
    if best_state is not None:
        m.load_state_dict(best_state)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    adapter.refresh_identity()
    return {"settings": asdict(cfg), "history": history}
