"""`texplain train`: train a translator for a classifier and an LM (resumable from OUT/train_state.pt).

With no captions of your own: `--captions general` trains on the open caption world (built on first use; the
general recipe), `general+csv:FILE` mixes in your captions, and `--fast` builds a translator in minutes by
aligning your classifier's features onto the shipped general translator's (no captions at all).
Features can be computed where the images are and the translator trained where the GPU is:
`--save-pack FILE` writes the features and captions to one file (no training), and `--pack FILE`
trains from it, with no images and no classifier weights; only the LM comes along (any copy of the
same weights, e.g. the GGUF: the pack checks them by content)."""
from __future__ import annotations

import argparse
from pathlib import Path

from core.cli.options import add_classifier_options, add_lm_option, classifier_from, default
from core.engine.config import TrainConfig


def add_parser(subparsers) -> None:
    t = subparsers.add_parser("train", help="train a translator for a classifier and an LM", description=__doc__)
    add_classifier_options(t, required=False)
    t.add_argument("--captions", default="demo",
                   help="'general' (the open caption world: objects and scenes of every kind), 'general+csv:FILE' "
                        "(that and your captions), 'csv:FILE', 'coco:JSON:IMAGES_ROOT', 'hf:FOLDER' (Hugging Face "
                        "Parquet shards: an image and a caption column), 'wds:FOLDER' (WebDataset tar shards: "
                        "KEY.jpg + KEY.txt or KEY.json), or 'demo' (the Waterbirds demo's; the default)")
    t.add_argument("--fast", action="store_true",
                   help="no caption training: align the classifier's features onto the shipped general "
                        "translator's (a ridge map fitted on the demo photos and the general caption world's "
                        "training images; minutes on a CPU)")
    add_lm_option(t)
    t.add_argument("--views", default="identity",
                   help="feature views per training image: 'identity', 'all' (mirror and two crops too, the "
                        "demo translators' recipe) or a comma list of identity,flip,crop-1,crop-2")
    t.add_argument("--save-pack", default=None, metavar="FILE",
                   help="write the features and captions to FILE (a training pack) and stop")
    t.add_argument("--pack", default=None, metavar="FILE", help="train from a training pack instead of images")
    t.add_argument("--out", default=None, help="output folder; the best checkpoint goes to OUT/best")
    def knob(flag: str, field: str, kind, text: str, **kw) -> None:
        t.add_argument(flag, type=kind, default=default(TrainConfig, field), help=text, **kw)

    knob("--epochs", "epochs", int, "passes over the training captions (default %(default)s)")
    knob("--batch-size", "batch_size", int, "caption pairs per step (default %(default)s)")
    knob("--lr", "lr", float, "peak learning rate (default %(default)s)")
    knob("--warmup-steps", "warmup_steps", int, "linear warm-up steps, then cosine to zero (default %(default)s)")
    knob("--max-steps", "max_steps", int, "stop after this many steps (default: all epochs)")
    knob("--save-every", "save_every", int, "steps between resumable states (default %(default)s)")
    knob("--prefix-length", "prefix_length", int, "soft-prefix vectors per image (default %(default)s)")
    t.add_argument("--mapper", choices=["mlp", "transformer"], default=default(TrainConfig, "mapper"),
                   help="the translator's network (default %(default)s)")
    t.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=default(TrainConfig, "autocast_bf16"),
                   help="bf16 autocast (default: on for CUDA, off on CPU; faster on GPUs and on CPUs with "
                        "bf16 units, AVX512-BF16 or AMX: `python -m bench.bench_train` measures it)")
    knob("--dropout", "dropout", float, "dropout in the mapper while training, in [0, 1) (default %(default)s); "
         "templated captions are easy to memorise")
    knob("--seed", "seed", int, "seed of the initialisation, batches and held-out split (default %(default)s)")
    knob("--device", "device", str, "auto (CUDA when present), cpu or cuda[:N] (default %(default)s)")
    t.add_argument("--init-from", default=None, metavar="FOLDER",
                   help="start from this translator's weights (same classifier, LM and shape), e.g. a second, "
                        "low learning-rate stage")
    t.set_defaults(func=run)


def captions(spec: str):
    """'general' | 'general+SPEC' | 'demo' | 'csv:FILE' | 'coco:CAPTIONS_JSON:IMAGES_ROOT' | 'hf:FOLDER' |
    'wds:FOLDER' -> DataFrame(path, caption[, split])."""
    import pandas as pd

    from core import paths
    from core.data import read_caption_csv, read_coco_captions

    if spec == "general" or spec.startswith("general+"):
        from core.demo.worlds.open_world import build_open_world, read_open_world

        world = read_open_world(build_open_world())
        if spec == "general":
            return world
        own = _with_split(captions(spec.removeprefix("general+")), seed=0)
        return pd.concat([world, own[["path", "caption", "split"]]], ignore_index=True)
    if spec == "demo":
        return read_caption_csv(paths.DEMO_DATA / "captions.csv")
    kind, _, rest = spec.partition(":")
    if kind == "csv":
        return read_caption_csv(Path(rest))
    if kind == "coco":
        js, _, root = rest.partition(":")
        return read_coco_captions(Path(js), Path(root))
    if kind == "hf":
        from core.data import read_parquet_captions

        return read_parquet_captions(Path(rest))
    if kind == "wds":
        from core.data import read_webdataset_captions

        return read_webdataset_captions(Path(rest))
    raise ValueError(f"--captions must be 'general', 'general+SPEC', 'demo', 'csv:FILE', 'coco:JSON:IMAGES_ROOT', "
                     f"'hf:FOLDER' (Parquet shards) or 'wds:FOLDER' (WebDataset tar shards), got {spec!r}")


