"""Scale-out: the explain stream's stages as Ray Data stages, on a laptop, one multi-GPU box or a cluster.

    records (driver) -> decode + preprocess (CPU tasks)
                     -> classifier -> translator -> sampler (an actor pool: models load once per actor,
                        one GPU each where the cluster has GPUs, CPU actors otherwise)
                     -> word counting (CPU tasks)
                     -> shards assembled and written by the driver, by shard id -> the run store

The run folder is the one `explain_dataset` writes (same manifest, shards, resumption), and the tables
are the same: every sentence's random numbers come from (image id, sample, step, seed), so which actor
explains an image, and in which batch, is invisible. Ray retries a task whose worker died and restarts a
dead actor; a driver that dies leaves a run whose written shards are skipped when it is run again.

Only the driver writes the run (it holds the run's lock), so the workers need no shared run folder;
they need the dataset's images and the model files at the same paths as the driver (a shared file
system), and this package installed. Ray itself is imported here, and this module only when a run asks
for Ray, so the dashboard and the CLI start without it.

    from core.distributed import RayOptions
    explain_dataset(ds, clf, tr, lm, "runs/big", cfg, ray=RayOptions(address="auto", workers=8))
"""
from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from core.errors import RayClusterError
from core.explain import (ExplainConfig, _check_models, _end_run, _failed_image_row, _prediction_row, _records,
                          _shard_tables, _start_run)

RAY_REQUIREMENT = "ray[data]==2.60.0"


