"""Aggregates of a run kept on disk, keyed by the run's fingerprint, so that a second open of a large run is instant.

    cells = cached_frame(run, "word-cells", {"version": 1}, lambda: expensive_query(run))

A cached table is a Parquet file `<name>-<fingerprint>-<params>.parquet` in the run's `analysis-cache/` folder,
or, for a shipped run (tracked in checkpoints/), in the user's overlay for it (core.store.user_file): the
repository is never written. A run that changes (a shard added, rewritten or lost) has another fingerprint
(`Run.fingerprint`): its old files are deleted when the new ones are written. A folder that cannot be written
(a read-only disk) only costs the recomputation. The files read back are also kept in memory (a few dozen,
most recently used first): callers must treat a returned frame as read-only.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import pandas as pd

from core.store.run import Run, user_file

CACHE_FOLDER = "analysis-cache"
CACHE_VERSION = 1  # bump when what a cached table holds changes, so older files are not read
MEMORY_ENTRIES = 64

_MEMORY: OrderedDict[str, pd.DataFrame] = OrderedDict()


def cache_folder(run_path: str | Path) -> Path:
    """Where a run's cached aggregates live: `<run>/analysis-cache`, or the user's overlay for a shipped run."""
    return user_file(Path(run_path), CACHE_FOLDER)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_file(run: Run, name: str, params: dict | None = None, fingerprint: str | None = None) -> Path:
    """The file that holds (or will hold) aggregate `name` with `params` for the run as it is now."""
    fingerprint = fingerprint or run.fingerprint()
    return cache_folder(run.path) / f"{name}-{fingerprint}-{_digest([CACHE_VERSION, name, params])}.parquet"


def cached_frame(run: Run, name: str, params: dict | None, compute: Callable[[], pd.DataFrame],
                 fingerprint: str | None = None) -> pd.DataFrame:
    """Aggregate `name` of `run` (with `params`): read back when the run has not changed since it was computed,
    else `compute()`d and stored. `name` is a short word ("word-cells"); `params` anything JSON can hold."""
    fingerprint = fingerprint or run.fingerprint()
    path = cache_file(run, name, params, fingerprint)
    key = str(path.resolve())
    if key in _MEMORY:
        _MEMORY.move_to_end(key)
        return _MEMORY[key]
    frame = _read(path)
    if frame is None:
        frame = compute()
        _write(frame, path, name, fingerprint)
    _MEMORY[key] = frame
    while len(_MEMORY) > MEMORY_ENTRIES:
        _MEMORY.popitem(last=False)
    return frame


def _read(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pandas()
    except Exception:  # noqa: BLE001  (a truncated or foreign file is recomputed, never trusted)
        return None


def _write(frame: pd.DataFrame, path: Path, name: str, fingerprint: str) -> None:
    """Store `frame` atomically and delete this aggregate's files of other fingerprints (the run changed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
        os.replace(tmp, path)
        for old in path.parent.glob(f"{name}-*.parquet"):
            if not old.name.startswith(f"{name}-{fingerprint}-"):
                old.unlink(missing_ok=True)
    except OSError:  # a read-only run folder: the aggregate is recomputed next time
        tmp.unlink(missing_ok=True)


def clear_memory() -> None:
    """Forget the cached tables held in memory (the files stay)."""
    _MEMORY.clear()
