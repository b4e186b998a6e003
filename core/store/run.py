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

Neither writing nor reading trusts the manifest alone. A shard counts as done only when all three of
its tables exist and their Parquet footers read back with the expected columns and row count; the
manifest records a fingerprint of the dataset's records (ids, paths, labels, groups, file sizes and
modification times), so a dataset changed in place is refused on resume instead of mixing old and
new rows; `Run.health()` says whether a run is complete, partial or damaged, and every reader (report,
dashboard, CLI) shows it. While a process writes a run it holds `run.lock` (its pid): a second writer
is refused, and a lock left by a process that died is taken over.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import platform
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

from core import paths
from core.errors import RunLockedError, RunMismatchError, RunStoreError

MANIFEST = "manifest.json"
LOCK_FILE = "run.lock"  # {"pid", "host", "started"} of the process writing the run
MITIGATION_FILE = "mitigation.json"  # written by core.mitigate, read by the report and the dashboard
CAUSAL_FILE = "causal.json"  # causal tests of flags (core.evaluation.causal), read by the report and the dashboard
TABLES = ("images", "words", "sentences")
SCHEMA_VERSION = 1

IMAGE_COLUMNS = ["image_id", "path", "split", "label", "label_name", "prediction", "prediction_name",
                 "confidence", "group", "place", "n_sentences", "error"]
WORD_COLUMNS = ["image_id", "word", "count", "sentences"]
SENTENCE_COLUMNS = ["image_id", "idx", "text"]
COLUMNS = {"images": IMAGE_COLUMNS, "words": WORD_COLUMNS, "sentences": SENTENCE_COLUMNS}




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
    try:
        tmp.write_text(json.dumps(obj, indent=2, default=str))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_error(exc, path) from exc


def disk_error(exc: OSError, path: Path) -> OSError | RunStoreError:
    """A write that failed because the disk (or the user's quota) is full, said in words: a RunStoreError a user
    can act on. Any other OSError comes back as it was."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return exc
    return RunStoreError(f"the disk is full: writing {path} failed ({exc.strerror or exc}). The run keeps every "
                         "shard written before; free some space (or explain into an --out on another disk) and run "
                         "the same command again to resume it")


def dataset_fingerprint(records, root: str | Path) -> dict:
    """What a run's shards were computed from: the records in order (id, path relative to `root`, split,
    label, group, place) and each file's size and modification time. Any change gives another hash."""
    root = Path(root)
    h = hashlib.sha256()
    for r in records:
        try:
            st = os.stat(r.path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        try:
            rel = Path(r.path).relative_to(root).as_posix()
        except ValueError:
            rel = str(r.path)
        h.update(json.dumps([str(r.image_id), rel, r.split, r.label, r.group, getattr(r, "place", None),
                             size, mtime], default=str).encode())
        h.update(b"\n")
    return {"n_records": len(records), "sha256": h.hexdigest()[:24]}


def describe_sample(sample: dict | None) -> str:
    """How a run's manifest says which images it explains: "all images" or "a sample of 200 of 4,795 images
    (seed 0, stratified by group)"."""
    if not sample:
        return "all images"
    of = sample.get("of")
    return (f"a sample of {sample.get('max_images')} of {f'{of:,}' if isinstance(of, int) else '?'} images (seed "
            f"{sample.get('seed')}, stratified by {sample.get('stratified_by', 'group')})")


def describe_sentences(settings: dict | None, sentences: dict | None = None) -> str:
    """How many sentences a run's images got, from its manifest's settings and (adaptive runs) its `sentences`
    record: "32 sentences per image" or "15.1 sentences per image on average (12-20, stopped when their words
    settled)"."""
    per = (settings or {}).get("sentences_per_image")
    if per is None:
        return ""
    if per != "auto":
        return f"{per} sentences per image"
    s = sentences or {}
    if not isinstance(s.get("mean"), (int, float)):
        return "sentences per image chosen as the words settled (auto)"
    return (f"{s['mean']:.1f} sentences per image on average ({s.get('min')}–{s.get('max')}, stopped when their "
            "words settled)")


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    try:  # a zombie still answers kill(0); /proc tells the truth on Linux
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def process_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, Linux), to tell a reused pid from the writer."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


_READ_BACK: dict[tuple, str | None] = {}  # (shard file, expected rows, file stamps) -> problem or None


