"""`python -m core train`: train a translator for a classifier and an LM (resumable from OUT/train_state.pt)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    t = subparsers.add_parser("train", help="train a translator for a classifier and an LM", description=__doc__)
    t.add_argument("--classifier", required=True, help="'efficientnet-lite0', a checkpoint folder, or torchvision:ARCH")
    t.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="weights (.pt/.pth state dict or .safetensors) for a --classifier torchvision:ARCH")
    t.add_argument("--captions", default="demo", help="'demo', 'csv:FILE' or 'coco:JSON:IMAGES_ROOT'")
    t.add_argument("--lm", default="smollm2-135m-instruct", help="LM: default, a local folder, a .gguf file or a hub id")
    t.add_argument("--out", required=True, help="output folder; the best checkpoint goes to OUT/best")
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--batch-size", type=int, default=16)
    # The recipe the shipped demo translators were trained with (core.demo_models; TrainConfig's defaults).
    t.add_argument("--lr", type=float, default=8e-4)
    t.add_argument("--warmup-steps", type=int, default=16, help="linear warm-up steps, then cosine to zero")
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--prefix-length", type=int, default=10)
    t.add_argument("--mapper", choices=["mlp", "transformer"], default="mlp")
    t.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on for CUDA, off on CPU; fast on GPUs and AMX CPUs)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
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


def run(args) -> int:
    import torch

    from core.data import load_rgb
    from core.models import load_language_model
    from core.train import TrainConfig, compute_features, train_translator

    classifier = load_classifier_arg(args)
    lm = load_language_model(args.lm)
    pairs = captions(args.captions)
    if "split" in pairs.columns and (pairs["split"] == "val").any():
        train_df, val_df = pairs[pairs["split"] == "train"], pairs[pairs["split"] == "val"]
    else:  # hold out a fixed 10% of images (by path, so all captions of an image stay together)
        paths_ = sorted(pairs["path"].unique())
        g = torch.Generator().manual_seed(args.seed)
        held = {paths_[i] for i in torch.randperm(len(paths_), generator=g)[: max(1, len(paths_) // 10)].tolist()}
        val_df, train_df = pairs[pairs["path"].isin(held)], pairs[~pairs["path"].isin(held)]
    print(f"{len(train_df)} training and {len(val_df)} validation captions; classifier {classifier.name} "
          f"({classifier.feature_dim}-d), LM {lm.name} ({lm.hidden_size}-d)")
    uniq = sorted(set(train_df["path"]) | set(val_df["path"]))
    feats = compute_features(classifier, uniq, load_rgb)
    row = {p: i for i, p in enumerate(uniq)}
    if args.warmup_steps < 0:
        raise ValueError(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                      max_steps=args.max_steps,
                      prefix_length=args.prefix_length, mapper=args.mapper, seed=args.seed, device=args.device,
                      autocast_bf16=args.bf16)
    tr = train_translator(classifier, lm, feats[[row[p] for p in train_df["path"]]], list(train_df["caption"]),
                          args.out, feats[[row[p] for p in val_df["path"]]], list(val_df["caption"]), cfg,
                          data_info={"captions": args.captions, "train_pairs": len(train_df), "val_pairs": len(val_df)})
    print(f"best translator: {Path(args.out) / 'best'} (val loss {tr.config.training.get('best_val_loss')}, "
          f"{tr.config.training.get('samples_per_s')} samples/s)")
    return 0
