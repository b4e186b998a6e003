"""A classifier read at a coarser level: each superclass scores the best of its fine classes.

The unmodified ImageNet classifier on ImageNet-9 (the Backgrounds Challenge) is this: 1,000 ImageNet
classes read as nine superclasses, plus "none of the nine" for the 630 others, so that the argmax is
the superclass of the classifier's top-1, which is how Xiao et al. score it. The features are the base
classifier's own (same feature identity), so a translator trained for the base explains it unchanged.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from torch import nn

from core.models.classifier import ClassifierLoadError


class SuperclassClassifier(nn.Module):
    """`base` (a ClassifierAdapter) with logits reduced to superclasses: the max of each one's fine logits.

    `superclasses` maps each superclass name to its fine class indices (disjoint). With `other`, the fine
    classes in no superclass form one more class of that name, which keeps the argmax equal to the base's
    top-1 read at the coarse level; without it the argmax is over the superclasses only ("restricted").
    """

    def __init__(self, base, superclasses: dict[str, Sequence[int]], other: str | None = "none of these",
                 name: str | None = None):
        super().__init__()
        n_fine = len(base.class_names)
        group = torch.full((n_fine,), -1, dtype=torch.long)
        for k, (label, idx) in enumerate(superclasses.items()):
            idx = torch.as_tensor(list(idx), dtype=torch.long)
            if len(idx) == 0:
                raise ClassifierLoadError(f"superclass {label!r} has no fine classes")
            if idx.min() < 0 or idx.max() >= n_fine:
                raise ClassifierLoadError(f"superclass {label!r} names classes outside 0..{n_fine - 1}")
            if (group[idx] >= 0).any():
                raise ClassifierLoadError(f"superclass {label!r} shares fine classes with another superclass")
            group[idx] = k
        self.class_names = list(superclasses)
        if other is not None and (group < 0).any():
            group[group < 0] = len(self.class_names)
            self.class_names.append(other)
        self.base = base
        self.register_buffer("group_of", group, persistent=False)
        self.name = name or f"{base.name} as {len(superclasses)} superclasses"
        self.preprocessing, self.image_transform = base.preprocessing, base.image_transform
        self.source = base.source
        self._mapping_hash = hashlib.sha256(repr((self.class_names, group.tolist())).encode()).hexdigest()[:8]

    def _reduce(self, logits: torch.Tensor) -> torch.Tensor:
        keep = self.group_of >= 0  # fine classes that belong to no superclass and no "other" drop out
        index = self.group_of[keep].to(logits.device).expand(logits.shape[0], -1)
        out = logits.new_full((logits.shape[0], len(self.class_names)), float("-inf"))
        return out.scatter_reduce(1, index, logits[:, keep], reduce="amax")

    # --- the adapter contract (as ClassifierAdapter) ---------------------------------------------

    def preprocess(self, image):
        return self.base.preprocess(image)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, logits = self.base.features_and_logits(x)
        return z, self._reduce(logits)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.features(x)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self._reduce(self.base.head(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]

    @property
    def feature_dim(self) -> int:
        return self.base.feature_dim

    @property
    def identity(self) -> str:
        return f"{self.base.identity}>superclasses:{self._mapping_hash}"

    @property
    def feature_identity(self) -> str:
        return self.base.feature_identity

    def refresh_identity(self) -> str:
        self.base.refresh_identity()
        return self.identity
