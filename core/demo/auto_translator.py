"""A translator for any classifier, without captions: found among those at hand, or built by the fast path.

    path, how = translator_for(classifier, lm)          # a shipped or earlier one, else built in minutes
    texplain explain --dataset D --classifier timm:resnet50 --checkpoint w.pt --out runs/x   (no --translator)
    texplain train --classifier timm:resnet50 --checkpoint w.pt --fast --out runs/translators/resnet50

Found: a translator folder (checkpoints/translators/*, runs/translators/*, and their best/) trained for the
classifier's features (same feature identity: a refit head keeps them) and for this language model. Built: an
aligned translator (core.engine.align) onto the shipped general translator, its map fitted on the images the
set-up already has (the mini Waterbirds and the mini ImageNet-9: 3,770 photos of objects on scenes) and on the
general caption world's 3,211 training images (objects on scene photos and plain backgrounds, built from the
set-up's assets on first use in about 30 s), cached under runs/translators/.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from core import paths
from core.demo.imagenet9 import GENERAL_TRANSLATOR

SHIPPED_TRANSLATORS = paths.CHECKPOINTS / "translators"


def user_translators() -> Path:
    return paths.user_runs() / "translators"


def alignment_images() -> list[Path]:
    """The images the fast path fits its map on: every photo of the mini Waterbirds and the mini ImageNet-9, and
    the general caption world's training images (the world the base translator was trained on, with plain
    backgrounds that the photos lack; built on first use). Measured on EfficientNet-Lite2
    (checkpoints/translators/lite2/README.md): the scene of unseen objects' images is named 72.3% of the time
    fitted on both, 67.0% on the photos alone, 76.4% by a translator trained on Lite2's own features; on scene
    packages no translator saw, the world's images alone lose what the photos give (53% against 58% and 61%)."""
    from core.demo.worlds import general as gw
    from core.demo.worlds.imagenet9_mini import IMAGENET9_MINI

    photos = sorted(paths.DEMO_DATA.glob("images/**/*.jpg")) + sorted(IMAGENET9_MINI.glob("*/val/*/*.JPEG"))
    if len(photos) < 500:
        raise FileNotFoundError(f"the fast path fits its map on the demo worlds' images, and only {len(photos)} are "
                                f"here ({paths.DEMO_DATA}, {IMAGENET9_MINI}); run `make setup` (texplain setup)")
    world = gw.build_general_world()  # a no-op when current; else about 30 s on 2 cores, and it says so
    train = gw.read_general_world(world).query("split == 'train'")
    return photos + [Path(p) for p in dict.fromkeys(train["path"])]  # three captions per image: each image once


def _candidates() -> list[Path]:
    """Translator folders: shipped, then yours; each folder, then its best/ (what `texplain train` writes)."""
    return [cfg.parent for root in (SHIPPED_TRANSLATORS, user_translators()) if root.is_dir()
            for cfg in sorted(root.glob("*/config.json")) + sorted(root.glob("*/best/config.json"))]


def find_translator(classifier, lm) -> Path | None:
    """A translator folder made for this classifier's features and this LM (trained before aligned, shipped
    before yours), or None."""
    want = {getattr(classifier, "feature_identity", None), classifier.identity} - {None, ""}
    found = []
    for folder in _candidates():
        try:
            cfg = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            continue
        ids = {cfg.get("classifier_feature_identity"), cfg.get("classifier_identity")} - {None, ""}
        if ids & want and (cfg.get("input_dim") or cfg.get("feature_dim")) == classifier.feature_dim \
                and cfg.get("lm_identity") in ("", None, lm.identity):
            found.append((bool(cfg.get("input_dim")), folder))
    return min(found, key=lambda f: f[0])[1] if found else None


def translator_quality(folder: str | Path) -> str:
    """What is known of a translator's quality, in words: its scene accuracy on unseen objects' images
    (evaluation.json), or how well an aligned map fits; "" when nothing is recorded."""
    folder = Path(folder)
    try:
        cfg = json.loads((folder / "config.json").read_text())
        ev = json.loads((folder / "evaluation.json").read_text()) if (folder / "evaluation.json").exists() else {}
    except (OSError, ValueError):
        return ""
    if isinstance(ev.get("scene_accuracy"), (int, float)):
        return f"it names the scene for {ev['scene_accuracy']:.0%} of unseen objects' images"
    r2 = (cfg.get("training") or {}).get("r2_held_out")
    return f"aligned; its map explains {r2:.0%} of the base features' variance" if r2 is not None else ""


def fast_translator_folder(classifier) -> Path:
    """Where the fast path caches a classifier's aligned translator: runs/translators/<name>-<feature hash>."""
    key = hashlib.sha256((getattr(classifier, "feature_identity", "") or classifier.identity).encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in classifier.name)[:40]
    return user_translators() / f"{safe}-{key}"


def build_fast_translator(classifier, lm, out: str | Path | None = None, base: str | Path = GENERAL_TRANSLATOR,
                          show_progress: bool = True, images: list[Path] | None = None) -> Path:
    """An aligned translator for `classifier` onto `base` (the shipped general translator, for EfficientNet-Lite0's
    features), saved to `out` (default: fast_translator_folder); returns the folder. `images`: the photos to fit
    the map on (default: alignment_images())."""
    import torch

    from core.data import load_rgb
    from core.engine.align import align_translator
    from core.models import load_classifier
    from core.models.translator import Translator

    t0 = time.time()
    out = Path(out or fast_translator_folder(classifier))
    base_translator = Translator.from_pretrained(base, strict_identity=False)
    base_classifier = load_classifier(base_classifier_spec(base_translator))
    base_translator = Translator.from_pretrained(base, base_classifier, lm)  # refuses another LM
    aligned = align_translator(classifier, base_classifier, base_translator, images or alignment_images(), load_rgb,
                               base_folder=base, show_progress=show_progress)
    aligned.config.training["seconds_total"] = round(time.time() - t0, 1)
    aligned.save_pretrained(out, dtype=torch.float16)
    return out


def base_classifier_spec(translator) -> str:
    """The built-in classifier a base translator was trained for (the fast path can only align onto those)."""
    from core.models.classifier import builtin_for

    spec = builtin_for(translator.config.classifier_identity)
    if spec is None:
        raise ValueError(f"the fast path aligns onto a translator of a built-in classifier; {translator.source} was "
                         f"trained for {translator.config.classifier_name!r}")
    return spec


def translator_for(classifier, lm, auto: bool = True, show_progress: bool = True) -> tuple[Path, str]:
    """(translator folder, how it was got: "found" or "built"); without `auto`, a ValueError with the command
    that builds one."""
    found = find_translator(classifier, lm)
    if found is not None:
        return found, "found"
    out = fast_translator_folder(classifier)
    if not auto:
        raise ValueError(f"no translator here was made for {classifier.name} ({classifier.identity}); build one in "
                         f"minutes with `texplain train --classifier ... --fast --out {out}` (or leave out "
                         "--no-auto-translator), or train one on captions (`texplain train --captions general`)")
    return build_fast_translator(classifier, lm, out, show_progress=show_progress), "built"
