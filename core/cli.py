"""`python -m core ...`: set up assets, train a translator, explain a dataset, write reports."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core import paths


def _captions(spec: str, classifier_split: str | None = None):
    """'demo' | 'csv:FILE' | 'coco:CAPTIONS_JSON:IMAGES_ROOT' -> DataFrame(path, caption[, split])."""
    from core.data import read_caption_csv, read_coco_captions

    if spec == "demo":
        return read_caption_csv(paths.DEMO_DATA / "captions.csv")
    kind, _, rest = spec.partition(":")
    if kind == "csv":
        return read_caption_csv(Path(rest))
    if kind == "coco":
        js, _, root = rest.partition(":")
        return read_coco_captions(Path(js), Path(root))
    raise SystemExit(f"--captions must be 'demo', 'csv:FILE' or 'coco:JSON:IMAGES_ROOT', got {spec!r}")


def cmd_train(args) -> int:
    import torch

    from core.data import load_rgb
    from core.models import load_classifier, load_language_model
    from core.train import TrainConfig, compute_features, train_translator

    classifier = load_classifier(args.classifier)
    lm = load_language_model(args.lm)
    pairs = _captions(args.captions)
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
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_steps=args.max_steps,
                      prefix_length=args.prefix_length, mapper=args.mapper, seed=args.seed, device=args.device,
                      autocast_bf16=args.bf16)
    tr = train_translator(classifier, lm, feats[[row[p] for p in train_df["path"]]], list(train_df["caption"]),
                          args.out, feats[[row[p] for p in val_df["path"]]], list(val_df["caption"]), cfg,
                          data_info={"captions": args.captions, "train_pairs": len(train_df), "val_pairs": len(val_df)})
    print(f"best translator: {Path(args.out) / 'best'} (val loss {tr.config.training.get('best_val_loss')}, "
          f"{tr.config.training.get('samples_per_s')} samples/s)")
    return 0


def cmd_explain(args) -> int:
    from core.data import open_dataset
    from core.explain import ExplainConfig, explain_dataset
    from core.models import load_classifier, load_language_model
    from core.translator import Translator

    dataset = open_dataset(args.dataset)
    classifier = load_classifier(args.classifier)
    lm = load_language_model(args.lm)
    translator = Translator.from_pretrained(args.translator, classifier, lm)
    cfg = ExplainConfig(sentences_per_image=args.sentences, top_p=args.top_p, temperature=args.temperature,
                        max_new_tokens=args.max_new_tokens, batch_rows=args.batch_rows, shard_size=args.shard_size,
                        image_batch=args.image_batch, num_workers=args.num_workers, seed=args.seed, device=args.device)
    run = explain_dataset(dataset, classifier, translator, lm, args.out, cfg, split=args.split, name=args.name,
                          max_shards=args.max_shards)
    m = run.manifest
    print(f"run {run.path}: {m['status']}, {m['progress']['done_images']}/{m['progress']['total_images']} images")
    return 0


def cmd_setup(args) -> int:
    from core.assets import main as assets_main

    return assets_main(["--status"] if args.status else [])


def cmd_report(argv: list[str]) -> int:
    from core.report import report_main

    return report_main(argv)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m core", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser("setup", help="prepare the offline assets (idempotent)")
    s.add_argument("--status", action="store_true")
    s.set_defaults(func=cmd_setup)

    t = sub.add_parser("train", help="train a translator for a classifier and an LM")
    t.add_argument("--classifier", required=True, help="'efficientnet-lite0', a checkpoint folder, or torchvision:ARCH")
    t.add_argument("--captions", default="demo", help="'demo', 'csv:FILE' or 'coco:JSON:IMAGES_ROOT'")
    t.add_argument("--lm", default="smollm2-135m-instruct", help="LM: default, a local folder, a .gguf file or a hub id")
    t.add_argument("--out", required=True, help="output folder; the best checkpoint goes to OUT/best")
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--prefix-length", type=int, default=10)
    t.add_argument("--mapper", choices=["mlp", "transformer"], default="mlp")
    t.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on for CUDA, off on CPU; fast on GPUs and AMX CPUs)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("explain", help="explain a dataset's images into a run folder (resumable)")
    e.add_argument("--dataset", required=True, help="a Waterbirds-format folder, an ImageFolder tree, ...")
    e.add_argument("--split", default=None)
    e.add_argument("--classifier", required=True)
    e.add_argument("--translator", required=True, help="translator checkpoint folder")
    e.add_argument("--lm", default="smollm2-135m-instruct")
    e.add_argument("--out", required=True, help="run folder (an existing one is resumed)")
    e.add_argument("--name", default=None)
    e.add_argument("--sentences", type=int, default=32, help="sentences sampled per image")
    e.add_argument("--top-p", type=float, default=0.9)
    e.add_argument("--temperature", type=float, default=0.9)
    e.add_argument("--max-new-tokens", type=int, default=20)
    e.add_argument("--batch-rows", type=int, default=None,
                   help="sequences per sampler call (default: 512 on CPU, what free GPU memory holds on CUDA)")
    e.add_argument("--image-batch", type=int, default=None, help="images per classifier pass (default 32 CPU, 256 CUDA)")
    e.add_argument("--num-workers", type=int, default=None,
                   help="image-decoding processes (default: 0 on CPU, up to 8 on CUDA)")
    e.add_argument("--shard-size", type=int, default=64)
    e.add_argument("--max-shards", type=int, default=None, help="stop after this many new shards")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.set_defaults(func=cmd_explain)

    sub.add_parser("report", help="write a bias report: RUN [--compare RUN2] --format html|json|md", add_help=False)
    sub.add_parser("mitigate", help="fix a classifier (last-layer reweighting, MaskTune): RUN_VAL --test-run RUN_TEST",
                   add_help=False)
    sub.add_parser("demo", help="rebuild the shipped demo artefacts: classifiers|translators|runs", add_help=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        return cmd_report(argv[1:])
    if argv[:1] == ["mitigate"]:
        from core.mitigate_cli import mitigate_main

        return mitigate_main(argv[1:])
    if argv[:1] == ["demo"]:
        from core.demo_models import main as demo_main

        return demo_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:  # the user's input: say what is wrong, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
