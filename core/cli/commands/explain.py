"""`texplain explain`: explain a dataset's images into a run folder (an existing one is resumed)."""
from __future__ import annotations

from core.cli.options import (add_classifier_options, add_dataset_options, add_lm_option, classifier_from, default,
                              open_dataset_from)
from core.engine.config import ExplainConfig

RAY_REQUIREMENT = "ray[data]==2.60.0"  # as in requirements.txt (core.engine.ray is not imported for --help)


def add_parser(subparsers) -> None:
    e = subparsers.add_parser("explain", help="explain a dataset's images into a run folder (resumable)",
                              description=__doc__)
    e.add_argument("--dataset", required=True, help="a Waterbirds-format folder, an ImageFolder tree, ...")
    add_dataset_options(e)
    e.add_argument("--split", default=None, help="explain only this split (train, val, test; default: all images)")
    add_classifier_options(e)
    e.add_argument("--translator", default=None,
                   help="translator checkpoint folder (default: one made for this classifier's features among the "
                        "shipped and your translators, else one built in minutes by the fast path, cached under "
                        "runs/translators/)")
    e.add_argument("--no-auto-translator", action="store_true",
                   help="without --translator, stop with the command that builds one instead of building it")
    add_lm_option(e)
    e.add_argument("--out", required=True, help="run folder (an existing one is resumed)")
    e.add_argument("--name", default=None, help="the run's display name (default: the folder's name)")

    def knob(flag: str, field: str, kind, text: str, **kw) -> None:
        e.add_argument(flag, type=kind, default=default(ExplainConfig, field), help=text, **kw)

    knob("--sentences", "sentences_per_image", sentences_option,
         "sentences sampled per image: a number N, or 'auto' to sample in rounds and stop each image once its words "
         "have settled (see --min-sentences, --max-sentences, --tolerance; default %(default)s)", metavar="N|auto")
    knob("--min-sentences", "min_sentences", int, "with --sentences auto: sentences every image gets (the first "
         "round; default %(default)s)", metavar="N")
    knob("--max-sentences", "max_sentences", int, "with --sentences auto: the most an image gets (default "
         "%(default)s)", metavar="N")
    knob("--round-sentences", "round_sentences", int, "with --sentences auto: sentences added per later round "
         "(default %(default)s)", metavar="N")
    knob("--tolerance", "tolerance", float, "with --sentences auto: an image stops once every word in at least 10%% "
         "of its sentences has a share standard error below this, or a round moved no word's share by more "
         "(default %(default)s)", metavar="SHARE")
    knob("--top-p", "top_p", float, "nucleus sampling's top-p (default %(default)s)")
    knob("--temperature", "temperature", float, "sampling temperature (default %(default)s)")
    knob("--max-new-tokens", "max_new_tokens", int, "tokens per sentence at most (default %(default)s)")
    knob("--batch-rows", "batch_rows", int,
         "sequences per sampler call (default: 512 on CPU, what free GPU memory holds on CUDA)")
    knob("--image-batch", "image_batch", int, "images per classifier pass (default 32 on CPU, 256 on CUDA)")
    knob("--num-workers", "num_workers", int, "image-decoding processes (default: 0 on CPU, up to 8 on CUDA)")
    knob("--shard-size", "shard_size", int, "images per stored shard, the unit of resumption (default %(default)s)")
    knob("--keep-sentences", "keep_sentences", int,
         "sentences stored per image (default: all, so any sentence-level statistic can be recomputed; "
         "zstd-compressed)", metavar="N")
    knob("--seed", "seed", int, "sampling seed (default %(default)s)")
    knob("--device", "device", str, "auto (CUDA when present), cpu or cuda[:N] (default %(default)s)")
    e.add_argument("--no-scene-gate", dest="scene_gate", action="store_false",
                   help="keep sentences that name a scene kind the translator's scene gate rules out (a translator "
                        "folder with scene_gate.json; the others have none and are unaffected)")
    e.add_argument("--max-shards", type=int, default=None, help="stop after this many new shards")
    e.add_argument("--max-images", type=int, default=None, metavar="N",
                   help="a quick run: a sample of at most N images, stratified by group (by class without groups) "
                        "and drawn with --seed; the same command resumes the same sample (default: every image)")
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