def _views(spec: str) -> tuple[str, ...]:
    from core.engine.train import VIEWS

    views = VIEWS if spec == "all" else tuple(v.strip() for v in spec.split(",") if v.strip())
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise ValueError(f"--views must be 'all' or a comma list of {', '.join(VIEWS)}; got {spec!r}")
    return views


def _with_split(pairs, seed: int):
    """The captions with a split column: their own, else a fixed 10% of images held out (by path, so all
    captions of an image stay together)."""
    import torch

    if "split" in pairs.columns and (pairs["split"] == "val").any():
        return pairs[pairs["split"].isin(["train", "val"])]
    paths_ = sorted(pairs["path"].unique())
    g = torch.Generator().manual_seed(seed)
    held = {paths_[i] for i in torch.randperm(len(paths_), generator=g)[: max(1, len(paths_) // 10)].tolist()}
    return pairs.assign(split=["val" if p in held else "train" for p in pairs["path"]])


def _general_recipe(args) -> None:
    """On the general captions, the general translator's recipe for every option left at its default."""
    if not args.captions.startswith("general"):
        return
    from core.demo.imagenet9 import GENERAL_RECIPE

    changed = []
    for key, value in GENERAL_RECIPE.items():
        if getattr(args, key) == default(TrainConfig, key) and value != getattr(args, key):
            setattr(args, key, value)
            changed.append(f"--{key.replace('_', '-')} {value}")
    if changed:
        print(f"the general recipe: {', '.join(changed)} (give an option to override it)")


def _fast(args) -> int:
    from core.demo.auto_translator import build_fast_translator
    from core.demo.imagenet9 import GENERAL_TRANSLATOR
    from core.models import load_language_model
    from core.models.translator import Translator

    if not args.classifier:
        raise ValueError("--fast aligns a --classifier onto the general translator: name the classifier")
    if args.pack or args.save_pack or args.captions != "demo":
        raise ValueError("--fast uses no captions and no pack: leave out --captions, --pack and --save-pack")
    classifier, lm = classifier_from(args), load_language_model(args.lm)
    out = build_fast_translator(classifier, lm, args.out, GENERAL_TRANSLATOR)
    info = Translator.from_pretrained(out, classifier, lm).config.training
    print(f"aligned translator: {out} (the map explains {info['r2_held_out']:.0%} of the general classifier's feature "
          f"variance on held-out photos; {info['seconds_total']:.0f} s)")
    return 0


def run(args) -> int:
    from core.data import load_rgb
    from core.engine.train import (caption_pairs_compact, load_training_pack, save_training_pack, train_translator,
                                   train_translator_from_pack)
    from core.models import load_language_model

    from core.device import resolve

    resolve(args.device)  # a GPU asked for where there is none: one line now, not after the captions are read
    if args.fast:
        return _fast(args)
    if args.pack and (args.save_pack or args.classifier):
        raise ValueError("--pack FILE trains from the pack alone: leave out --classifier and --save-pack")
    if not args.pack and not args.classifier:
        raise ValueError("name a --classifier (with --captions), or train from a --pack FILE")
    if not args.save_pack and not args.out:
        raise ValueError("name an --out folder for the translator")
    if args.save_every < 1:
        raise ValueError(f"--save-every must be >= 1, got {args.save_every}")
    if args.warmup_steps < 0:
        raise ValueError(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    if not 0 <= args.dropout < 1:
        raise ValueError(f"--dropout must be in [0, 1), got {args.dropout}")
    _general_recipe(args)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                      max_steps=args.max_steps, save_every=args.save_every,
                      prefix_length=args.prefix_length, mapper=args.mapper, seed=args.seed, device=args.device,
                      autocast_bf16=args.bf16, init_from=args.init_from, dropout=args.dropout)
    if args.pack:
        pack = load_training_pack(args.pack)
        lm = load_language_model(args.lm)
        print(f"pack {args.pack}: {len(pack.train_captions)} training and {len(pack.val_captions)} validation "
              f"captions; classifier {pack.source.name} ({pack.source.feature_dim}-d), LM {lm.name}")
        tr = train_translator_from_pack(pack, lm, args.out, cfg)
    else:
        classifier = classifier_from(args)
        lm = load_language_model(args.lm)
        views = _views(args.views)
        pairs = _with_split(captions(args.captions), args.seed)
        compact = caption_pairs_compact(classifier, pairs, load_rgb, views, name=args.captions)
        info = {"captions": args.captions, "train_pairs": len(compact[2]), "val_pairs": len(compact[4]),
                "feature_views": ", ".join(views)}
        print(f"{info['train_pairs']} training and {info['val_pairs']} validation captions; classifier "
              f"{classifier.name} ({classifier.feature_dim}-d, {len(views)} view(s)), "
              f"LM {lm.name} ({lm.hidden_size}-d)")
        if args.save_pack:
            print(f"training pack: {save_training_pack(args.save_pack, classifier, lm, compact, info)}")
            return 0
        images, index, train_caps, val_z, val_caps = compact
        feats = images[index] if images.shape[1] > 1 else images[index, 0]
        tr = train_translator(classifier, lm, feats, train_caps, args.out, val_z, val_caps, cfg, data_info=info)
    print(f"best translator: {Path(args.out) / 'best'} (val loss {tr.config.training.get('best_val_loss')}, "
          f"{tr.config.training.get('samples_per_s')} samples/s)")
    return 0
