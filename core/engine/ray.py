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

    from core.engine.ray import RayPlacement
    explain_dataset(ds, clf, tr, lm, "runs/big", cfg, placement=RayPlacement(address="auto", workers=8))
"""
from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from core.engine.config import ExplainConfig
from core.engine.explainer import Explainer, images_per_call, picklable_preprocess
from core.engine.run_io import abandon_run, end_run, explained_rows, failed_image_row, shard_tables, start_run
from core.errors import RayClusterError

RAY_REQUIREMENT = "ray[data]==2.60.0"


@dataclass
class RayPlacement:
    """Where and how wide a Ray run goes (a `placement` for explain_dataset). Nothing here changes the
    tables, only where they are computed."""

    # None: $RAY_ADDRESS or a new local Ray; "auto": the cluster running on this machine; "HOST:PORT"
    address: str | None = None
    workers: int | None = None  # explainer actors; None: one per GPU, else one per CPU but one (at least 1)
    gpus_per_worker: float | None = None  # None: 1 where the cluster has GPUs, else 0 (CPU actors)
    cpus_per_worker: float = 1  # CPUs each actor holds (a CPU actor's torch threads: Ray sets OMP_NUM_THREADS from it)
    init_kwargs: dict = field(default_factory=dict)  # extra ray.init() arguments for a new local Ray (num_cpus, ...)
    # How each actor gets its models: ModelFiles (each loads its own from disk: the CLI's way) or None (the
    # driver's in-memory models, shipped once per actor).
    models: "ModelFiles | None" = None

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1 (or None for one per GPU), got {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")

    def explain_dataset(self, dataset, classifier, translator, lm, out_dir, cfg: ExplainConfig, **kwargs):
        """explain_dataset's work on Ray Data: the same run folder and tables (see the module docstring)."""
        return _explain_on_ray(self, dataset, classifier, translator, lm, out_dir, cfg, **kwargs)


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


def connect(opts: RayPlacement) -> bool:
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
    checkpoint: str | None = None  # weights for a torchvision:ARCH or timm:ARCH classifier
    label_space: object = None  # core.models.label_space.LabelSpace: read the classifier in the dataset's classes
    layer: str | None = None  # the layer whose pooled output are the features (None: the penultimate ones)
    class_names: str | None = None  # a class-names file, for weights that name no classes
    random_weights: bool = False  # a torchvision architecture without a checkpoint, on purpose (a smoke test)

    def load(self):
        from core.models import load_language_model
        from core.models.registry import load_classifier_spec
        from core.models.translator import Translator

        classifier = load_classifier_spec(self.classifier, self.checkpoint, layer=self.layer,
                                          class_names=self.class_names, random_weights=self.random_weights)
        if self.label_space is not None:
            from core.models.label_space import wrap

            classifier = wrap(classifier, self.label_space)
        lm = load_language_model(self.lm)
        return classifier, Translator.from_pretrained(self.translator, classifier, lm), lm


class ExplainActor:
    """Actor: loads the classifier, translator and LM once, then explains blocks of decoded images with the
    same `Explainer.explain_batch` a single process uses. With sentences_per_image="auto" a block's images
    share the sampler's calls until each has settled, and the stopping rule counts words with the run's
    `extractor`: an image gets the sentences it gets in one process."""

    def __init__(self, models, cfg: ExplainConfig, extractor=None):
        # The Explainer sizes batch_rows here, where the device is: free GPU memory differs from actor to actor.
        self.explainer = Explainer(*models.load(), cfg, extractor)

    def __call__(self, batch: dict) -> dict:
        import torch

        ok = np.flatnonzero(batch["error"] == "")
        n = len(batch["index"])
        prediction = np.full(n, -1, dtype=np.int64)
        confidence = np.full(n, np.nan, dtype=np.float32)
        sentences = [[] for _ in range(n)]
        if len(ok):
            probs, sampled = self.explainer.explain_batch(torch.from_numpy(batch["x"][ok]),
                                                          [batch["image_id"][i] for i in ok])
            conf, pred = probs.max(-1)
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