def sentences_option(value: str):
    """--sentences: a positive whole number, or "auto"."""
    import argparse

    if value.strip().lower() == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of sentences or 'auto', got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (or 'auto'), got {n}")
    return n


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _print_estimate(dataset, args) -> None:
    """How long the images left to explain should take, from earlier runs' rates (core.jobs.estimate)."""
    import json
    from pathlib import Path

    from core.jobs import estimate

    n = len(dataset.split(args.split)) if args.split else len(dataset)
    n = min(n, args.max_images) if args.max_images else n
    done = 0
    if not args.force:
        try:
            done = int((json.loads((Path(args.out) / "manifest.json").read_text()).get("progress") or {})
                       .get("done_images") or 0)
        except (OSError, ValueError, TypeError, AttributeError):
            done = 0
    left = max(0, n - done)
    device = "cuda" if args.ray is not None and args.gpus_per_worker else args.device
    if args.sentences == "auto":
        from core.jobs import expected_sentences

        per_image = expected_sentences(args.min_sentences, args.max_sentences)
        how = f"about {per_image:.0f} sentences (auto, {args.min_sentences}-{args.max_sentences})"
    else:
        per_image, how = args.sentences, f"{args.sentences} sentences"
    guess = estimate(left, per_image, device)
    resumed = f" ({done} already explained)" if done else ""
    print(f"estimate: about {_duration(guess.seconds)} for {left} images x {how}{resumed}, "
          f"after the models load ({guess.basis})", flush=True)


def run(args) -> int:
    from core.engine.pipeline import explain_dataset
    from core.models import load_language_model
    from core.models.label_space import read_in_dataset_classes
    from core.models.translator import Translator

    if args.keep_sentences is not None and args.keep_sentences < 0:
        raise ValueError(f"--keep-sentences must be >= 0, got {args.keep_sentences}")
    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f"--max-images must be >= 1, got {args.max_images}")
    cfg = config_from(args)  # before any model loads: bad sampling options fail at once
    if args.ray is not None:
        from core.engine.ray import check_address

        # Before any model loads: a wrong address should fail in a second, not after a minute of loading.
        check_address(None if args.ray == "local" else args.ray)
    elif args.workers is not None or args.gpus_per_worker is not None:
        raise ValueError("--workers and --gpus-per-worker go with --ray (a Ray run); without it explain runs in "
                         "this process (see --num-workers for its image-decoding processes)")
    else:
        from core.device import resolve

        resolve(args.device)  # a GPU asked for where there is none: one line now, not after the models load
    if args.translator is not None:
        args.translator = str(translator_folder(args.translator))
    dataset = open_dataset_from(args)
    _print_estimate(dataset, args)
    # Before the LM loads: a classifier whose classes cannot be matched to the dataset's fails at once.
    classifier = read_in_dataset_classes(classifier_from(args), dataset)
    if (space := getattr(classifier, "label_space", None)) is not None:
        print(f"classifier {classifier.name}: {space.describe()}")
    lm = load_language_model(args.lm)
    if args.translator is None:
        from core.demo.auto_translator import translator_for, translator_quality

        folder, how = translator_for(classifier, lm, auto=not args.no_auto_translator)
        args.translator = str(folder)
        quality = translator_quality(folder)
        print(f"translator: {folder} ({'made for this classifier' if how == 'found' else 'built now by the fast path'}"
              f"{f'; {quality}' if quality else ''})", flush=True)
    translator = Translator.from_pretrained(args.translator, classifier, lm)
    placement = None
    if args.ray is not None:
        from core.engine.ray import ModelFiles, RayPlacement

        # Each actor loads the models from these files itself: nothing large travels from the driver.
        placement = RayPlacement(address=None if args.ray == "local" else args.ray, workers=args.workers,
                                 cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                                 models=ModelFiles(classifier=args.classifier, translator=args.translator, lm=args.lm,
                                                   checkpoint=args.checkpoint, layer=args.layer,
                                                   class_names=args.class_names,
                                                   random_weights=args.random_weights))
    run_ = explain_dataset(dataset, classifier, translator, lm, args.out, cfg, split=args.split, name=args.name,
                           max_shards=args.max_shards, force=args.force, placement=placement,
                           max_images=args.max_images)
    health = run_.health()
    print(f"run {run_.path}: {health.status}, {images_line(run_, health)}{sentences_line(run_)}")
    if health.describe() and health.status != "partial":
        print(f"warning: {health.describe()}")
    return 0


