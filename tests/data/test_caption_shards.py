"""Captioned images in Hugging Face Parquet and WebDataset shards (core.data.caption_shards), read offline."""
import io
import os
import json
import tarfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.data import DatasetError, read_parquet_captions, read_webdataset_captions
from core.data.caption_shards import split_of


def jpeg(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets' Image feature
    table = pa.table({"image": pa.array([r[0] for r in rows], type=image),
                      "sentences": pa.array([r[1] for r in rows], type=pa.list_(pa.string()))})
    pq.write_table(table, path)


def test_parquet_shards_give_one_row_per_caption_with_the_split_of_their_name(tmp_path):
    src = tmp_path / "coco" / "data"
    write_parquet(src / "train-00000-of-00002.parquet",
                  [({"bytes": jpeg(0), "path": None}, ["a dog on grass", "a brown dog"]),
                   ({"bytes": b"not an image", "path": None}, ["broken"]),
                   ({"bytes": jpeg(1), "path": None}, [])])
    write_parquet(src / "validation-00000-of-00001.parquet", [({"bytes": jpeg(2), "path": None}, ["a red car"])])
    cache = tmp_path / "cache"
    pairs = read_parquet_captions(tmp_path / "coco", cache=cache, progress=False)
    assert list(pairs.columns) == ["path", "caption", "split"] and len(pairs) == 3
    assert sorted(pairs["caption"]) == ["a brown dog", "a dog on grass", "a red car"]
    assert pairs.groupby("split").size().to_dict() == {"train": 2, "val": 1}
    assert pairs.attrs["skipped"] == ["train-00000-of-00002.parquet:00000001 (not a decodable image)",
                                      "train-00000-of-00002.parquet:00000002 (no caption)"]
    first = pairs["path"].iloc[0]
    assert first.endswith(".jpg") and Image.open(first).size == (16, 12)
    mtime = pd.Series({p: os.stat(p).st_mtime_ns for p in pairs["path"].unique()})
    again = read_parquet_captions(tmp_path / "coco", cache=cache, progress=False)  # nothing is written twice
    assert again.equals(pairs) and all(os.stat(p).st_mtime_ns == t for p, t in mtime.items())


def test_parquet_problems_name_the_file_and_what_is_missing(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pytest.raises(DatasetError, match="holds no \\*.parquet shard"):
        read_parquet_captions(tmp_path, progress=False)
    pq.write_table(pa.table({"picture": [b"x"], "caption": ["c"]}), tmp_path / "a.parquet")
    with pytest.raises(DatasetError, match="no image column among \\['picture', 'caption'\\]"):
        read_parquet_captions(tmp_path, cache=tmp_path / "c", progress=False)
    (tmp_path / "a.parquet").write_bytes(b"PAR1 nonsense")
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        read_parquet_captions(tmp_path, cache=tmp_path / "c", progress=False)
    write_parquet(tmp_path / "a.parquet", [({"bytes": b"junk", "path": None}, ["c"])])
    with pytest.raises(DatasetError, match="none of its 1 rows gave a captioned image"):
        read_parquet_captions(tmp_path, cache=tmp_path / "c", progress=False)


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards_pair_files_by_key_and_read_txt_or_json_captions(tmp_path):
    src = tmp_path / "wds"
    src.mkdir()
    with tarfile.open(src / "shard-test-000000.tar", "w") as tar:
        add(tar, "s/000001.jpg", jpeg(3))
        add(tar, "s/000001.txt", b"a heron by a river")
        add(tar, "s/000002.jpg", jpeg(4))
        add(tar, "s/000002.json", json.dumps({"caption": "a tram in a city street"}).encode())
        add(tar, "s/000003.txt", b"a caption without an image")
    pairs = read_webdataset_captions(src, cache=tmp_path / "cache", progress=False)
    assert pairs["caption"].tolist() == ["a heron by a river", "a tram in a city street"]
    assert set(pairs["split"]) == {"test"} and pairs.attrs["skipped"] == ["shard-test-000000.tar:s/000003 (no image)"]
    (src / "bad.tar").write_bytes(b"no tar")
    with pytest.raises(DatasetError, match="bad.tar is not a readable tar shard"):
        read_webdataset_captions(src, cache=tmp_path / "cache", progress=False)


def test_split_names():
    assert split_of("train-00000-of-00004.parquet") == "train" and split_of("validation-0.parquet") == "val"
    assert split_of("cc3m-val-0001.tar") == "val" and split_of("test.parquet") == "test"
    assert split_of("valley-birds-0001.tar") is None and split_of("shard-000001.tar") is None


def test_the_train_command_reads_both_formats(tmp_path, monkeypatch):
    from core.cli.commands.train import captions

    monkeypatch.setattr("core.data.caption_shards.CACHE", tmp_path / "cache")
    write_parquet(tmp_path / "hf" / "train-0.parquet", [({"bytes": jpeg(5), "path": None}, ["a cat"])])
    assert captions(f"hf:{tmp_path / 'hf'}")["caption"].tolist() == ["a cat"]
    with pytest.raises(ValueError, match="'hf:FOLDER'"):
        captions("parquet:x")
