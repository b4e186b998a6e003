"""Tiny ImageNet-9 variation runs, made end to end the way the shipped `imagenet9-<variation>` runs are.

`make_variation_runs(root, lm)` builds under `root` a small general caption world and a mini ImageNet-9
(from the tuxpaint stamps and scene photos), trains a general translator for a toy 1000-class classifier
in a few steps and explains every variation with it through core.demo_imagenet9.explain_variations:

    runs/imagenet9-original ... runs/imagenet9-mixed_rand   one complete run per variation (same photos)

The toy classifier is read as ImageNet-9 (core.data.imagenet9.in9_classifier), so its predictions are
mostly wrong and differ from variation to variation: numbers to check, not a story to tell.
"""
from __future__ import annotations

from pathlib import Path

from core import paths
from core.demo.worlds import general as gw
from core.demo.worlds import imagenet9_mini as mini


def have_stamps() -> bool:
    return gw.STAMPS_DIR.exists() and (paths.SCENE_PHOTOS / "Path.jpg").exists()


def make_variation_runs(root: Path, lm, per_class: int = 2, seed: int = 2) -> Path:
    """Every ImageNet-9 variation explained under root/runs (see the module docstring); returns that folder."""
    import torch

    from core.demo.imagenet9 import explain_variations, train_general_translator
    from core.engine.config import ExplainConfig, TrainConfig
    from core.models.classifier import Preprocessing, from_module

    root = Path(root)
    world = gw.build_general_world(root / "world", seed=1, n_images=40, workers=1, verbose=False)
    data = mini.build_imagenet9_mini(root / "in9", seed=1, n_per_class=per_class, workers=1, verbose=False)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 8),
                              torch.nn.ReLU(), torch.nn.Linear(8, 1000))
    base = from_module(net, [f"c{i}" for i in range(1000)], preprocessing=Preprocessing(resize=32, crop=32),
                       name="toy")
    cfg = TrainConfig(epochs=1, max_steps=3, batch_size=4, prefix_length=2, mlp_hidden=16, device="cpu")
    tr = train_general_translator(base, lm, root / "translator", world, cfg, root / "work",
                                  views=("identity", "flip"))
    explain_variations(mini.in9_classifier(base, restrict=True), tr, lm, data, root / "runs",
                       ExplainConfig(sentences_per_image=4, max_new_tokens=6, device="cpu"), per_class=per_class)
    return root / "runs"
