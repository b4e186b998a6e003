"""Explaining a dataset into a run folder: stored, resumable, and placed where the caller says.

    run = explain_dataset(dataset, classifier, translator, lm, "runs/mine", ExplainConfig())
    run = explain_dataset(..., placement=RayPlacement(address="auto", workers=8))   # core.engine.ray

In this process the run is a stream, each stage sized for itself (DESIGN.md, Compute)::

    records -> decode + preprocess (DataLoader, cfg.num_workers processes)
            -> Explainer.explain_batch: classifier -> translator -> sampler, a block of whole sampler chunks
               and classifier batches at a time (core.engine.explainer.images_per_call)
            -> word counting + shard writes in a background thread -> run store

Shards are the unit of resumption only: a shard is written once all its images are done, and a resumed
run starts at the first missing one, with exactly the rows an uninterrupted run would have written.
Counter-based sampling makes every batching and placement give the same tables.
"""
from __future__ import annotations

import math
import os
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Protocol

import torch

from core.engine.config import ExplainConfig, ProgressFn
from core.engine.explainer import Explainer, StageTimer, images_per_call, picklable_preprocess
from core.engine.run_io import (RunPlan, abandon_run, end_run, explained_rows, failed_image_row, shard_tables,
                                start_run)
from core.errors import TExplainError
from core.store import Run


class Placement(Protocol):
    """Where a dataset is explained when not in this process (`core.engine.ray.RayPlacement` is one). It gets
    what `explain_dataset` got, the classifier already read in the dataset's classes, and returns the run."""

    def explain_dataset(self, dataset, classifier, translator, lm, out_dir, cfg: ExplainConfig, *, split, name,
                        extractor, progress, should_stop, max_shards, show_progress, extra_manifest,
                        force, max_images) -> Run: ...


def explain_dataset(dataset, classifier, translator, lm, out_dir: str | Path, cfg: ExplainConfig | None = None,
                    split: str | None = None, name: str | None = None, extractor=None,
                    progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None,
                    max_shards: int | None = None, show_progress: bool = True, extra_manifest: dict | None = None,
                    force: bool = False, placement: Placement | None = None, max_images: int | None = None) -> Run:
    """Explain every image of `dataset` (optionally one split) into the run folder `out_dir`; resumable.

    `max_images` explains a sample of at most that many images instead, stratified by group (by class where
    there are no groups) and drawn with `cfg.seed` (`ImageDataset.sample`); the manifest records it, so the
    same call resumes the same sample and another sample in the same folder is refused as other data.

    Resuming checks the settings, models and data (`dataset_fingerprint`) against the run's and refuses
    a mismatch; `force=True` deletes the run in `out_dir` (if any) and starts over. A second process
    writing the same folder is refused (the run's lock). `progress(done, total, info)` is called after
    each shard and `should_stop()` before each batch (a stopped run resumes where it stopped). While it runs,
    the manifest's `progress.explained_images` moves after each block of images (at most one write a second).

    `placement` runs the same stages elsewhere (`core.engine.ray.RayPlacement`: a local Ray, a running
    cluster): same tables, same run folder. None: in this process.

    A classifier whose classes are not the dataset's (an ImageNet classifier on ImageNet-9 or on ImageNet
    class folders) is read in the dataset's classes first (core.models.label_space; the manifest says how),
    and one that cannot be is refused: its predictions could not be scored against the labels.
    """
    from core.engine.words import WordExtractor
    from core.models.label_space import read_in_dataset_classes

    classifier = read_in_dataset_classes(classifier, dataset)
    cfg = cfg or ExplainConfig()
    extractor = extractor or WordExtractor()
    if placement is not None:
        return placement.explain_dataset(dataset, classifier, translator, lm, out_dir, cfg, split=split, name=name,
                                         extractor=extractor, progress=progress, should_stop=should_stop,
                                         max_shards=max_shards, show_progress=show_progress,
                                         extra_manifest=extra_manifest, force=force, max_images=max_images)
    explainer = Explainer(classifier, translator, lm, cfg, extractor)
    on_gpu = explainer.compute.device.type == "cuda"
    explainer.cfg = replace(explainer.cfg, num_workers=cfg.num_workers if cfg.num_workers is not None else
                            (min(8, max(1, (os.cpu_count() or 2) - 1)) if on_gpu else 0))
    dtype = str(explainer.compute.dtype).removeprefix("torch.")
    plan = start_run(dataset, split, classifier, translator, lm, out_dir, explainer.cfg, name,
                     settings={**explainer.cfg.sampling_settings(), "dtype": dtype}, device=explainer.compute.label,
                     extra_manifest=extra_manifest, force=force, max_shards=max_shards, max_images=max_images)
    return _explain_here(plan, explainer, extractor, progress, should_stop, show_progress)


