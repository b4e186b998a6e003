"""`python -m core explain`: explain a dataset's images into a run folder (an existing one is resumed)."""
from __future__ import annotations

from core.commands.finetune import add_dataset_options, open_dataset_from
from core.commands.train import load_classifier_arg

RAY_REQUIREMENT = "ray[data]==2.60.0"  # as in requirements.txt (core.distributed is not imported for --help)


def add_parser(subparsers) -> None:
    e = subparsers.add_parser("explain", help="explain a dataset's images into a run folder (resumable)",
                              description=__doc__)
    e.add_argument("--dataset", required=True, help="a Waterbirds-format folder, an ImageFolder tree, ...")
    add_dataset_options(e)
    e.add_argument("--split", default=None)
    e.add_argument("--classifier", required=True, help="'efficientnet-lite0', a checkpoint folder, or torchvision:ARCH")
    e.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="weights (.pt/.pth state dict or .safetensors) for a --classifier torchvision:ARCH")
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
    e.add_argument("--image-batch", type=int, default=None,
                   help="images per classifier pass (default 32 on CPU, 256 on CUDA)")
    e.add_argument("--num-workers", type=int, default=None,
                   help="image-decoding processes (default: 0 on CPU, up to 8 on CUDA)")
    e.add_argument("--shard-size", type=int, default=64)
    e.add_argument("--max-shards", type=int, default=None, help="stop after this many new shards")
    e.add_argument("--keep-sentences", type=int, default=None, metavar="N",
                   help="sentences stored per image (default: all, so any sentence-level statistic can be "
                        "recomputed; zstd-compressed)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    ray = e.add_argument_group("scale-out (Ray Data; same tables, same run folder)")
    ray.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                     help="run the stages on Ray Data: alone, a Ray started on this machine for the run; 'auto', "
                          "the cluster already running here; HOST:PORT (or ray://HOST:10001), a cluster's head. "
                          f"Needs {RAY_REQUIREMENT!r} on every machine")
    ray.add_argument("--workers", type=int, default=None,
                     help="explainer actors, each loading the models once (default: one per GPU; on CPUs, "
                          "one per CPU but one)")
    ray.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each explainer actor holds (default 1)")
    ray.add_argument("--gpus-per-worker", type=float, default=None,
                     help="GPUs each explainer actor holds (default: 1 where the cluster has GPUs, else 0)")
    e.add_argument("--force", action="store_true",
                   help="start over: delete the run in --out (its shards) instead of resuming it; needed when "
                        "the dataset or the settings changed since it started")
    e.set_defaults(func=run)


def run(args) -> int:
    from core.explain import ExplainConfig, explain_dataset
    from core.models import load_language_model
    from core.models.label_space import read_in_dataset_classes
    from core.translator import Translator

    if args.keep_sentences is not None and args.keep_sentences < 0:
        raise ValueError(f"--keep-sentences must be >= 0, got {args.keep_sentences}")
    ray = None
    if args.ray is not None:
        from core.distributed import ModelFiles, RayOptions, check_address

        # Before any model loads: a wrong address should fail in a second, not after a minute of loading.
        check_address(None if args.ray == "local" else args.ray)
        ray = RayOptions(address=None if args.ray == "local" else args.ray, workers=args.workers,
                         cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker)
    elif args.workers is not None or args.gpus_per_worker is not None:
        raise ValueError("--workers and --gpus-per-worker go with --ray (a Ray run); without it explain runs in "
                         "this process (see --num-workers for its image-decoding processes)")
    dataset = open_dataset_from(args)
    # Before the LM loads: a classifier whose classes cannot be matched to the dataset's fails at once.
    classifier = read_in_dataset_classes(load_classifier_arg(args), dataset)
    if (space := getattr(classifier, "label_space", None)) is not None:
        print(f"classifier {classifier.name}: {space.describe()}")
    lm = load_language_model(args.lm)
    translator = Translator.from_pretrained(args.translator, classifier, lm)
    cfg = ExplainConfig(sentences_per_image=args.sentences, top_p=args.top_p, temperature=args.temperature,
                        max_new_tokens=args.max_new_tokens, batch_rows=args.batch_rows, shard_size=args.shard_size,
                        image_batch=args.image_batch, num_workers=args.num_workers,
                        keep_sentences=args.keep_sentences, seed=args.seed, device=args.device)
    if ray is not None:
        from core.distributed import explain_on_ray

        # Each actor loads the models from these files itself: nothing large travels from the driver.
        files = ModelFiles(classifier=args.classifier, translator=args.translator, lm=args.lm,
                           checkpoint=args.checkpoint)
        run_ = explain_on_ray(dataset, classifier, translator, lm, args.out, cfg, ray=ray, split=args.split,
                              name=args.name, max_shards=args.max_shards, force=args.force, models=files)
    else:
        run_ = explain_dataset(dataset, classifier, translator, lm, args.out, cfg, split=args.split, name=args.name,
                               max_shards=args.max_shards, force=args.force)
    health = run_.health()
    print(f"run {run_.path}: {health.status}, {health.images_present}/{health.total_images} images")
    if health.describe() and health.status != "partial":
        print(f"warning: {health.describe()}")
    return 0
