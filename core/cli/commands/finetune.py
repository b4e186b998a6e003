"""`texplain finetune`: fine-tune EfficientNet-Lite0 for a dataset's classes (ERM or group-balanced), saved in
load_classifier's format; resumable from OUT/finetune_state.pt."""
from __future__ import annotations

from core.cli.options import add_dataset_options, default, open_dataset_from
from core.engine.config import FinetuneConfig


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a classifier for a dataset (ERM or group-balanced)",
                              description=__doc__)
    p.add_argument("--dataset", required=True, help="a metadata.csv folder (Waterbirds' format), an attribute "
                                                   "table, or an ImageFolder tree, with a train split")
    add_dataset_options(p)
    p.add_argument("--out", required=True, help="output folder: config.json + model.safetensors (load_classifier)")
    p.add_argument("--name", default=None, help="the classifier's name (default: the output folder's name)")
    p.add_argument("--sampling", choices=["erm", "group_balanced"], default=default(FinetuneConfig, "sampling"),
                   help="erm: plain; group_balanced: each group drawn equally often (needs groups)")
    p.add_argument("--select", choices=["last", "worst_group"], default=default(FinetuneConfig, "select"),
                   help="keep the last epoch, or the one with the best validation worst-group accuracy")
    p.add_argument("--epochs", type=int, default=default(FinetuneConfig, "epochs"),
                   help="passes over the training split (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=default(FinetuneConfig, "batch_size"),
                   help="images per step (default %(default)s)")
    p.add_argument("--lr", type=float, default=default(FinetuneConfig, "lr"),
                   help="learning rate (default %(default)s)")
    p.add_argument("--train-from-block", type=int, default=default(FinetuneConfig, "train_from_block"),
                   help="EfficientNet-Lite0 blocks before this one stay frozen (16: head convolution + classifier)")
    p.add_argument("--no-flips", action="store_true", help="no horizontal-flip augmentation")
    p.add_argument("--seed", type=int, default=default(FinetuneConfig, "seed"),
                   help="seed of the new head and the batches (default %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    from core.engine.finetune import finetune_classifier

    try:  # before the dataset is read: a bad number fails in a second, naming its option
        cfg = FinetuneConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             train_from_block=args.train_from_block, sampling=args.sampling, select=args.select,
                             flips=not args.no_flips, seed=args.seed)
    except ValueError as exc:
        message = str(exc)
        for field in ("train_from_block", "batch_size", "epochs", "lr"):
            message = message.replace(f"{field} must", f"--{field.replace('_', '-')} must")
        raise ValueError(message) from None
    dataset = open_dataset_from(args)
    _, hist = finetune_classifier(dataset, args.out, cfg, name=args.name)
    last = hist["history"][-1] if hist["history"] else {}
    test = hist.get("test")
    print(f"classifier {args.out}: {len(dataset.class_names)} classes ({', '.join(dataset.class_names)}), "
          f"last epoch {last}" + (f"; test average {test['average']:.3f}, worst group {test['worst_group']:.3f}"
                                  if test else ""))
    return 0
