"""`python -m core train`: train a translator for a classifier and an LM (resumable from OUT/train_state.pt).

Features can be computed where the images are and the translator trained where the GPU is:
`--save-pack FILE` writes the features and captions to one file (no training), and `--pack FILE`
trains from it, with no images and no classifier weights; only the LM comes along (any copy of the
same weights, e.g. the GGUF: the pack checks them by content)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    t = subparsers.add_parser("train", help="train a translator for a classifier and an LM", description=__doc__)
    t.add_argument("--classifier", default=None, help="'efficientnet-lite0', a checkpoint folder, or torchvision:ARCH")
    t.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="weights (.pt/.pth state dict or .safetensors) for a --classifier torchvision:ARCH")
    t.add_argument("--captions", default="demo", help="'demo', 'csv:FILE' or 'coco:JSON:IMAGES_ROOT'")
    t.add_argument("--lm", default="smollm2-135m-instruct", help="LM: default, a local folder, a .gguf file or a hub id")
    t.add_argument("--views", default="identity",
                   help="feature views per training image: 'identity', 'all' (mirror and two crops too, the "
                        "demo translators' recipe) or a comma list of identity,flip,crop-1,crop-2")
    t.add_argument("--save-pack", default=None, metavar="FILE",
                   help="write the features and captions to FILE (a training pack) and stop")
    t.add_argument("--pack", default=None, metavar="FILE", help="train from a training pack instead of images")
    t.add_argument("--out", default=None, help="output folder; the best checkpoint goes to OUT/best")
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--batch-size", type=int, default=16)
    # The recipe the shipped demo translators were trained with (core.demo_models; TrainConfig's defaults).
    t.add_argument("--lr", type=float, default=8e-4)
    t.add_argument("--warmup-steps", type=int, default=16, help="linear warm-up steps, then cosine to zero")
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--save-every", type=int, default=25, help="steps between resumable states")
    t.add_argument("--prefix-length", type=int, default=10)
    t.add_argument("--mapper", choices=["mlp", "transformer"], default="mlp")
    t.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on for CUDA, off on CPU; faster on GPUs and on CPUs with "
                        "bf16 units, AVX512-BF16 or AMX: `python -m bench.bench_train` measures it)")
    t.add_argument("--dropout", type=float, default=0.0,
                   help="dropout in the mapper while training, in [0, 1) (default 0); templated captions are "
                        "easy to memorise")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--init-from", default=None, metavar="FOLDER",
                   help="start from this translator's weights (same classifier, LM and shape), e.g. a second, "
                        "low learning-rate stage")
    t.set_defaults(func=run)


def captions(spec: str):
    """'demo' | 'csv:FILE' | 'coco:CAPTIONS_JSON:IMAGES_ROOT' -> DataFrame(path, caption[, split])."""
    from core import paths
    from core.data import read_caption_csv, read_coco_captions

    if spec == "demo":
        return read_caption_csv(paths.DEMO_DATA / "captions.csv")
    kind, _, rest = spec.partition(":")
    if kind == "csv":
        return read_caption_csv(Path(rest))
    if kind == "coco":
        js, _, root = rest.partition(":")
        return read_coco_captions(Path(js), Path(root))
    raise ValueError(f"--captions must be 'demo', 'csv:FILE' or 'coco:JSON:IMAGES_ROOT', got {spec!r}")


def load_classifier_arg(args):
    """The classifier of --classifier, with the weights of --checkpoint for a torchvision architecture."""
    from core.models import load_classifier

    if args.checkpoint is None:
        return load_classifier(args.classifier)
    if not str(args.classifier).startswith("torchvision:"):
        raise ValueError(f"--checkpoint FILE goes with --classifier torchvision:ARCH (e.g. torchvision:resnet50); "
                         f"got --classifier {args.classifier}, which brings its own weights")
    return load_classifier(args.classifier, checkpoint=args.checkpoint)


def _views(spec: str) -> tuple[str, ...]:
    from core.train import VIEWS

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


def run(args) -> int:
    from core.data import load_rgb
    from core.models import load_language_model
    from core.train import (TrainConfig, caption_pairs_compact, load_training_pack, save_training_pack,
                            train_translator, train_translator_from_pack)

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
        classifier = load_classifier_arg(args)
        lm = load_language_model(args.lm)
        views = _views(args.views)
        pairs = _with_split(captions(args.captions), args.seed)
        compact = caption_pairs_compact(classifier, pairs, load_rgb, views, name=args.captions)
        info = {"captions": args.captions, "train_pairs": len(compact[2]), "val_pairs": len(compact[4]),
                "feature_views": ", ".join(views)}
        print(f"{info['train_pairs']} training and {info['val_pairs']} validation captions; classifier "
              f"{classifier.name} ({classifier.feature_dim}-d, {len(views)} view(s)), LM {lm.name} ({lm.hidden_size}-d)")
        if args.save_pack:
            print(f"training pack: {save_training_pack(args.save_pack, classifier, lm, compact, info)}")
            return 0
        images, index, train_caps, val_z, val_caps = compact
        feats = images[index] if images.shape[1] > 1 else images[index, 0]
        tr = train_translator(classifier, lm, feats, train_caps, args.out, val_z, val_caps, cfg, data_info=info)
    print(f"best translator: {Path(args.out) / 'best'} (val loss {tr.config.training.get('best_val_loss')}, "
          f"{tr.config.training.get('samples_per_s')} samples/s)")
    return 0
