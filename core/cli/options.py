"""Options several verbs share: how to read a dataset, which classifier, and the config dataclasses' defaults."""
from __future__ import annotations

import dataclasses

from core import paths


def default(config_class, field: str):
    """The default of a config dataclass's field (what `--help` shows and the option falls back to)."""
    return next(f for f in dataclasses.fields(config_class) if f.name == field).default


def add_dataset_options(p) -> None:
    """How to read a dataset's names and groups (every verb that opens one)."""
    p.add_argument("--group-by", metavar="COLUMN", default=None,
                   help="the attribute column groups are made from (default: the dataset's dataset.json, else "
                        "Waterbirds' place when present)")
    p.add_argument("--target", metavar="COLUMN", default=None,
                   help="for a CelebA-style attribute table: the attribute that is the class")
    p.add_argument("--attributes", metavar="CSV", default=None,
                   help="for an ImageFolder tree: a CSV of attributes per image (path + columns)")
    p.add_argument("--variation", default="mixed_rand",
                   help="for the Backgrounds Challenge (ImageNet-9): which variation folder (original, only_fg, "
                        "mixed_same, mixed_rand, ...; default mixed_rand)")


def open_dataset_from(args):
    """The dataset the options name; what its reader assumed or left out is printed as warnings (stderr)."""
    import sys

    from core.data import open_dataset

    dataset = open_dataset(args.dataset, variation=args.variation, group_by=args.group_by, target=args.target,
                           attributes=args.attributes)
    for note in dataset.notes:
        print(f"warning: {note}", file=sys.stderr, flush=True)
    return dataset


def add_classifier_options(p, required: bool = True) -> None:
    p.add_argument("--classifier", required=required, default=None,
                   help="efficientnet-lite0 (or -lite1, -lite2), a checkpoint folder, torchvision:ARCH or timm:ARCH "
                        "(with --checkpoint), hf:FOLDER (a Hugging Face image classifier) or a TorchScript file; "
                        "see docs/classifiers.md")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="weights (.pt/.pth state dict or .safetensors) for a --classifier torchvision:ARCH or "
                        "timm:ARCH")
    p.add_argument("--layer", default=None, metavar="NAME",
                   help="the layer whose output, pooled, are the features (default: the input of the classifier's "
                        "last linear layer, i.e. its penultimate features)")
    p.add_argument("--random-weights", action="store_true",
                   help="with --classifier torchvision:ARCH and no --checkpoint: use the architecture with random, "
                        "untrained weights (for a smoke test; its explanations mean nothing)")
    p.add_argument("--class-names", default=None, metavar="FILE",
                   help="one class name a line, in output order, for weights that name no classes (torchvision, "
                        "timm, TorchScript; default: ImageNet's for 1000 outputs, else class_0, class_1, ...)")


def classifier_from(args):
    from core.models.registry import load_classifier_spec

    return load_classifier_spec(args.classifier, args.checkpoint, layer=args.layer, class_names=args.class_names,
                                random_weights=args.random_weights)


def add_lm_option(p) -> None:
    p.add_argument("--lm", default=paths.DEFAULT_LM,
                   help=f"language model: {paths.DEFAULT_LM} (default), a local Hugging Face folder, a .gguf file "
                        "or a hub id (only where the hub is reachable)")
