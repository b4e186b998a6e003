"""Captioned images in the shard formats of the Hugging Face hub, read from a local folder (never downloaded).

- Parquet, as `datasets` writes and the hub serves them (`data/train-00000-of-00004.parquet`): an image
  column (the `Image` feature: a struct of `bytes` and `path`, or raw bytes) and a caption column (a string
  or a list of strings, as COCO-style datasets keep five captions per image).
- WebDataset tar shards (`train-000000.tar`): files sharing a key, `KEY.jpg|jpeg|png|webp` and a caption in
  `KEY.txt` / `KEY.caption` or `KEY.json` (its "caption", "text" or "captions" field).

Translator training reads images from files, so each image is written once into a cache folder named after
the shards (resumable: images already there are not written again), checked to decode, and the captions come
back as the other caption readers' DataFrame: path, caption and split (from the shard's name: train,
validation/val, test; else none). Images that do not decode are skipped and counted, never fatal unless all are.

    pairs = read_parquet_captions("~/data/coco-captions")     # texplain train --captions hf:FOLDER
    pairs = read_webdataset_captions("~/data/cc3m-shards")   # texplain train --captions wds:FOLDER
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

from core import paths
from core.data.records import MAX_LISTED
from core.errors import DatasetError

IMAGE_COLUMNS = ("image", "img", "jpg", "png", "webp", "image_bytes")
CAPTION_COLUMNS = ("caption", "captions", "text", "sentences", "txt", "sentence", "alt_text")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
CAPTION_SUFFIXES = (".txt", ".caption")
CACHE = paths.ASSETS / "cache" / "caption-images"


def split_of(shard: str) -> str | None:
    """The split a shard's name states: train, val (validation, valid, dev) or test; None when it says none."""
    tokens = set(re.split(r"[-_.\s]+", Path(shard).name.lower()))
    for split, words in (("train", ("train",)), ("val", ("validation", "valid", "val", "dev")), ("test", ("test",))):
        if tokens & set(words):
            return split
    return None


def cache_dir(source: Path, cache: str | Path | None) -> Path:
    """One cache folder per shard folder (by its absolute path), so two datasets never share files."""
    key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]
    return Path(cache) if cache is not None else CACHE / f"{source.name}-{key}"


def _captions(value) -> list[str]:
    """A caption cell as a list of non-empty strings (a string, a list of strings, or a JSON-decoded value)."""
    if value is None:
        return []
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        value = [value]
    try:
        items = list(value)
    except TypeError:
        return []
    return [s.strip() for s in items if isinstance(s, str) and s.strip()]