# ExplainConfig's fields as this command's options, for its error messages.
_FLAGS = {"sentences_per_image": "--sentences", "min_sentences": "--min-sentences", "max_sentences": "--max-sentences",
          "round_sentences": "--round-sentences", "tolerance": "--tolerance", "top_p": "--top-p",
          "temperature": "--temperature", "max_new_tokens": "--max-new-tokens", "batch_rows": "--batch-rows",
          "image_batch": "--image-batch", "num_workers": "--num-workers", "shard_size": "--shard-size"}


def config_from(args) -> ExplainConfig:
    """The sampling settings the options give; a bad value (--min-sentences above --max-sentences, a tolerance
    <= 0, ...) is a ValueError that names the option."""
    import re

    try:
        return ExplainConfig(sentences_per_image=args.sentences, min_sentences=args.min_sentences,
                             max_sentences=args.max_sentences, round_sentences=args.round_sentences,
                             tolerance=args.tolerance, top_p=args.top_p, temperature=args.temperature,
                             max_new_tokens=args.max_new_tokens, batch_rows=args.batch_rows,
                             shard_size=args.shard_size, image_batch=args.image_batch, num_workers=args.num_workers,
                             keep_sentences=args.keep_sentences, seed=args.seed, device=args.device,
                             scene_gate=getattr(args, "scene_gate", True))
    except ValueError as exc:
        text = re.sub(r"\b(" + "|".join(_FLAGS) + r")\b", lambda m: _FLAGS[m.group(1)], str(exc))
        raise ValueError(text) from None


def sentences_line(run_) -> str:
    """'; 14.2 sentences per image (8-32)' for a run whose images got different numbers of sentences."""
    summary = run_.manifest.get("sentences") or {}
    if not summary or summary.get("min") == summary.get("max"):
        return ""
    return f"; {summary['mean']:g} sentences per image ({summary['min']}-{summary['max']}, auto)"


def translator_folder(value: str):
    """The translator folder to load: `value`, or the best checkpoint inside it (OUT/best, what `texplain train
    --out OUT` writes) when `value` is a training folder; a clear error when it is neither."""
    from pathlib import Path

    folder = Path(value).expanduser()
    if (folder / "config.json").is_file() or not folder.is_dir():
        return folder  # a checkpoint, or nothing here: Translator.from_pretrained says what is wrong
    if (folder / "best" / "config.json").is_file():
        print(f"translator: {folder} is a training folder; using its best checkpoint, {folder / 'best'}", flush=True)
        return folder / "best"
    inside = sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file())
    raise FileNotFoundError(f"--translator {folder} holds no translator checkpoint (config.json)"
                                  + (f"; it holds {', '.join(inside)}: pass --translator {folder / inside[0]}"
                                     if inside else ""))


def images_line(run_, health) -> str:
    """'3/3 images' for a run whose images all read, '2 of 3 images explained, 1 unreadable (skipped: ...)'
    when some could not be decoded: an unreadable image is not an explained one."""
    unreadable = health.unreadable_images
    if unreadable is None:  # a run from before the manifest counted them
        images = run_.images()
        unreadable = int(images["error"].notna().sum()) if "error" in images else 0
    total = "?" if health.total_images is None else health.total_images
    if not unreadable:
        return f"{health.images_present}/{total} images"
    return (f"{health.images_present - unreadable} of {total} images explained, {unreadable} unreadable (skipped; "
            "their errors are in the run's images table: texplain runs show)")
