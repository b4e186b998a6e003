"""`python -m core finetune`: fine-tune EfficientNet-Lite0 for a dataset's classes (ERM or group-balanced),
saved in load_classifier's format; resumable from OUT/finetune_state.pt."""
from __future__ import annotations


def add_dataset_options(p) -> None:
    """How to read a dataset's names and groups (shared by the verbs that open one)."""
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
    from core.data import open_dataset

    return open_dataset(args.dataset, variation=args.variation, group_by=args.group_by, target=args.target,
                        attributes=args.attributes)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a classifier for a dataset (ERM or group-balanced)",
                              description=__doc__)
    p.add_argument("--dataset", required=True, help="a metadata.csv folder (Waterbirds' format), an attribute "
                                                   "table, or an ImageFolder tree, with a train split")
    add_dataset_options(p)
    p.add_argument("--out", required=True, help="output folder: config.json + model.safetensors (load_classifier)")
    p.add_argument("--name", default=None, help="the classifier's name (default: the output folder's name)")
    p.add_argument("--sampling", choices=["erm", "group_balanced"], default="erm",
                   help="erm: plain; group_balanced: each group drawn equally often (needs groups)")
    p.add_argument("--select", choices=["last", "worst_group"], default="last",
                   help="keep the last epoch, or the one with the best validation worst-group accuracy")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-from-block", type=int, default=16,
                   help="EfficientNet-Lite0 blocks before this one stay frozen (16: head convolution + classifier)")
    p.add_argument("--no-flips", action="store_true", help="no horizontal-flip augmentation")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from core.finetune import FinetuneConfig, finetune_classifier

    dataset = open_dataset_from(args)
    cfg = FinetuneConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         train_from_block=args.train_from_block, sampling=args.sampling, select=args.select,
                         flips=not args.no_flips, seed=args.seed)
    _, hist = finetune_classifier(dataset, args.out, cfg, name=args.name)
    last = hist["history"][-1] if hist["history"] else {}
    test = hist.get("test")
    print(f"classifier {args.out}: {len(dataset.class_names)} classes ({', '.join(dataset.class_names)}), "
          f"last epoch {last}" + (f"; test average {test['average']:.3f}, worst group {test['worst_group']:.3f}"
                                  if test else ""))
    return 0