def _image_suffix(data: bytes) -> str | None:
    """The file suffix of an encoded image, from its magic bytes; None when it does not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
            fmt = (im.format or "").lower()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None
    return {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "gif": ".gif", "bmp": ".bmp"}.get(fmt, ".img")


class _Writer:
    """Writes each decodable image once into the cache and collects (path, caption, split) rows."""

    def __init__(self, out: Path):
        self.out = out
        self.rows: list[dict] = []
        self.bad: list[str] = []
        self.seen = 0

    def add(self, shard: str, key: str, data: bytes | None, captions: list[str], split: str | None) -> None:
        self.seen += 1
        if not captions:
            self.bad.append(f"{shard}:{key} (no caption)")
            return
        if not data:
            self.bad.append(f"{shard}:{key} (no image)")
            return
        stem = self.out / Path(shard).stem / key.replace("/", "_")
        done = next((p for p in stem.parent.glob(stem.name + ".*") if p.suffix != ".tmp"), None)
        if done is None:
            suffix = _image_suffix(data)
            if suffix is None:
                self.bad.append(f"{shard}:{key} (not a decodable image)")
                return
            done = stem.with_suffix(suffix)
            done.parent.mkdir(parents=True, exist_ok=True)
            tmp = done.with_name(done.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(done)  # a half-written image never looks done to a resumed read
        self.rows += [{"path": str(done), "caption": c, "split": split} for c in captions]

    def frame(self, source: Path, what: str) -> pd.DataFrame:
        if not self.rows:
            raise DatasetError(f"{source}: none of its {self.seen} {what} gave a captioned image"
                               + (f"; e.g. {self.bad[:MAX_LISTED]}" if self.bad else ""))
        frame = pd.DataFrame(self.rows)
        if frame["split"].isna().all():
            frame = frame.drop(columns="split")
        else:
            frame["split"] = frame["split"].fillna("train")
        frame.attrs["skipped"] = list(self.bad)
        if self.bad:
            print(f"[captions] {source}: skipped {len(self.bad)} of {self.seen} {what}, e.g. {self.bad[:3]}")
        return frame


def _shards(source: Path, pattern: str) -> list[Path]:
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise DatasetError(f"{source} does not exist")
    found = sorted(p for p in source.rglob(pattern) if not any(part.startswith(".") for part in p.parts))
    if not found:
        raise DatasetError(f"{source} holds no {pattern} shard")
    return found


def _pick(columns: Iterable[str], wanted: tuple[str, ...], what: str, shard: Path) -> str:
    columns = list(columns)
    lower = {c.lower(): c for c in columns}
    for name in wanted:
        if name in lower:
            return lower[name]
    raise DatasetError(f"{shard}: no {what} column among {columns}; expected one of {list(wanted)}")


def read_parquet_captions(folder: str | Path, cache: str | Path | None = None, progress: bool = True
                          ) -> pd.DataFrame:
    """Every Parquet shard under `folder` (see the module docstring) as path, caption[, split] rows."""
    import pyarrow.parquet as pq

    source = Path(folder).expanduser()
    shards = _shards(source, "*.parquet")
    writer = _Writer(cache_dir(source, cache))
    for n, shard in enumerate(shards):
        try:
            pf = pq.ParquetFile(shard)
        except Exception as exc:  # pyarrow raises several kinds for a file that is not Parquet
            raise DatasetError(f"{shard} is not a readable Parquet file: {exc}") from exc
        names = pf.schema_arrow.names
        image_col = _pick(names, IMAGE_COLUMNS, "image", shard)
        caption_col = _pick(names, CAPTION_COLUMNS, "caption", shard)
        split = split_of(shard.name)
        row = 0
        for batch in pf.iter_batches(batch_size=256, columns=[image_col, caption_col]):
            for image, caps in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                data = _image_bytes(image, shard.parent)
                writer.add(shard.name, f"{row:08d}", data, _captions(caps), split)
                row += 1
        if progress:
            print(f"\r[captions] {n + 1}/{len(shards)} shards, {len(writer.rows)} captions", end="", flush=True)
    if progress:
        print()
    return writer.frame(source, "rows")


def _image_bytes(cell, base: Path) -> bytes | None:
    """The encoded image of a Parquet cell: the `Image` feature's bytes, else the file its path names."""
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell)
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bytes(cell["bytes"])
        if cell.get("path"):
            p = Path(cell["path"])
            p = p if p.is_absolute() else base / p
            return p.read_bytes() if p.is_file() else None
    return None


def _tar_members(shard: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {suffix: bytes}) per sample of a WebDataset shard; files of a sample are adjacent in the tar."""
    try:
        tar = tarfile.open(shard)
    except (tarfile.TarError, OSError) as exc:
        raise DatasetError(f"{shard} is not a readable tar shard: {exc}") from exc
    with tar:
        key, files = None, {}
        for m in tar:
            if not m.isfile():
                continue
            name = m.name
            # WebDataset's key is everything before the first dot of the file name.
            folder, _, base = name.rpartition("/")
            k, dot, rest = base.partition(".")
            k = f"{folder}/{k}" if folder else k
            if k != key and key is not None:
                yield key, files
                files = {}
            key = k
            files["." + rest.lower() if dot else ""] = tar.extractfile(m).read()
        if key is not None:
            yield key, files


def read_webdataset_captions(folder: str | Path, cache: str | Path | None = None, progress: bool = True
                             ) -> pd.DataFrame:
    """Every WebDataset tar shard under `folder` (see the module docstring) as path, caption[, split] rows."""
    source = Path(folder).expanduser()
    shards = _shards(source, "*.tar")
    writer = _Writer(cache_dir(source, cache))
    for n, shard in enumerate(shards):
        split = split_of(shard.name)
        for key, files in _tar_members(shard):
            image = next((files[s] for s in IMAGE_SUFFIXES if s in files), None)
            caps: list[str] = []
            for s in CAPTION_SUFFIXES:
                if s in files:
                    caps += _captions(files[s])
            if not caps and ".json" in files:
                try:
                    meta = json.loads(files[".json"])
                except ValueError:
                    meta = {}
                if isinstance(meta, dict):
                    caps = next((_captions(meta[c]) for c in CAPTION_COLUMNS if c in meta), [])
            writer.add(shard.name, key, image, caps, split)
        if progress:
            print(f"\r[captions] {n + 1}/{len(shards)} shards, {len(writer.rows)} captions", end="", flush=True)
    if progress:
        print()
    return writer.frame(source, "samples")