def _explain_here(plan: RunPlan, explainer: Explainer, extractor, progress, should_stop, show_progress) -> Run:
    from tqdm.auto import tqdm

    run, shards, cfg = plan.run, plan.shards, explainer.cfg
    total, done_images = plan.total_images, plan.done_images
    bar = tqdm(total=total, initial=done_images, unit="img", desc=f"explain {plan.manifest['name']}",
               disable=not show_progress)
    writer = _ShardWriter(run, {s: shards[s] for s in plan.todo}, total, plan.ds,
                          explainer.classifier.class_names, cfg, extractor, explained=done_images)
    stream = _Stream(explainer, writer, images_per_call(cfg, explainer.compute.device.type == "cuda"))
    t0, n_new, stopped = time.time(), 0, False

    def report_written() -> None:
        nonlocal done_images, n_new
        bar.update(stream.taken - (bar.n - plan.done_images))  # the bar moves per block, not per shard
        if stream.sentences:
            bar.set_postfix(sent_s=f"{stream.sentences / max(time.time() - t0, 1e-9):.0f}")
        for s in writer.newly_written():
            done_images += len(shards[s])
            n_new += len(shards[s])
            rate = n_new / max(time.time() - t0, 1e-9)
            if progress:
                progress(done_images, total, {"shard": s, "images_per_s": rate})

    try:
        for batch in _decode_batches(plan.items(), plan.ds, explainer):
            if should_stop and should_stop():
                stopped = True  # images decoded or sampled for unwritten shards are redone on resume
                break
            stream.push(batch)
            report_written()
        if not stopped:
            stream.flush()
        writer.close()
    except BaseException as exc:
        writer.close(raise_errors=False)
        abandon_run(run, exc)  # the written shards stay; the same call resumes after them
        raise
    finally:
        writer.close(raise_errors=False)
        bar.close()
    report_written()
    elapsed = max(time.time() - t0, 1e-9)
    throughput = {"images_per_s": round(stream.images / elapsed, 3),
                  "sentences_per_s": round(stream.sentences / elapsed, 1),
                  "mean_rows_per_batch": round(stream.rows / stream.calls, 1) if stream.calls else None,
                  "batch_rows": cfg.batch_rows, "image_batch": cfg.image_batch, "num_workers": cfg.num_workers,
                  "images_per_call": stream.per_call,
                  # where the wall time went: the main thread's stages, then the writer thread's (which overlap)
                  "seconds": {"total": round(elapsed, 3),
                              **{k: round(v, 3) for k, v in {**explainer.stages.seconds,
                                                             **writer.stages.seconds}.items()}}}
    end_run(run, len(shards), stopped, rate_images_per_s=round(n_new / elapsed, 3), throughput=throughput)
    return run


# --- the stream's stages ---------------------------------------------------------------------

class _DecodeImages(torch.utils.data.Dataset):
    """(shard, record) -> (position, preprocessed image or None, error or None); runs in DataLoader workers."""

    def __init__(self, items, load_image, preprocess):
        self.items, self.load_image, self.preprocess = items, load_image, preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from core.data import DatasetError

        try:
            return i, self.preprocess(self.load_image(self.items[i][1])), None
        except DatasetError as exc:  # an unreadable image is recorded and skipped, never fatal
            return i, None, str(exc)


def _decode_batches(items, ds, explainer: Explainer):
    """Batches of cfg.image_batch decoded items, in order: [(item, tensor | None, error | None), ...]."""
    cfg = explainer.cfg
    loader = torch.utils.data.DataLoader(
        _DecodeImages(items, ds.load_image, picklable_preprocess(explainer.classifier)), batch_size=cfg.image_batch,
        shuffle=False, num_workers=cfg.num_workers, collate_fn=list, prefetch_factor=4 if cfg.num_workers else None,
        pin_memory=explainer.compute.device.type == "cuda")
    batches = iter(loader)
    while True:
        with explainer.stages("wait_for_images"):  # decoding itself runs in the loader's workers (num_workers > 0)
            batch = next(batches, None)
        if batch is None:
            return
        yield [(items[i], x, err) for i, x, err in batch]


