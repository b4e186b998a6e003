"""What every rendered world's builder does the same way: render a plan in chunks forked over a few processes,
into a temporary folder next to the destination that replaces the old world only once it is complete, so a
crash or Ctrl-C leaves the previous world in place, never half of a new one."""
from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def building(out_dir: Path) -> Iterator[Path]:
    """A fresh temporary folder beside `out_dir`; on a clean exit it becomes `out_dir`, on an error it is removed."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        yield tmp
        replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(tmp: Path, out_dir: Path) -> None:
    """Put `tmp` where `out_dir` is: the old folder is renamed aside first, so the swap is two renames."""
    if out_dir.exists():
        trash = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(trash)
        shutil.rmtree(trash)
    tmp.rename(out_dir)


def run_jobs(render_chunk: Callable[[tuple[list[dict], str]], int], plan: list[dict], out_dir: Path,
             workers: int | None) -> None:
    """Render `plan` in chunks, forked over at most `workers` processes (the sources are loaded before the
    fork, so the workers share them instead of each reading every photo)."""
    workers = max(1, workers or min(2, os.cpu_count() or 1))
    jobs = [(plan[i::workers * 4], str(out_dir)) for i in range(workers * 4)]
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            sum(pool.imap_unordered(render_chunk, jobs))
    else:
        for job in jobs:
            render_chunk(job)
