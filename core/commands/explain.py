"""`python -m core explain`: explain a dataset's images into a run folder (an existing one is resumed)."""
from __future__ import annotations

def add_parser(subparsers) -> None:
    e = subparsers.add_parser("explain", help="explain a dataset's images into a run folder (resumable)",
                              description=__doc__)
    e.add_argument("--dataset", required=True, help="a Waterbirds-format folder, an ImageFolder tree, ...")
    e.add_argument("--split", default=None)
    e.add_argument("--classifier", required=True, help="'efficientnet-lite0', a checkpoint folder, or torchvision:ARCH")
    e.add_argument("--translator", required=True, help="translator checkpoint folder")
    e.add_argument("--lm", default="smollm2-135m-instruct")
    e.add_argument("--out", required=True, help="run folder (an existing one is resumed)")
    e.add_argument("--name", default=None)
    e.add_argument("--sentences", type=int, default=32, help="sentences sampled per image")
    e.add_argument("--top-p", type=float, default=0.9)
    e.add_argument("--temperature", type=float, default=0.9)
    e.add_argument("--max-new-tokens", type=int, default=20)
    e.add_argument("--batch-rows", type=int, default=512)
    e.add_argument("--shard-size", type=int, default=64)
    e.add_argument("--max-shards", type=int, default=None, help="stop after this many new shards")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.set_defaults(func=run)


def run(args) -> int:
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
                        seed=args.seed, device=args.device)
    run_ = explain_dataset(dataset, classifier, translator, lm, args.out, cfg, split=args.split, name=args.name,
                           max_shards=args.max_shards)
    m = run_.manifest
    print(f"run {run_.path}: {m['status']}, {m['progress']['done_images']}/{m['progress']['total_images']} images")
    return 0