class _Stream:
    """Decoded images gather into blocks of `per_call` (unreadable ones included, so that every placement cuts
    the stream at the same images); a block's readable images go through one `explain_batch` call, and the
    results to the writer thread.

    With sentences_per_image="auto" a block is classified and translated, and its images join an
    AdaptiveSampler that outlives the block: a sampler call runs once batch_rows sequences wait (images under
    way first, then new ones), so images that stop early leave room for the next block's, and every call but
    the last ones is full."""

    def __init__(self, explainer: Explainer, writer: "_ShardWriter", per_call: int):
        self.explainer, self.writer, self.per_call = explainer, writer, per_call
        self.block: list[tuple] = []  # (item, tensor | None, error | None)
        self.images = self.rows = self.calls = self.sentences = self.added = 0
        self.taken = 0  # images handed to the writer, unreadable ones included (the progress bar's count)
        self.sampler = explainer.adaptive_sampler() if explainer.cfg.adaptive else None
        self.probs: dict[int, tuple] = {}  # auto: an image under way -> (item, its probabilities)

    def push(self, batch) -> None:
        self.block += batch
        while len(self.block) >= self.per_call:
            self._explain(self.per_call)

    def flush(self) -> None:
        while self.block:
            self._explain(min(self.per_call, len(self.block)))
        if self.sampler is not None:
            self._sample(full_only=False)

    def _explain(self, count: int) -> None:
        take, self.block = self.block[:count], self.block[count:]
        for (shard, r), _, err in take:
            if err is not None:
                self.writer.put(("failed", shard, r, err))
        ok = [(item, x) for item, x, err in take if err is None]
        self.taken += len(take) - len(ok)
        if not ok:
            return
        x, ids = torch.stack([x for _, x in ok]), [r.image_id for (_, r), _ in ok]
        if self.sampler is not None:
            from core.engine.sampling import image_key

            probs, prefixes, blocked = self.explainer.classify_translate(x, ruled_out=True)
            for (item, _), p, prefix, image_id, off in zip(ok, probs, prefixes, ids, blocked):
                self.added += 1
                self.probs[self.added] = (item, p)
                self.sampler.add(self.added, prefix, image_key(image_id, self.explainer.cfg.seed),
                                 self.explainer.screen(off))
            self._sample(full_only=True)
            return
        probs, sentences = self.explainer.explain_batch(x, ids)
        n, cfg = len(ok), self.explainer.cfg
        self.images += n
        self.rows += n * cfg.sentences_per_image  # (a scene gate's draws again are not counted here)
        self.sentences += sum(map(len, sentences))  # kept: a gated image may keep fewer
        self.calls += math.ceil(n / max(1, cfg.batch_rows // cfg.sentences_per_image))  # the sampler's chunks
        self.writer.put(("explained", [item for item, _ in ok], probs, sentences))
        self.taken += n

    def _sample(self, full_only: bool) -> None:
        """auto: sampler calls while a full one waits (or, at the end, until every image is done)."""
        sampler = self.sampler
        while sampler.waiting and (not full_only or sampler.pending_rows >= sampler.batch_rows):
            rows = sampler.rows
            with self.explainer.stages("sample"):
                done = sampler.step()
            self.calls += 1
            self.rows += sampler.rows - rows
            if not done:
                continue
            items = [self.probs.pop(tag) for tag, _ in done]
            self.images += len(done)
            self.sentences += sum(len(s) for _, s in done)
            self.writer.put(("explained", [item for item, _ in items], torch.stack([p for _, p in items]),
                             [s for _, s in done]))
            self.taken += len(done)


class _ShardWriter:
    """Word counting, row building and shard writes in a background thread, while the LM works.

    A shard is written (atomically, by the store) as soon as all its images have arrived, in the same row
    order as ever: readable images, then unreadable ones, each in dataset order (with sentences_per_image
    "auto" images arrive in the order they settle).
    """

    PROGRESS_EVERY_S = 1.0  # manifest writes of progress.explained_images, at most one a second

    def __init__(self, run: Run, shard_records: dict[int, list], total_images: int, ds, class_names, cfg, extractor,
                 explained: int = 0):
        self.run, self.total = run, total_images
        self.sizes = {s: len(records) for s, records in shard_records.items()}
        self.position = {(s, r.image_id): i for s, records in shard_records.items() for i, r in enumerate(records)}
        self.explained, self.explained_before = explained, explained  # images done, in shards or pending
        self.noted_at = 0.0
        self.ds, self.class_names, self.cfg, self.extractor = ds, class_names, cfg, extractor
        self.stages = StageTimer()
        self.inbox: queue.Queue = queue.Queue(maxsize=8)  # bounded: a slow disk holds the GPU back, not memory
        self.pending: dict[int, dict] = {}
        self.written: queue.Queue = queue.Queue()
        self.t0, self.images_written = time.time(), 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="explain-shard-writer", daemon=True)
        self.thread.start()

    def put(self, item) -> None:
        self._raise()
        while True:
            try:
                self.inbox.put(item, timeout=1.0)
                return
            except queue.Full:
                self._raise()

    def newly_written(self) -> list[int]:
        out = []
        while not self.written.empty():
            out.append(self.written.get_nowait())
        self._raise()
        return out

    def close(self, raise_errors: bool = True) -> None:
        if self.thread.is_alive():
            self.inbox.put(None)
            self.thread.join()
        if raise_errors:
            self._raise()

    def _raise(self) -> None:
        if isinstance(self.error, TExplainError):  # e.g. a full disk, said in words by the store
            raise self.error
        if self.error is not None:
            raise RuntimeError(f"writing the run's shards failed: {self.error}") from self.error

    def _work(self) -> None:
        while True:
            item = self.inbox.get()
            if item is None:
                if self.error is None:
                    try:
                        self._note_progress(force=True)
                    except BaseException as exc:  # noqa: BLE001
                        self.error = exc
                return
            if self.error is not None:
                continue  # keep draining so the producer never blocks
            try:
                self._take(item)
                self._note_progress()
            except BaseException as exc:  # handed to the main thread, which raises it
                self.error = exc

    def _note_progress(self, force: bool = False) -> None:
        """progress.explained_images (and the rate) in the manifest, at most once a second: what a job's
        progress bar and time left read between shards."""
        now = time.time()
        if not force and now - self.noted_at < self.PROGRESS_EVERY_S:
            return
        self.noted_at = now
        progress = self.run.manifest.get("progress") or {}
        if progress.get("explained_images") == self.explained:
            return
        rate = (self.explained - self.explained_before) / max(now - self.t0, 1e-9)
        self.run.update_manifest(progress={**progress, "explained_images": self.explained},
                                 rate_images_per_s=round(rate, 3))

    def _shard(self, s: int) -> dict:
        return self.pending.setdefault(s, {"explained": [], "failed": [], "n": 0})

    def _take(self, item) -> None:
        if item[0] == "failed":
            _, s, r, err = item
            self._shard(s)["failed"].append(failed_image_row(r, err, self.ds))
            self._done(s, 1)
            return
        _, take, probs, sentences = item
        with self.stages("count_words"):
            counts = self.extractor.count_many(sentences)
        conf, pred = probs.max(-1)
        for (s, r), c, p, sents, cnt in zip(take, conf.tolist(), pred.tolist(), sentences, counts):
            sh = self._shard(s)
            image, words, kept = explained_rows(r, p, c, sents, cnt, self.ds, self.class_names,
                                                self.cfg.keep_sentences)
            sh["explained"].append((self.position[(s, r.image_id)], image, words, kept))
            self._done(s, 1)

    def _done(self, s: int, k: int) -> None:
        sh = self.pending[s]
        sh["n"] += k
        self.explained += k
        if sh["n"] == self.sizes[s]:
            explained = sorted(sh["explained"], key=lambda e: e[0])
            images = [image for _, image, _, _ in explained] + sh["failed"]
            words = [w for _, _, ws, _ in explained for w in ws]
            sentences = [t for _, _, _, kept in explained for t in kept]
            with self.stages("write_shard"):
                self.run.write_shard(s, *shard_tables(images, words, sentences), total_images=self.total)
            self.images_written += self.sizes[s]
            # Read by the dashboard's job list for its time-left estimate (this thread owns the manifest now).
            self.run.update_manifest(rate_images_per_s=round(self.images_written / max(time.time() - self.t0, 1e-9), 3))
            del self.pending[s]
            self.written.put(s)