@dataclass
class RayOptions:
    """Where and how wide a Ray run goes. Nothing here changes the tables, only where they are computed."""

    address: str | None = None  # None: $RAY_ADDRESS or a new local Ray; "auto": the cluster running on this machine; "HOST:PORT"
    workers: int | None = None  # explainer actors; None: one per GPU, else half the cluster's CPUs (at least 1)
    gpus_per_worker: float | None = None  # None: 1 where the cluster has GPUs, else 0 (CPU actors)
    cpus_per_worker: float = 1  # CPUs each actor holds (a CPU actor's torch threads: Ray sets OMP_NUM_THREADS from it)
    init_kwargs: dict = field(default_factory=dict)  # extra ray.init() arguments for a new local Ray (num_cpus, ...)

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1 (or None for one per GPU), got {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")


def as_ray_options(ray) -> RayOptions:
    """`ray=` of explain_dataset as options: True (a local Ray), an address, or RayOptions."""
    if isinstance(ray, RayOptions):
        return ray
    if ray is True:
        return RayOptions()
    if isinstance(ray, str):
        return RayOptions(address=ray or None)
    raise TypeError(f"ray must be True, an address string or core.distributed.RayOptions, got {type(ray).__name__}")


# --- connecting -------------------------------------------------------------------------------

def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayClusterError(f"--ray needs Ray Data, which is not installed here ({exc}); install it with "
                              f"pip install '{RAY_REQUIREMENT}' (on the driver and on every worker)") from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of an explicit address; None for "auto" / "local" (Ray finds those itself)."""
    bare = address.split("://", 1)[-1]
    if bare in ("auto", "local") or ":" not in bare:
        return None
    host, _, port = bare.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise RayClusterError(f"--ray {address!r} is not a Ray address: expected HOST:PORT (the head's GCS port, "
                              "6379 by default), ray://HOST:10001, or 'auto'") from None


def check_address(address: str | None) -> None:
    """Fail now, with what to do, when Ray is missing or an explicit HOST:PORT does not answer
    (Ray's own connect retries for about a minute before it gives up)."""
    _import_ray()
    target = _host_port(address) if address else None
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=5).close()
    except OSError as exc:
        raise RayClusterError(f"cannot reach a Ray cluster at {address} ({exc}). Start its head with "
                              "`ray start --head --port 6379` and pass HOST:6379, or leave out the address "
                              "to run on a local Ray") from None


def connect(opts: RayOptions) -> bool:
    """Join (or start) the Ray cluster; True when this call started Ray (and should shut it down)."""
    ray = _import_ray()
    if ray.is_initialized():  # a notebook or a test that set Ray up itself
        return False
    address = opts.address or os.environ.get("RAY_ADDRESS") or None
    check_address(address)
    kwargs = dict(opts.init_kwargs)
    if address is None:
        kwargs.setdefault("include_dashboard", False)
        # Workers started here import this checkout's `core`, wherever the driver was started from.
        from core import paths

        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(paths.ROOT), os.environ.get("PYTHONPATH")]))}
        kwargs.setdefault("runtime_env", {"env_vars": env})
    try:
        ray.init(address=address, log_to_driver=True, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {address}" if address else "on this machine"
        raise RayClusterError(f"cannot start or join a Ray cluster {where}: {str(exc).splitlines()[0]}") from exc
    return True


# --- the stages -------------------------------------------------------------------------------

def decode_images(batch: dict, preprocess, shape: tuple) -> dict:
    """CPU task: image files -> preprocessed arrays (zeros where unreadable) and each image's error ("" if none)."""
    import torch

    from core.data import DatasetError, load_rgb

    torch.set_num_threads(1)  # decoding tasks are many and small: one thread each, Ray runs them side by side
    x = np.zeros((len(batch["path"]), *shape), dtype=np.float32)  # (B, 3, H, W)
    errors = []
    for i, path in enumerate(batch["path"]):
        try:
            x[i] = preprocess(load_rgb(path)).numpy()
            errors.append("")
        except DatasetError as exc:  # an unreadable image is recorded and skipped, never fatal
            errors.append(str(exc))
    return {"index": batch["index"], "image_id": batch["image_id"], "x": x, "error": np.array(errors, dtype=object)}


class LoadedModels:
    """Models already in the driver's memory: shipped to each actor once, with its constructor."""

    def __init__(self, classifier, translator, lm):
        self.models = (classifier, translator, lm)

    def load(self):
        return self.models


@dataclass
class ModelFiles:
    """Models by name or folder: each actor loads its own (the CLI's way: nothing large leaves the driver)."""

    classifier: str
    translator: str
    lm: str
    checkpoint: str | None = None  # weights for a torchvision:ARCH classifier
    label_space: object = None  # core.models.label_space.LabelSpace: read the classifier in the dataset's classes

    def load(self):
        from core.models import load_classifier, load_language_model
        from core.translator import Translator

        classifier = load_classifier(self.classifier, **({"checkpoint": self.checkpoint} if self.checkpoint else {}))
        if self.label_space is not None:
            from core.models.label_space import wrap

            classifier = wrap(classifier, self.label_space)
        lm = load_language_model(self.lm)
        return classifier, Translator.from_pretrained(self.translator, classifier, lm), lm


class Explainer:
    """Actor: loads the classifier, translator and LM once, then turns batches of images into sentences."""

    def __init__(self, models, cfg: ExplainConfig):
        import torch

        from core.device import resolve
        from core.explain import resolve_batch_rows

        self.classifier, self.translator, self.lm = models.load()
        self.compute = resolve(cfg.device, cfg.dtype)
        self.classifier.to(self.compute.device)
        self.translator.to(self.compute.device)
        self.lm.model.to(self.compute.device, self.compute.dtype)
        on_gpu = self.compute.device.type == "cuda"
        # Sized here, where the device is: free GPU memory differs from actor to actor.
        self.cfg = replace(cfg, batch_rows=resolve_batch_rows(self.lm, self.translator.config.prefix_length,
                                                              cfg.max_new_tokens, cfg.sentences_per_image,
                                                              cfg.batch_rows),
                           image_batch=cfg.image_batch or (256 if on_gpu else 32))
        self.dtype = next(self.classifier.parameters()).dtype
        self.torch = torch

    def __call__(self, batch: dict) -> dict:
        from core.explain import image_key, sample_sentences

        torch, cfg = self.torch, self.cfg
        ok = np.flatnonzero(batch["error"] == "")
        n = len(batch["index"])
        prediction = np.full(n, -1, dtype=np.int64)
        confidence = np.full(n, np.nan, dtype=np.float32)
        sentences = [[] for _ in range(n)]
        if len(ok):
            with torch.inference_mode():
                probs, prefixes = [], []
                for i0 in range(0, len(ok), cfg.image_batch):
                    x = torch.from_numpy(batch["x"][ok[i0:i0 + cfg.image_batch]]).to(self.compute.device)
                    z, logits = self.classifier.features_and_logits(x.to(self.dtype))
                    probs.append(logits.float().softmax(-1).cpu())
                    prefixes.append(self.translator(z.float()))
                conf, pred = torch.cat(probs).max(-1)
                keys = [image_key(batch["image_id"][i], cfg.seed) for i in ok]
                sampled = sample_sentences(self.lm, torch.cat(prefixes), cfg.sentences_per_image, cfg, keys)
            prediction[ok], confidence[ok] = pred.numpy(), conf.numpy()
            for i, sents in zip(ok, sampled):
                sentences[i] = sents
        return {"index": batch["index"], "error": batch["error"], "prediction": prediction,
                "confidence": confidence, "sentences": _object_array(sentences)}


_EXTRACTORS: dict[bytes, object] = {}  # per worker process: WordNet and the lemma cache load once


def count_words(batch: dict, extractor) -> dict:
    """CPU task: each image's sentences -> its words, their counts and how many sentences use each."""
    import pickle

    key = pickle.dumps(extractor)
    extractor = _EXTRACTORS.setdefault(key, extractor)
    sentences = [[str(t) for t in s] for s in batch["sentences"]]  # Arrow hands lists back as arrays
    counts = extractor.count_many(sentences)
    return {**batch, "sentences": _object_array(sentences),
            "words": _object_array([list(c) for c in counts]),
            "word_counts": _object_array([[n for n, _ in c.values()] for c in counts]),
            "word_sentences": _object_array([[k for _, k in c.values()] for c in counts])}


def _object_array(lists: list[list]) -> np.ndarray:
    out = np.empty(len(lists), dtype=object)  # one list per row (never a 2-D array, even when lengths agree)
    out[:] = lists
    return out


# --- the driver -------------------------------------------------------------------------------

def _cluster_plan(ray, opts: RayOptions) -> tuple[int, float]:
    """(actors, GPUs per actor) for this cluster, leaving a CPU for the decoding and counting tasks."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    per_gpu = opts.gpus_per_worker if opts.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    if per_gpu > gpus:
        raise RayClusterError(f"gpus_per_worker={per_gpu} but the Ray cluster has {gpus} GPU(s)")
    spare = cpus - 1  # actors hold their CPUs for the whole run: without a free one no image is ever decoded
    if opts.workers is not None:
        workers = opts.workers
    elif per_gpu:
        workers = max(1, min(int(gpus / per_gpu), int(spare // opts.cpus_per_worker)))
    else:
        workers = max(1, int(spare // opts.cpus_per_worker))
    if workers * opts.cpus_per_worker > spare:
        raise RayClusterError(
            f"{workers} explainer actor(s) x {opts.cpus_per_worker} CPU need {workers * opts.cpus_per_worker:g} of "
            f"the cluster's {cpus:g} CPUs, leaving none for decoding images and counting words; use fewer workers "
            f"or fewer CPUs per worker (at most {max(spare, 0):g} CPUs in all)")
    return workers, per_gpu


def explain_on_ray(dataset, classifier, translator, lm, out_dir: str | Path, cfg: ExplainConfig | None = None,
                   ray=True, split: str | None = None, name: str | None = None, extractor=None,
                   progress: Callable[[int, int, dict], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, max_shards: int | None = None,
                   show_progress: bool = True, extra_manifest: dict | None = None, force: bool = False,
                   models=None):
    """`explain_dataset` on Ray Data (see the module docstring); the same run folder and tables.

    `models` says how each actor gets its models: `ModelFiles` (load from disk on the worker) or, by
    default, the in-memory `classifier`, `translator` and `lm` (shipped once per actor). The driver's
    copies are used only to check compatibility and describe the run.
    """
    from core.models.label_space import read_in_dataset_classes
    from core.words import WordExtractor

    classifier = read_in_dataset_classes(classifier, dataset)  # as explain_dataset; the actors read it so too
    if isinstance(models, ModelFiles):
        models = replace(models, label_space=getattr(classifier, "label_space", None))
    cfg = cfg or ExplainConfig()
    extractor = extractor or WordExtractor()
    opts = as_ray_options(ray)
    _check_models(translator, classifier, lm)
    ds, records = _records(dataset, split)
    started = connect(opts)
    ray_mod = _import_ray()
    try:
        workers, per_gpu = _cluster_plan(ray_mod, opts)
        on_gpu = per_gpu > 0 and (cfg.device == "auto" or cfg.device.startswith("cuda"))
        device = cfg.device if cfg.device != "auto" else ("cuda" if on_gpu else "cpu")
        dtype = cfg.dtype or ("bfloat16" if on_gpu else "float32")
        # The manifest's settings are the single-process run's, so a run may resume in either placement.
        from core.device import resolve

        dtype_name = str(resolve("cpu", dtype).dtype).removeprefix("torch.")
        placement = f"Ray: {workers} {'GPU' if on_gpu else 'CPU'} actor(s)"
        plan = _start_run(dataset, ds, records, classifier, translator, lm, out_dir, cfg, split, name,
                          settings={**cfg.sampling_settings(), "dtype": dtype_name}, device=placement,
                          extra_manifest=extra_manifest, force=force, max_shards=max_shards)
        return _drive(ray_mod, plan, ds, classifier, replace(cfg, device=device, dtype=dtype),
                      opts, workers, per_gpu, extractor, models or LoadedModels(classifier, translator, lm),
                      progress, should_stop, show_progress)
    finally:
        if started:
            ray_mod.shutdown()


def _drive(ray, plan, ds, classifier, cfg, opts, workers, per_gpu, extractor, models, progress, should_stop,
           show_progress):
    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.execution_options.preserve_order, ctx.target_max_block_size
    ctx.enable_progress_bars = show_progress
    # A block is one actor call's images, decoded (256 images at 224 px are 150 MB): Ray must not split it.
    ctx.target_max_block_size = max(ctx.target_max_block_size or 0, 2**31)
    # Shards are assembled by the driver as rows arrive; the order they arrive in does not matter.
    ctx.execution_options.preserve_order = False
    try:
        return _stream(ray, plan, ds, classifier, cfg, opts, workers, per_gpu, extractor, models, progress,
                       should_stop)
    finally:  # the caller's Ray session (a notebook's) keeps its own settings
        ctx.enable_progress_bars, ctx.execution_options.preserve_order, ctx.target_max_block_size = saved


def _stream(ray, plan, ds, classifier, cfg, opts, workers, per_gpu, extractor, models, progress, should_stop):
    run, shards, todo = plan.run, plan.shards, plan.todo
    total = sum(len(s) for s in shards)
    done_images = sum(len(shards[s]) for s in plan.done)

    items, where = [], {}
    for s in todo:
        for pos, r in enumerate(shards[s]):
            where[len(items)] = (s, pos, r)
            items.append({"index": len(items), "image_id": str(r.image_id), "path": str(r.path)})
    transform = getattr(classifier, "_transform", None)
    from core.explain import _RGBTransform

    preprocess = _RGBTransform(transform) if transform is not None else classifier.preprocess
    from PIL import Image

    shape = tuple(preprocess(Image.new("RGB", (64, 64))).shape)  # what an unreadable image's placeholder looks like
    n = cfg.sentences_per_image
    per_call = images_per_call(cfg, per_gpu > 0)
    t0, n_new, stopped = time.time(), 0, False
    sizes = {s: len(shards[s]) for s in todo}
    pending: dict[int, list[dict]] = {}
    run.update_manifest(placement={"ray": ray.get_runtime_context().gcs_address, "workers": workers,
                                   "gpus_per_worker": per_gpu, "cpus_per_worker": opts.cpus_per_worker})
    if items:
        import pandas as pd

        # One block per actor call, cut where the single-process stream cuts its sampler calls (every
        # per_call images, across shards): each block is a batch of every stage (batch_size=None), so an
        # image meets the same neighbours in the classifier and the sampler as in one process, and a
        # float operation of another batch shape never flips a token.
        blocks = [pd.DataFrame(items[i:i + per_call]) for i in range(0, len(items), per_call)]
        stream = (ray.data.from_pandas(blocks)
                  .map_batches(decode_images, fn_kwargs={"preprocess": preprocess, "shape": shape},
                               batch_size=None, num_cpus=1)
                  .map_batches(Explainer, fn_constructor_kwargs={"models": models, "cfg": cfg},
                               batch_size=None, compute=ray.data.ActorPoolStrategy(size=workers),
                               num_gpus=per_gpu, num_cpus=opts.cpus_per_worker)
                  .map_batches(count_words, fn_kwargs={"extractor": extractor}, batch_size=None, num_cpus=1))
        # Faults are Ray Data's defaults, kept on purpose: a task whose worker process died runs again
        # (Ray retries system failures 3 times), and a dead actor is restarted, loads its models again
        # and takes back the batches it held (ActorPoolStrategy restarts without limit).
        rows = stream.iter_rows()
        try:
            for row in rows:
                s, pos, r = where[int(row["index"])]
                pending.setdefault(s, []).append({**row, "_pos": pos, "_record": r})
                if len(pending[s]) == sizes[s]:
                    _write_shard(run, s, pending.pop(s), ds, classifier.class_names, cfg, total)
                    done_images += sizes[s]
                    n_new += sizes[s]
                    rate = n_new / max(time.time() - t0, 1e-9)
                    run.update_manifest(rate_images_per_s=round(rate, 3))
                    if progress:
                        progress(done_images, total, {"shard": s, "images_per_s": rate})
                if should_stop and should_stop():
                    stopped = True  # rows of unwritten shards are redone on resume
                    break
        finally:
            close = getattr(rows, "close", None)
            if close:
                close()
    elapsed = max(time.time() - t0, 1e-9)
    throughput = {"images_per_s": round(n_new / elapsed, 3), "sentences_per_s": round(n_new * n / elapsed, 1),
                  "batch_rows": cfg.batch_rows, "images_per_actor_call": per_call, "image_batch": cfg.image_batch,
                  "ray_workers": workers}
    _end_run(run, len(shards), stopped, rate_images_per_s=round(n_new / elapsed, 3), throughput=throughput)
    return run


def images_per_call(cfg: ExplainConfig, on_gpu: bool) -> int:
    """Images per actor call: one single-process sampler call (batch_rows // n images), widened to a
    multiple of the classifier's image batch, so both stages see the batches one process would."""
    per_sampler = max(1, (cfg.batch_rows or (32768 if on_gpu else 512)) // cfg.sentences_per_image)
    image_batch = cfg.image_batch or (256 if on_gpu else 32)
    return math.lcm(per_sampler, image_batch)


def _write_shard(run, s: int, rows: list[dict], ds, class_names, cfg: ExplainConfig, total: int) -> None:
    """One shard's tables in the single-process order (readable images, then unreadable ones; each in
    dataset order) and written to the run store."""
    rows.sort(key=lambda row: (bool(row["error"]), row["_pos"]))
    images, words, sents = [], [], []
    for row in rows:
        r = row["_record"]
        if row["error"]:
            images.append(_failed_image_row(r, str(row["error"]), ds))
            continue
        texts = [str(t) for t in row["sentences"]]
        images.append(_prediction_row(r, int(row["prediction"]), float(row["confidence"]), len(texts), ds,
                                      class_names))
        words += [{"image_id": r.image_id, "word": str(w), "count": int(c), "sentences": int(k)}
                  for w, c, k in zip(row["words"], row["word_counts"], row["word_sentences"])]
        sents += [{"image_id": r.image_id, "idx": j, "text": t} for j, t in enumerate(texts[:cfg.keep_sentences])]
    run.write_shard(s, *_shard_tables(images, words, sents), total_images=total)