ACTOR_PROCESS_BYTES = 768 * 2**20  # one actor process with torch and transformers imported (measured: 749 MB)
CPU_BATCH_ROWS = 512  # the sampler's default batch on CPU (core.engine.sampling.resolve_batch_rows)


def _weight_bytes(model) -> int:
    import torch

    module = model if isinstance(model, torch.nn.Module) else getattr(model, "module", None) or getattr(model, "model",
                                                                                                        None)
    if not isinstance(module, torch.nn.Module):
        return 0
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def actor_bytes(classifier, translator, lm, cfg: ExplainConfig, on_gpu: bool) -> int:
    """Host memory one explainer actor takes (an estimate from above): its process, the models' weights in
    float32, and on CPU the sampler's working set for a batch (KV cache and vocabulary-sized buffers)."""
    from core.engine.sampling import sampler_bytes_per_row

    total = ACTOR_PROCESS_BYTES + sum(_weight_bytes(m) for m in (classifier, translator, lm))
    if not on_gpu and getattr(lm, "model", None) is not None and hasattr(lm.model, "config"):
        rows = cfg.batch_rows or CPU_BATCH_ROWS
        total += rows * sampler_bytes_per_row(lm.model.config, translator.config.prefix_length, cfg.max_new_tokens,
                                              dtype_bytes=4)
    return int(total)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def cluster_plan(resources: dict, opts: RayPlacement, per_actor_bytes: int | None = None) -> tuple[int, float]:
    """(actors, GPUs per actor) for a cluster with these resources (ray.cluster_resources(): CPU, GPU, memory in
    bytes), leaving a CPU for the decoding and counting tasks. What cannot run is refused here, with the
    numbers: more actors than GPUs, than CPUs (CPU actors only time-share them), or than memory holds when
    each takes `per_actor_bytes` (actors that do not fit are swapped or killed, and no image ever finishes)."""
    gpus, cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    memory = float(resources.get("memory") or 0)
    if not memory:
        import psutil

        memory = float(psutil.virtual_memory().available)
    per_gpu = opts.gpus_per_worker if opts.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    if per_gpu > gpus:
        raise RayClusterError(f"gpus_per_worker={per_gpu} but the Ray cluster has {gpus} GPU(s)")
    spare = cpus - 1  # actors hold their CPUs for the whole run: without a free one no image is ever decoded
    by_memory = int(memory // per_actor_bytes) if per_actor_bytes else None
    if opts.workers is not None:
        workers = opts.workers
    else:
        workers = int(gpus / per_gpu) if per_gpu else int(max(spare, 0))
        workers = min(workers, int(spare // opts.cpus_per_worker))
        workers = max(1, min(workers, by_memory) if by_memory is not None else workers)
    if workers * opts.cpus_per_worker > spare:
        raise RayClusterError(
            f"{workers} explainer actor(s) x {opts.cpus_per_worker} CPU need {workers * opts.cpus_per_worker:g} of "
            f"the cluster's {cpus:g} CPUs, leaving none for decoding images and counting words; use fewer workers "
            f"or fewer CPUs per worker (at most {max(spare, 0):g} CPUs in all)")
    if per_gpu and workers * per_gpu > gpus:
        raise RayClusterError(f"{workers} explainer actor(s) x {per_gpu:g} GPU need {workers * per_gpu:g} GPUs; the "
                              f"cluster has {gpus}: use --workers {max(1, int(gpus / per_gpu))} or fewer")
    if not per_gpu and workers > max(1, int(cpus)):
        raise RayClusterError(
            f"{workers} CPU explainer actors on a cluster of {cpus:g} CPUs: each actor runs the models on CPU cores "
            f"of its own, so more actors than CPUs only share them ({opts.cpus_per_worker:g} CPU each) and every "
            f"one loads the models; use --workers {max(1, int(cpus))} or fewer")
    if by_memory is not None and workers > by_memory:
        raise RayClusterError(
            f"{workers} explainer actor(s) need about {_gib(workers * per_actor_bytes)} of memory "
            f"({_gib(per_actor_bytes)} each: the models, the sampler's batch and the process), but the cluster has "
            f"{_gib(memory)} for them: at most {by_memory} fit; use --workers {max(1, by_memory)} or fewer"
            + (" (or a smaller --batch-rows)" if not per_gpu else ""))
    return workers, per_gpu


def _explain_on_ray(opts: RayPlacement, dataset, classifier, translator, lm, out_dir: str | Path,
                    cfg: ExplainConfig, *, split: str | None, name: str | None, extractor,
                    progress: Callable[[int, int, dict], None] | None, should_stop: Callable[[], bool] | None,
                    max_shards: int | None, show_progress: bool, extra_manifest: dict | None, force: bool,
                    max_images: int | None = None):
    """explain_dataset on Ray Data. The driver's models only check compatibility and describe the run; each
    actor gets its models as `opts.models` says (ModelFiles: from disk; None: the driver's, shipped once)."""
    from core.device import resolve
    from core.models.translator import check_compatible

    models = opts.models
    if isinstance(models, ModelFiles):  # the actors read the classifier in the dataset's classes too
        models = replace(models, label_space=getattr(classifier, "label_space", None))
    check_compatible(translator.config, classifier, lm)
    started = connect(opts)
    ray_mod = _import_ray()
    plan = None
    try:
        resources = ray_mod.cluster_resources()
        gpu_actors = (opts.gpus_per_worker if opts.gpus_per_worker is not None else float(resources.get("GPU", 0)))
        workers, per_gpu = cluster_plan(resources, opts, actor_bytes(classifier, translator, lm, cfg, gpu_actors > 0))
        on_gpu = per_gpu > 0 and (cfg.device == "auto" or cfg.device.startswith("cuda"))
        device = cfg.device if cfg.device != "auto" else ("cuda" if on_gpu else "cpu")
        dtype = cfg.dtype or ("bfloat16" if on_gpu else "float32")
        # The manifest's settings are the single-process run's, so a run may resume in either placement.
        dtype_name = str(resolve("cpu", dtype).dtype).removeprefix("torch.")
        placement = f"Ray: {workers} {'GPU' if on_gpu else 'CPU'} actor(s)"
        plan = start_run(dataset, split, classifier, translator, lm, out_dir, cfg, name,
                         settings={**cfg.sampling_settings(), "dtype": dtype_name}, device=placement,
                         extra_manifest=extra_manifest, force=force, max_shards=max_shards, max_images=max_images)
        return _drive(ray_mod, plan, classifier, replace(cfg, device=device, dtype=dtype),
                      opts, workers, per_gpu, extractor, models or LoadedModels(classifier, translator, lm),
                      progress, should_stop, show_progress)
    except BaseException as exc:
        if plan is not None:
            abandon_run(plan.run, exc)  # Ctrl-C: "stopped"; written shards stay and the same call resumes
        if isinstance(exc, KeyboardInterrupt) and started:
            print("interrupted: shutting Ray down (its actors with it); the run resumes where it stopped",
                  file=sys.stderr, flush=True)
        raise
    finally:
        if started:
            ray_mod.shutdown()


def _drive(ray, plan, classifier, cfg, opts, workers, per_gpu, extractor, models, progress, should_stop,
           show_progress):
    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.execution_options.preserve_order, ctx.target_max_block_size
    ctx.enable_progress_bars = show_progress
    # A block is one actor call's images, decoded (256 images at 224 px are 150 MB): Ray must not split it.
    ctx.target_max_block_size = max(ctx.target_max_block_size or 0, 2**31)
    # Shards are assembled by the driver as rows arrive; the order they arrive in does not matter.
    ctx.execution_options.preserve_order = False
    try:
        return _stream(ray, plan, classifier, cfg, opts, workers, per_gpu, extractor, models, progress,
                       should_stop)
    finally:  # the caller's Ray session (a notebook's) keeps its own settings
        ctx.enable_progress_bars, ctx.execution_options.preserve_order, ctx.target_max_block_size = saved


def _stream(ray, plan, classifier, cfg, opts, workers, per_gpu, extractor, models, progress, should_stop):
    run, shards, todo, ds = plan.run, plan.shards, plan.todo, plan.ds
    total, done_images = plan.total_images, plan.done_images

    items, where = [], {}
    for s in todo:
        for pos, r in enumerate(shards[s]):
            where[len(items)] = (s, pos, r)
            items.append({"index": len(items), "image_id": str(r.image_id), "path": str(r.path)})
    preprocess = picklable_preprocess(classifier)
    from PIL import Image

    shape = tuple(preprocess(Image.new("RGB", (64, 64))).shape)  # what an unreadable image's placeholder looks like
    per_call = images_per_call(cfg, per_gpu > 0)
    n_sentences = 0
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
                  .map_batches(ExplainActor, fn_constructor_kwargs={"models": models, "cfg": cfg,
                                                                    "extractor": extractor},
                               batch_size=None, compute=ray.data.ActorPoolStrategy(size=workers),
                               num_gpus=per_gpu, num_cpus=opts.cpus_per_worker)
                  .map_batches(count_words, fn_kwargs={"extractor": extractor}, batch_size=None, num_cpus=1))
        # Faults are Ray Data's defaults, kept on purpose: a task whose worker process died runs again
        # (Ray retries system failures 3 times), and a dead actor is restarted, loads its models again
        # and takes back the batches it held (ActorPoolStrategy restarts without limit).
        rows = stream.iter_rows()
        explained, noted_at = done_images, 0.0
        interrupted = False
        try:
            for row in rows:
                s, pos, r = where[int(row["index"])]
                pending.setdefault(s, []).append({**row, "_pos": pos, "_record": r})
                n_sentences += len(row["sentences"])
                explained += 1
                if time.time() - noted_at >= 1.0:  # progress between shards, at most one manifest write a second
                    noted_at = time.time()
                    prog = run.manifest.get("progress") or {}
                    run.update_manifest(progress={**prog, "explained_images": explained})
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
        except KeyboardInterrupt:
            interrupted = True  # leave the stream as it is: Ray's shutdown ends it, waiting on it may not
            raise
        finally:
            close = getattr(rows, "close", None)
            if close and not interrupted:
                close()
    elapsed = max(time.time() - t0, 1e-9)
    throughput = {"images_per_s": round(n_new / elapsed, 3), "sentences_per_s": round(n_sentences / elapsed, 1),
                  "batch_rows": cfg.batch_rows, "images_per_actor_call": per_call, "image_batch": cfg.image_batch,
                  "ray_workers": workers}
    end_run(run, len(shards), stopped, rate_images_per_s=round(n_new / elapsed, 3), throughput=throughput)
    return run


def _write_shard(run, s: int, rows: list[dict], ds, class_names, cfg: ExplainConfig, total: int) -> None:
    """One shard's tables in the single-process order (readable images, then unreadable ones; each in
    dataset order) and written to the run store."""
    rows.sort(key=lambda row: (bool(row["error"]), row["_pos"]))
    images, words, sents = [], [], []
    for row in rows:
        r = row["_record"]
        if row["error"]:
            images.append(failed_image_row(r, str(row["error"]), ds))
            continue
        counts = {str(w): (int(c), int(k)) for w, c, k in zip(row["words"], row["word_counts"], row["word_sentences"])}
        image, image_words, kept = explained_rows(r, int(row["prediction"]), float(row["confidence"]),
                                                  [str(t) for t in row["sentences"]], counts, ds, class_names,
                                                  cfg.keep_sentences)
        images.append(image)
        words += image_words
        sents += kept
    run.write_shard(s, *shard_tables(images, words, sents), total_images=total)