@dataclass
class RunHealth:
    """A run's shards checked against its manifest: what a reader can trust."""

    status: str  # "complete", "running", "partial" (not finished) or "damaged" (finished shards lost)
    manifest_status: str
    total_shards: int | None
    done_shards: list[int]  # readable shards
    missing_shards: list[int]  # recorded as done, but missing a table or unreadable
    problems: list[str]  # what is wrong with each missing shard
    images_present: int  # images in the readable shards, unreadable ones (recorded with their error) included
    total_images: int | None
    unreadable_images: int | None = None  # of images_present, those that could not be decoded (None: not recorded)

    @property
    def ok(self) -> bool:
        return self.status == "complete"

    def describe(self) -> str | None:
        """One line for a banner or a report header; None for a complete run."""
        if self.ok:
            return None
        of = f"{self.images_present} of {self.total_images if self.total_images is not None else '?'} images"
        if self.status == "damaged":
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            return (f"damaged: {len(self.missing_shards)} finished shard(s) cannot be read: {self.problems[0]}{more}. "
                    f"Numbers cover {of} only; run the same `explain` command again to rebuild the missing shards.")
        if self.status == "running":
            return f"running: {of} explained so far; numbers cover those only."
        return f"partial: {of} explained (the run is {self.manifest_status}); numbers cover those only."


