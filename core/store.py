"""The run store: one folder per explanation run, written in shards, read with DuckDB.

Layout of a run folder::

    manifest.json              what was run, with which models and settings, status and progress
    images/shard-00000.parquet image_id, path, split, label, label_name, prediction, prediction_name,
                               confidence, group, place, n_sentences, error (unreadable images)
    words/shard-00000.parquet  image_id, word, count (occurrences), sentences (sentences that use it)
    sentences/shard-00000.parquet  image_id, idx, text      (a sample per image)

A shard is a fixed slice of the dataset's images, written atomically (temp file + rename) and
then recorded in the manifest, so a run killed half-way resumes at the first missing shard and
never loses or duplicates rows. The same files are what one worker of a distributed run writes.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

MANIFEST = "manifest.json"
MITIGATION_FILE = "mitigation.json"  # written by core.mitigate, read by the report and the dashboard
TABLES = ("images", "words", "sentences")
SCHEMA_VERSION = 1

IMAGE_COLUMNS = ["image_id", "path", "split", "label", "label_name", "prediction", "prediction_name",
                 "confidence", "group", "place", "n_sentences", "error"]
WORD_COLUMNS = ["image_id", "word", "count", "sentences"]
SENTENCE_COLUMNS = ["image_id", "idx", "text"]
COLUMNS = {"images": IMAGE_COLUMNS, "words": WORD_COLUMNS, "sentences": SENTENCE_COLUMNS}


class RunStoreError(RuntimeError):
    """A run folder is missing, incomplete or not a run."""


def package_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "nltk", "streamlit", "pandas", "duckdb"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


@dataclass
class Run:
    """A run folder. `Run.create` starts one, `Run.open` reads one."""

    path: Path

    # --- writing -----------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, manifest: dict, exist_ok: bool = True) -> "Run":
        """Start a run, or return the existing one when its settings match (resume)."""
        path = Path(path)
        mpath = path / MANIFEST
        if mpath.exists():
            if not exist_ok:
                raise RunStoreError(f"a run already exists at {path}")
            run = cls(path)
            old = run.manifest
            for key in ("settings", "models", "dataset"):
                if key in manifest and old.get(key) != manifest[key]:
                    raise RunStoreError(
                        f"{path} holds a run with different {key} ({old.get(key)} vs {manifest[key]}); "
                        "choose another output folder or delete it to start over")
            return run
        path.mkdir(parents=True, exist_ok=True)
        for t in TABLES:
            (path / t).mkdir(exist_ok=True)
        base = {"schema_version": SCHEMA_VERSION, "created": _now(), "status": "running",
                "progress": {"done_images": 0, "total_images": None, "done_shards": []},
                "versions": package_versions()}
        _write_json_atomic(mpath, {**base, **manifest})
        return cls(path)

    def update_manifest(self, **fields) -> dict:
        m = self.manifest
        m.update(fields)
        m["updated"] = _now()
        _write_json_atomic(self.path / MANIFEST, m)
        return m

    def done_shards(self) -> set[int]:
        """Shards recorded in the manifest whose files are all present."""
        done = set(self.manifest.get("progress", {}).get("done_shards", []))
        return {s for s in done if (self.path / "images" / f"shard-{s:05d}.parquet").exists()}

    def write_shard(self, shard: int, images: pd.DataFrame, words: pd.DataFrame, sentences: pd.DataFrame,
                    total_images: int | None = None) -> None:
        for name, df in (("images", images), ("words", words), ("sentences", sentences)):
            missing = [c for c in COLUMNS[name] if c not in df.columns]
            if missing:
                raise RunStoreError(f"{name} shard is missing columns {missing}")
            out = self.path / name / f"shard-{shard:05d}.parquet"
            tmp = out.with_name(out.name + ".tmp")
            df[COLUMNS[name]].to_parquet(tmp, index=False, compression="zstd")  # every sentence is kept: compact
            os.replace(tmp, out)
        # The manifest is written last: a shard counts only once all three tables are on disk.
        m = self.manifest
        prog = m.setdefault("progress", {})
        done = sorted(set(prog.get("done_shards", [])) | {shard})
        prog["done_shards"] = done
        sizes = prog.setdefault("shard_sizes", {})
        sizes[str(shard)] = len(images)  # keyed by shard, so a shard redone after a crash counts once
        prog["done_images"] = sum(sizes[str(s)] for s in done if str(s) in sizes)
        if total_images is not None:
            prog["total_images"] = total_images
        self.update_manifest(progress=prog)

    def finish(self, **fields) -> None:
        self.update_manifest(status="complete", finished=_now(), **fields)

    # --- reading -----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        path = Path(path)
        if not (path / MANIFEST).exists():
            raise RunStoreError(f"{path} is not a run folder (no {MANIFEST})")
        return cls(path)

    @property
    def manifest(self) -> dict:
        try:
            return json.loads((self.path / MANIFEST).read_text())
        except json.JSONDecodeError as exc:
            raise RunStoreError(f"{self.path / MANIFEST} is not valid JSON: {exc}") from exc

    def image_path(self, path: str) -> Path:
        return resolve_image_path(self.manifest, path)

    @property
    def name(self) -> str:
        return self.manifest.get("name") or self.path.name

    @property
    def status(self) -> str:
        return self.manifest.get("status", "unknown")

    def _files(self, table: str) -> list[str]:
        done = self.done_shards()
        return [str(self.path / table / f"shard-{s:05d}.parquet") for s in sorted(done)]

    def table(self, table: str) -> pd.DataFrame:
        """A whole table as a DataFrame (only completed shards)."""
        if table not in TABLES:
            raise ValueError(f"table must be one of {TABLES}, got {table!r}")
        files = self._files(table)
        if not files:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS[table]})
        return self.query(f"SELECT * FROM {table}")

    def images(self) -> pd.DataFrame:
        return self.table("images")

    def words(self) -> pd.DataFrame:
        return self.table("words")

    def sentences(self, image_ids: Iterable[str] | None = None) -> pd.DataFrame:
        if image_ids is None:
            return self.table("sentences")
        ids = list(image_ids)
        if not ids or not self._files("sentences"):
            return pd.DataFrame(columns=SENTENCE_COLUMNS)
        return self.query("SELECT * FROM sentences WHERE image_id IN (SELECT unnest(?)) ORDER BY image_id, idx",
                          [ids])

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """Run SQL over views `images`, `words` and `sentences` of this run."""
        import duckdb

        con = duckdb.connect()
        try:
            for t in TABLES:
                files = self._files(t)
                if files:
                    con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet({files!r})")
            return con.execute(sql, params or []).df()
        finally:
            con.close()


def read_mitigation_records(run_path: str | Path) -> tuple[list[dict] | None, str | None]:
    """A run folder's mitigation.json as a list of result dicts: (records, None), (None, None) when there
    is no file, or (None, what is wrong with it)."""
    path = Path(run_path) / MITIGATION_FILE
    if not path.exists():
        return None, None
    try:
        records = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"{path} is not valid JSON ({exc})"
    if isinstance(records, dict):
        records = records.get("results", [records])
    if not isinstance(records, list) or not all(isinstance(r, dict) and "method" in r for r in records):
        return None, f"{path} should hold a list of objects with a 'method' and before/after accuracies"
    return records, None


def portable_root(root: str | Path) -> str:
    """A dataset root as stored in a manifest: relative to the repo when inside it (shipped runs)."""
    from core import paths

    root = Path(root).resolve()
    try:
        return str(root.relative_to(paths.ROOT))
    except ValueError:
        return str(root)


def resolve_image_path(manifest: dict, path: str) -> Path:
    """The file of an `images.path` value: relative paths are under the run's dataset root."""
    from core import paths

    p = Path(path)
    if p.is_absolute():
        return p
    root = Path(manifest.get("dataset", {}).get("root") or ".")
    return (root if root.is_absolute() else paths.ROOT / root) / p


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
