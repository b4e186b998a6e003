"""Every lookup of runs: the run folders under a root (`list_runs`), the same with broken folders kept and
described for a picker (`discover_runs`), and a run named on a command line (`resolve_run`).

    entries = discover_runs({"shipped": paths.SHIPPED_RUNS, "yours": paths.user_runs()})
    run = resolve_run("demo-erm-test")   # a folder, or a run's name under your runs or the shipped ones
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from core import paths
from core.store.run import MANIFEST, Run, RunStoreError


def run_roots() -> dict[str, Path]:
    """Where runs are listed from, read from the environment on every call (tests and the dashboard change it):
    "shipped", the demo runs (TEXPLAIN_SHIPPED_RUNS, default checkpoints/runs); "yours" (TEXPLAIN_RUNS, default
    runs/)."""
    return {"shipped": Path(os.environ.get("TEXPLAIN_SHIPPED_RUNS") or paths.SHIPPED_RUNS), "yours": paths.user_runs()}


def resolve_run(value: str | Path) -> Run:
    """A run folder path, or the name of a run under your runs folder or the shipped runs."""
    roots = run_roots()
    candidates = list(dict.fromkeys([Path(value), roots["yours"] / str(value), roots["shipped"] / str(value)]))
    for path in candidates:
        if (path / MANIFEST).exists():
            return Run.open(path)
    raise RunStoreError(f"no run at {str(value)!r} (looked in {', '.join(str(c) for c in candidates)})")


@dataclass
class RunEntry:
    """A run folder as the run picker lists it; `error` says why a broken one cannot be opened."""

    path: Path
    folder: str  # the folder's name: what the CLI and the report accept
    location: str  # the key of the root it was found under ("shipped", "yours", ...)
    name: str = ""  # the manifest's display name
    status: str = "unknown"
    created: str = ""
    dataset: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    progress: dict = field(default_factory=dict)
    error: str | None = None
    health: str | None = None  # None for a complete run, else what is partial or damaged (RunHealth.describe)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str:
        """How a picker shows it: folder, status when not complete, where it lives."""
        status = "" if self.status == "complete" else f" · {self.status}"
        return f"{self.folder}{status} ({self.location})"


def discover_runs(roots: dict[str, str | Path]) -> list[RunEntry]:
    """Every run folder directly under each root ({location: folder}), broken ones included with an error.

    Order: by root in the order given, then complete runs before the rest, then newest first.
    """
    out: list[RunEntry] = []
    for location, root in roots.items():
        root = Path(root)
        if not root.is_dir():
            continue
        found = []
        for path in sorted(root.iterdir()):
            if not (path / MANIFEST).is_file():
                continue
            entry = RunEntry(path=path, folder=path.name, location=location)
            try:
                manifest = json.loads((path / MANIFEST).read_text())
                if not isinstance(manifest, dict):
                    raise ValueError("the manifest is not a JSON object")
            except (OSError, ValueError) as exc:
                entry.error = f"{path / MANIFEST} cannot be read: {exc}"
                found.append(entry)
                continue
            entry.name = str(manifest.get("name") or path.name)
            entry.status = str(manifest.get("status", "unknown"))
            entry.created = str(manifest.get("created", ""))
            entry.dataset = manifest.get("dataset") or {}
            entry.models = manifest.get("models") or {}
            entry.progress = manifest.get("progress") or {}
            try:
                health = Run(path).health()  # the shards checked against the manifest
            except RunStoreError as exc:
                entry.error = str(exc)
                found.append(entry)
                continue
            entry.status, entry.health = health.status, health.describe()
            if not health.done_shards:
                entry.error = "no finished shard yet: the run has no images to show" if entry.status in (
                    "running", "starting") else "the run has no finished shard (no images)"
            found.append(entry)
        found.sort(key=lambda e: e.created, reverse=True)
        found.sort(key=lambda e: (e.error is not None, e.status != "complete"))
        out += found
    return out


def list_runs(*roots: str | Path) -> list[Run]:
    """Every run folder directly under the given roots, newest first."""
    runs = []
    for root in roots:
        root = Path(root)
        if root.is_dir():
            runs += [Run(p) for p in root.iterdir() if (p / MANIFEST).exists()]

    def created(run: Run) -> str:
        try:
            return str(run.manifest.get("created", ""))
        except RunStoreError:  # a corrupt manifest sorts last instead of hiding every other run
            return ""

    return sorted(runs, key=created, reverse=True)