@dataclass
class Run:
    """A run folder. `Run.create` starts one, `Run.open` reads one."""

    path: Path

    # --- writing -----------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, manifest: dict, exist_ok: bool = True, overwrite: bool = False) -> "Run":
        """Start a run, or return the existing one when its settings and data match (resume).

        The calling process becomes the run's writer (see `lock`). `overwrite=True` deletes an existing
        run in `path` and starts over; without it a run of other settings, models or data is refused.
        """
        path = Path(path)
        mpath = path / MANIFEST
        if path.exists() and not path.is_dir():
            raise RunStoreError(f"{path} is a file; a run is a folder")
        if mpath.exists() and not exist_ok and not overwrite:
            raise RunStoreError(f"a run already exists at {path}")
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        run.lock()
        if mpath.exists() and overwrite:
            run._clear()
        if mpath.exists():
            old = run.manifest
            if "dataset" in manifest and (old.get("dataset") or {}).get("sample") != manifest["dataset"].get("sample"):
                run.unlock()
                raise RunMismatchError(
                    f"{path} holds a run of {describe_sample((old.get('dataset') or {}).get('sample'))}, not of "
                    f"{describe_sample(manifest['dataset'].get('sample'))}: other data. Explain into a new --out, "
                    "or pass --force (force=True) to start this run over")
            added = {}
            for key in ("settings", "models", "dataset"):
                if key not in manifest:
                    continue
                mine, theirs = old.get(key), manifest[key]
                if isinstance(mine, dict) and isinstance(theirs, dict):
                    # A field a later version records that this run's manifest lacks is not a difference.
                    added[key] = {k: v for k, v in theirs.items() if k not in mine}
                    theirs = {k: v for k, v in theirs.items() if k in mine}
                if mine != theirs:
                    run.unlock()
                    raise RunMismatchError(
                        f"{path} holds a run with different {key} ({old.get(key)} vs {manifest[key]}); "
                        "choose another output folder, or pass --force (force=True) to start it over")
            if any(added.values()):
                run.update_manifest(**{k: {**old[k], **v} for k, v in added.items() if v})
            new_fp, old_fp = manifest.get("data_fingerprint"), old.get("data_fingerprint")
            if new_fp and old_fp and new_fp != old_fp:
                run.unlock()
                raise RunMismatchError(
                    f"{path} was explained on other data: the dataset's records changed since the run started "
                    f"({old_fp.get('n_records')} images then, {new_fp.get('n_records')} now; ids, paths, labels, "
                    "groups or the image files themselves differ), so its finished shards would mix old and new "
                    "rows. Explain into a new --out, or pass --force (force=True) to start this run over")
            if new_fp and not old_fp:  # a run from before fingerprints: from now on it is checked
                run.update_manifest(data_fingerprint=new_fp)
            return run
        for t in TABLES:
            (path / t).mkdir(exist_ok=True)
        base = {"schema_version": SCHEMA_VERSION, "created": _now(), "status": "running",
                "progress": {"done_images": 0, "total_images": None, "done_shards": []},
                "versions": package_versions()}
        _write_json_atomic(mpath, {**base, **manifest})
        return run

    def _clear(self) -> None:
        """Delete the run's manifest and shards (start over), keeping anything else in the folder."""
        for t in TABLES:
            folder = self.path / t
            for f in folder.glob("shard-*.parquet*") if folder.is_dir() else ():
                f.unlink()
        for name in (MANIFEST, MITIGATION_FILE):
            (self.path / name).unlink(missing_ok=True)

    def lock(self) -> None:
        """Make this process the run's only writer; RunLockedError while another live process is."""
        lock = self.path / LOCK_FILE
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": process_start(os.getpid()),
              "since": _now()}
        for _ in range(3):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._lock_holder()
                if holder is None:  # stale (its process died) or unreadable: take it over
                    tmp = lock.with_name(f"{LOCK_FILE}.{os.getpid()}.tmp")
                    tmp.write_text(json.dumps(me))
                    os.replace(tmp, lock)
                elif holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                    return  # already ours (a resumed call in the same process)
                else:
                    raise RunLockedError(
                        f"{self.path} is being written by another process (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, since {holder.get('since')}); wait for it to finish or stop it. "
                        f"If no such process is writing it, delete {lock}") from None
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(json.dumps(me))
            try:  # two processes taking over the same stale lock: the last rename wins
                if json.loads(lock.read_text()).get("pid") == me["pid"]:
                    return
            except (OSError, ValueError):
                pass
        raise RunLockedError(f"could not lock {self.path} for writing ({lock} keeps changing)")

    def _lock_holder(self) -> dict | None:
        """The live process holding the lock, or None when there is none (no lock, a dead writer)."""
        try:
            holder = json.loads((self.path / LOCK_FILE).read_text())
            pid = int(holder["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if holder.get("host") != socket.gethostname():
            return holder  # another machine's process: it cannot be checked from here
        if not process_alive(pid):
            return None
        started = holder.get("started")
        if started and process_start(pid) not in (None, started):
            return None  # the pid was reused by another process
        return holder

    def unlock(self) -> None:
        """Give up writing (only this process's own lock is removed)."""
        lock = self.path / LOCK_FILE
        try:
            if json.loads(lock.read_text()).get("pid") == os.getpid():
                lock.unlink()
        except (OSError, ValueError, AttributeError):
            pass

    def update_manifest(self, **fields) -> dict:
        m = self.manifest
        m.update(fields)
        m["updated"] = _now()
        _write_json_atomic(self.path / MANIFEST, m)
        if fields.get("status") in ("complete", "partial", "stopped", "failed"):
            self.unlock()  # the writer is done with it
        return m

    def _shard_file(self, table: str, shard: int) -> Path:
        return self.path / table / f"shard-{shard:05d}.parquet"

    def _shard_problem(self, shard: int, expected_rows: int | None) -> str | None:
        """What stops shard `shard` from being read (None: all three tables read back as expected).

        Cached (per process) on the files' sizes and modification times: a reader pays the footer reads
        once, and a rewritten file is read again.
        """
        files = [self._shard_file(t, shard) for t in TABLES]
        stamps = []
        for f in files:
            try:
                st = f.stat()
                stamps.append((st.st_size, st.st_mtime_ns))
            except OSError:
                stamps.append(None)
        key = (str(files[0].resolve()), expected_rows, tuple(stamps))
        if key not in _READ_BACK:
            if len(_READ_BACK) > 100_000:
                _READ_BACK.clear()
            _READ_BACK[key] = self._read_back(shard, files, stamps, expected_rows)
        return _READ_BACK[key]

    @staticmethod
    def _read_back(shard: int, files: list[Path], stamps: list, expected_rows: int | None) -> str | None:
        import pyarrow.parquet as pq

        for table, f, stamp in zip(TABLES, files, stamps):
            if stamp is None:
                return f"shard {shard} has no {table} table ({table}/{f.name} is missing)"
            try:
                meta = pq.read_metadata(f)
            except Exception as exc:  # noqa: BLE001  (any failure to parse is a damaged file)
                return f"{table}/{f.name} cannot be read ({type(exc).__name__}: {exc})"
            names = set(meta.schema.names)
            missing = [c for c in COLUMNS[table] if c not in names]
            if missing:
                return f"{table}/{f.name} lacks the columns {missing}"
            if table == "images" and expected_rows is not None and meta.num_rows != expected_rows:
                return f"{table}/{f.name} has {meta.num_rows} rows; the manifest records {expected_rows}"
        return None

    def done_shards(self) -> set[int]:
        """Shards recorded in the manifest whose three tables all exist and read back."""
        prog = self.manifest.get("progress") or {}
        sizes = prog.get("shard_sizes") or {}
        done = set()
        for s in prog.get("done_shards") or []:
            if isinstance(s, int) and self._shard_problem(s, sizes.get(str(s))) is None:
                done.add(s)
        return done

    def health(self) -> RunHealth:
        """The run's shards checked against its manifest (see RunHealth)."""
        m = self.manifest
        prog = m.get("progress") or {}
        sizes = prog.get("shard_sizes") or {}
        recorded = sorted(s for s in prog.get("done_shards") or [] if isinstance(s, int))
        problems = {s: self._shard_problem(s, sizes.get(str(s))) for s in recorded}
        done = [s for s in recorded if problems[s] is None]
        missing = [s for s in recorded if problems[s] is not None]
        total_shards = prog.get("total_shards")
        present = sum(int(sizes.get(str(s), 0)) for s in done)
        unread = prog.get("shard_unreadable") or {}
        unreadable = sum(int(unread[str(s)]) for s in done) if all(str(s) in unread for s in done) else None
        status = str(m.get("status", "unknown"))
        if missing:
            state = "damaged"
        elif status in ("running", "starting"):
            state = "running"
        elif status != "complete" or (total_shards is not None and len(done) < total_shards):
            state = "partial"
        else:
            state = "complete"
        return RunHealth(state, status, total_shards, done, missing, [problems[s] for s in missing], present,
                         prog.get("total_images"), unreadable)

    def write_shard(self, shard: int, images: pd.DataFrame, words: pd.DataFrame, sentences: pd.DataFrame,
                    total_images: int | None = None) -> None:
        for name, df in (("images", images), ("words", words), ("sentences", sentences)):
            missing = [c for c in COLUMNS[name] if c not in df.columns]
            if missing:
                raise RunStoreError(f"{name} shard is missing columns {missing}")
            out = self.path / name / f"shard-{shard:05d}.parquet"
            tmp = out.with_name(out.name + ".tmp")
            try:
                _write_parquet(df[COLUMNS[name]], tmp)
                os.replace(tmp, out)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise disk_error(exc, out) from exc
        # The manifest is written last: a shard counts only once all three tables are on disk.
        m = self.manifest
        prog = m.setdefault("progress", {})
        done = sorted(set(prog.get("done_shards", [])) | {shard})
        prog["done_shards"] = done
        sizes = prog.setdefault("shard_sizes", {})
        sizes[str(shard)] = len(images)  # keyed by shard, so a shard redone after a crash counts once
        prog["done_images"] = sum(sizes[str(s)] for s in done if str(s) in sizes)
        unread = prog.setdefault("shard_unreadable", {})  # images recorded with an error, not explained
        unread[str(shard)] = int(images["error"].notna().sum()) if "error" in images else 0
        prog["unreadable_images"] = sum(unread[str(s)] for s in done if str(s) in unread)
        if total_images is not None:
            prog["total_images"] = total_images
        self.update_manifest(progress=prog)

    def finish(self, **fields) -> None:
        self.update_manifest(status="complete", finished=_now(), **fields)

    # --- reading -----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        path = Path(path)
        if not (path / MANIFEST).is_file():
            raise RunStoreError(f"{path} is not a run folder (no {MANIFEST})")
        run = cls(path)
        run.manifest  # noqa: B018  (a manifest that cannot be read fails here, with its reason)
        return run

    @property
    def manifest(self) -> dict:
        mpath = self.path / MANIFEST
        try:
            m = json.loads(mpath.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunStoreError(f"{self.path} is not a run folder (no {MANIFEST})") from None
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise RunStoreError(f"{mpath} is not valid JSON: {exc}") from exc
        if not isinstance(m, dict):
            raise RunStoreError(f"{mpath} is not a run manifest: it holds a JSON {type(m).__name__}, "
                                "not an object")
        for key in ("progress", "dataset", "models", "settings"):
            if key in m and m[key] is not None and not isinstance(m[key], dict):
                raise RunStoreError(f"{mpath}: {key!r} should be a JSON object, got {type(m[key]).__name__}")
        return m

    def image_path(self, path: str) -> Path:
        return resolve_image_path(self.manifest, path)

    @property
    def dataset_root(self) -> Path:
        return dataset_root(self.manifest)

    @property
    def name(self) -> str:
        return self.manifest.get("name") or self.path.name

    @property
    def status(self) -> str:
        return self.manifest.get("status", "unknown")

    def _files(self, table: str, done: set[int] | None = None) -> list[str]:
        done = self.done_shards() if done is None else done
        return [str(self._shard_file(table, s)) for s in sorted(done)]

    def shard_files(self, table: str) -> list[str]:
        """The Parquet files of one table ("images", "words" or "sentences") in the readable shards, in order."""
        if table not in TABLES:
            raise ValueError(f"table must be one of {TABLES}, got {table!r}")
        return self._files(table)

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

    def fingerprint(self) -> str:
        """What the run's tables hold, in 24 hex digits: the shards the manifest records as done, their sizes and
        every shard file's size and modification time. A shard added, rewritten or lost gives another value;
        reading it costs one stat per file (no Parquet footer), so a cache keyed by it is checked at once."""
        prog = self.manifest.get("progress") or {}
        shards = sorted(s for s in prog.get("done_shards") or [] if isinstance(s, int))
        h = hashlib.sha256(json.dumps([shards, prog.get("shard_sizes") or {}], sort_keys=True, default=str).encode())
        for s in shards:
            for t in TABLES:
                try:
                    st = self._shard_file(t, s).stat()
                    h.update(f"{t}:{s}:{st.st_size}:{st.st_mtime_ns};".encode())
                except OSError:
                    h.update(f"{t}:{s}:missing;".encode())
        return h.hexdigest()[:24]

    def connect(self, bounded: bool = False, positions: bool = False):
        """A DuckDB connection with views `images`, `words` and `sentences` over the run's readable shards (close
        it when done). `bounded`: analysis settings (memory capped at TEXPLAIN_DUCKDB_MEMORY, default 1GB,
        spilling to a temporary folder; row order not kept). `positions`: `images` gets a column `_pos`, each
        image's place in the run (shard, then row): what "first seen" means for the in-memory tables."""
        done = self.done_shards()  # once: every view reads the same, fully readable shards
        con = duckdb_connection(bounded)
        try:
            for t in TABLES:
                files = self._files(t, done)
                if not files:
                    continue
                # union_by_name: a column that is all null in one shard (no unreadable image there, no
                # words) is typed NULL in it; the shards are read as one table all the same.
                if t == "images" and positions:
                    con.execute(f"CREATE VIEW images AS SELECT * EXCLUDE (filename, file_row_number), "
                                r"(CAST(regexp_extract(filename, 'shard-(\d+)', 1) AS BIGINT) << 32) + file_row_number "
                                f"AS _pos FROM read_parquet({files!r}, union_by_name=true, filename=true, "
                                "file_row_number=true)")
                else:
                    con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet({files!r}, union_by_name=true)")
        except BaseException:
            con.close()
            raise
        return con

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """Run SQL over views `images`, `words` and `sentences` of this run."""
        con = self.connect()
        try:
            return run_sql(con, sql, params, self.path)
        finally:
            con.close()


def duckdb_connection(bounded: bool = False):
    """A new in-memory DuckDB connection; `bounded` (analysis): memory capped at TEXPLAIN_DUCKDB_MEMORY (default
    1GB) with spilling to a temporary folder, insertion order not kept (an aggregate needs none)."""
    import tempfile

    import duckdb

    if not bounded:
        return duckdb.connect()
    return duckdb.connect(config={
        "memory_limit": os.environ.get("TEXPLAIN_DUCKDB_MEMORY") or "1GB",
        "temp_directory": str(Path(tempfile.gettempdir()) / "texplain-duckdb"),
        "preserve_insertion_order": False})


@contextlib.contextmanager
def reading_shards(where: Path | str) -> Iterator[None]:
    """DuckDB reading a run's shards: a shard whose data cannot be read is a RunStoreError naming the run."""
    import duckdb

    try:
        yield
    except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException):
        raise  # the SQL is wrong, not the run
    except duckdb.Error as exc:  # a shard whose footer reads but whose data does not
        raise RunStoreError(f"{where}: a shard of this run cannot be read ({_first_line(exc)}); "
                            "the run is damaged: run the same `explain` command with --force to "
                            "rebuild it") from exc


def run_sql(con, sql: str, params: list | None, where: Path | str) -> pd.DataFrame:
    """`sql` on `con` as a DataFrame; a shard whose data cannot be read is a RunStoreError naming the run."""
    with reading_shards(where):
        return con.execute(sql, params or []).df()


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    """A shard's table as Parquet (zstd: every sentence is kept, so compact). A column with no value in this
    shard (no unreadable image, hence no error; an empty words table) is written as text, not as Parquet's
    NULL type, which other shards' text could not be read into."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    for i, f in enumerate(table.schema):
        if pa.types.is_null(f.type):
            table = table.set_column(i, pa.field(f.name, pa.string()), table.column(i).cast(pa.string()))
    pq.write_table(table, path, compression="zstd")


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


SHIPPED_OVERLAY = ".shipped"  # under the user's runs: what a user's actions on a shipped run write


def user_file(run_path: str | Path, filename: str) -> Path:
    """Where a file that a user's action writes about a run goes (marks, mitigation results).

    The run folder itself, except for a shipped run (in the tracked checkpoints/): its files go to
    `<user runs>/.shipped/<run folder>/`, so that using the demo never changes the repository.
    """
    run_path = Path(run_path)
    if paths.is_shipped(run_path):
        return paths.user_runs() / SHIPPED_OVERLAY / run_path.name / filename
    return run_path / filename


def run_files(run_path: str | Path, filename: str) -> dict[str, Path]:
    """The existing copies of a run's file: {"shipped": in a shipped run's folder, "yours": the user's}."""
    run_path = Path(run_path)
    mine, own = user_file(run_path, filename), run_path / filename
    found = {}
    if mine != own and own.exists():
        found["shipped"] = own
    if mine.exists():
        found["yours"] = mine
    return found


def read_mitigation_records(run_path: str | Path, source: str | None = None) -> tuple[list[dict] | None, str | None]:
    """A run's mitigation results as a list of result dicts: (records, None), (None, None) when there are
    none, or (None, what is wrong with a file). Each record gets a "source": "shipped" (recorded with a
    shipped demo run) or "yours" (written by your own mitigation run); `source` keeps only one of them."""
    files = run_files(run_path, MITIGATION_FILE)
    if source is not None:
        files = {k: v for k, v in files.items() if k == source}
    out: list[dict] = []
    for origin, path in files.items():
        records, problem = _read_mitigation_file(path)
        if problem:
            return None, problem
        out += [{**r, "source": origin} for r in records]
    return (out, None) if files else (None, None)


def describe_gain(record: dict) -> str:
    """'+38 pts (+24 to +50)': a mitigation record's worst-group change and its 95% interval, where it has one."""
    before, after = record.get("worst_group_before"), record.get("worst_group_after")
    if before is None or after is None:
        return "–"
    ci = (record.get("intervals") or {}).get("worst_group_change")
    spread = f" ({100 * ci[0]:+.0f} to {100 * ci[1]:+.0f})" if ci else ""
    return f"{100 * (after - before):+.0f} pts{spread}"


def _read_mitigation_file(path: Path) -> tuple[list[dict] | None, str | None]:
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
    root = Path(root).resolve()
    try:
        return str(root.relative_to(paths.ROOT))
    except ValueError:
        return str(root)


def dataset_key(manifest: dict) -> dict:
    """What data a run explains, from its manifest: dataset name, root (absolute), split and classes. Two runs
    with the same key hold the same images."""
    d = manifest.get("dataset") or {}
    root = d.get("root")
    if root:
        p = Path(root)
        root = str((p if p.is_absolute() else paths.ROOT / p).resolve())
    return {"name": d.get("name"), "root": root, "split": d.get("split"),
            "class_names": list(d.get("class_names") or [])}


def dataset_root(manifest: dict) -> Path:
    """The folder of a run's dataset (a relative root is under the repository)."""
    root = Path(manifest.get("dataset", {}).get("root") or ".")
    return root if root.is_absolute() else paths.ROOT / root


def resolve_image_path(manifest: dict, path: str) -> Path:
    """The file of an `images.path` value: relative paths are under the run's dataset root."""
    p = Path(path)
    return p if p.is_absolute() else dataset_root(manifest) / p
