"""A corpus of bad inputs, each ending in a clear error (exact class and message) or in correct handling.

Built from small files the tests generate (nothing large is committed): images that cannot be decoded
safely, datasets that point outside their folder or hold malformed values, run folders that are partial,
damaged, locked or explained on other data, refused pickles, and the command line's one-line errors.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core import cli
from core.data import DatasetError, load_rgb, open_dataset, read_coco_captions, read_waterbirds
from core.data.images import MIN_IMAGE_SIDE, decode_rgb
from core.errors import (ClassifierLoadError, ImageDecodeError, JobError, LanguageModelError, RunLockedError,
                         RunMismatchError, RunStoreError, TExplainError, TrainStateError, TranslatorMismatchError)
from core.store import LOCK_FILE, Run
from tests import tiny
from tests.dashboard_fixtures import make_dataset, make_run

ROOT = Path(__file__).resolve().parent.parent


# --- generated bad files -----------------------------------------------------------------------------

def _png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes | None = None) -> bytes:
    """A PNG written by hand, so its header can claim any size and any bit depth."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows or b""))
            + chunk(b"IEND", b""))


def png16_gray(values: np.ndarray) -> bytes:
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    return _png(values.shape[1], values.shape[0], 16, 0, rows)


def jpeg(size=(64, 64), colour=(40, 90, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def png(size=(64, 64), colour=(40, 160, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


# --- 1. images that cannot be decoded safely -----------------------------------------------------------

def test_a_decompression_bomb_is_an_image_error_not_a_crash(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(20_000, 20_000, 8, 2))  # 400 MP claimed by a 60-byte file
    with pytest.raises(ImageDecodeError, match=r"cannot read image .*bomb.png: it is too large to decode safely"):
        load_rgb(bomb)


def test_decoded_size_is_capped_and_configurable(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    big.write_bytes(png((300, 200)))
    with pytest.raises(ImageDecodeError, match=r"it is 300×200 pixels \(0 MP\), more than the 0.05 MP an image may "
                                               r"decode to \(TEXPLAIN_MAX_IMAGE_PIXELS\)"):
        load_rgb(big, max_pixels=50_000)
    from core.data import images

    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 50_000)  # what TEXPLAIN_MAX_IMAGE_PIXELS sets
    with pytest.raises(ImageDecodeError, match="more than the 0.05 MP"):
        load_rgb(big)
    # A JPEG over the cap is decoded at a reduced scale instead: its format gives that for free.
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg((400, 300)))
    assert load_rgb(photo).size == (200, 150)
    monkeypatch.undo()
    assert load_rgb(photo).size == (400, 300)


@pytest.mark.parametrize("content, message", [
    (b"not an image at all", "cannot identify image file"),
    (png()[:60], "cannot read image"),  # truncated in its pixel data
    (b"", "cannot identify image file"),
])
def test_unreadable_images_name_the_file(tmp_path, content, message):
    f = tmp_path / "bad.png"
    f.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=rf"cannot read image .*bad.png: .*{message}|{message}"):
        load_rgb(f)


def test_missing_and_folder_images(tmp_path):
    with pytest.raises(ImageDecodeError, match=r"image file not found: .*nope.png"):
        load_rgb(tmp_path / "nope.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageDecodeError, match=r"cannot read image .*dir.png: it is a folder"):
        load_rgb(tmp_path / "dir.png")


def test_16_bit_images_are_scaled_not_clipped_to_white(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    f = tmp_path / "ramp16.png"
    f.write_bytes(png16_gray(ramp))
    assert Image.open(f).mode == "I;16"
    image = np.asarray(load_rgb(f)).astype(float)
    assert image.shape == (64, 64, 3)
    assert abs(image.mean() - 127.5) < 1.0  # Pillow's own convert("RGB") gives 254.5: almost all white
    flat = tmp_path / "flat16.png"
    flat.write_bytes(png16_gray(np.full((16, 16), 30000, dtype=np.uint16)))
    assert np.asarray(load_rgb(flat))[0, 0].tolist() == [117, 117, 117]  # 30000 / 65535 * 255
    # Float images in [0, 1] (TIFF) too.
    buf = io.BytesIO()
    Image.fromarray((ramp / 65535).astype(np.float32)).save(buf, format="TIFF")
    assert abs(np.asarray(decode_rgb(buf.getvalue())).mean() - 127.5) < 1.0


def test_one_minimum_size_rule_for_datasets_and_uploads(tmp_path):
    from dashboard.backend import decode_image

    tiny_png = png((1, 1))
    (tmp_path / "dot.png").write_bytes(tiny_png)
    with pytest.raises(ImageDecodeError, match=rf"image .*dot.png is only 1×1 pixels; images must be at least "
                                               rf"{MIN_IMAGE_SIDE} pixels on each side"):
        load_rgb(tmp_path / "dot.png")
    with pytest.raises(ValueError, match=rf"'dot.png' is only 1×1 pixels; images must be at least {MIN_IMAGE_SIDE}"):
        decode_image(tiny_png, name="'dot.png'")
    assert load_rgb_ok(tmp_path, (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE))


def load_rgb_ok(folder: Path, size) -> bool:
    f = folder / "ok.png"
    f.write_bytes(png(size))
    return load_rgb(f).size == size


# --- 2. dataset files ---------------------------------------------------------------------------------

def _waterbirds(root: Path, filenames, splits=None, ys=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in filenames:
        if not name.startswith("/") and not os.path.normpath(name).startswith(".."):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / os.path.normpath(name)).write_bytes(png((16, 16)))
    n = len(filenames)
    pd.DataFrame({"img_id": range(n), "img_filename": filenames, "y": ys or [0] * n,
                  "split": splits or [0] * n, "place": [0] * n}).to_csv(root / "metadata.csv", index=False)
    return root


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "img/../../outside.png"])
def test_dataset_paths_outside_the_dataset_folder_are_refused(tmp_path, bad):
    root = _waterbirds(tmp_path / "wb", ["img/a.png", bad])
    with pytest.raises(DatasetError, match=rf"img_filename must be a path inside .*wb; 1 are not \(absolute, or "
                                           rf"leaving the folder with '\.\.'\), e.g. \['{bad}'\]"):
        read_waterbirds(root)
    # Inside the folder, even spelled with "..", is fine.
    assert len(read_waterbirds(_waterbirds(tmp_path / "ok", ["img/a.png", "img/sub/../b.png"]))) == 2


def test_coco_file_names_outside_the_images_folder_are_refused(tmp_path):
    js = tmp_path / "captions_train.json"
    js.write_text(json.dumps({"images": [{"id": 1, "file_name": "../secret.jpg"}],
                              "annotations": [{"image_id": 1, "caption": "a bird"}]}))
    with pytest.raises(DatasetError, match="image file names must be paths inside"):
        read_coco_captions(js, tmp_path / "images", check_files=False)


def test_a_non_numeric_split_names_only_the_bad_values(tmp_path):
    root = _waterbirds(tmp_path / "wb", ["a.png", "b.png", "c.png"], splits=["2", "x", "1"])
    with pytest.raises(DatasetError, match=r"column 'split' must be 0/1/2 \(train/val/test\); found \['x'\]$"):
        read_waterbirds(root)
    root = _waterbirds(tmp_path / "wb2", ["a.png", "b.png"], ys=["1", "bird"])
    with pytest.raises(DatasetError, match=r"column 'y' must hold class indices 0, 1, ...; found \['bird'\]$"):
        read_waterbirds(root)
    # Text codes alone are read as the numbers they are.
    ds = read_waterbirds(_waterbirds(tmp_path / "wb3", ["a.png", "b.png"], splits=["2", "test"]))
    assert [r.split for r in ds.records] == ["test", "test"]


# --- 3. runs: partial, damaged, changed data, locks ---------------------------------------------------

@pytest.fixture
def finished_run(tmp_path):
    data = make_dataset(tmp_path / "data", per_group=4, size=16)
    return make_run(tmp_path / "run", data, "r")  # 16 images in two shards of 8


def test_a_run_missing_a_shard_is_labelled_damaged_everywhere(finished_run, capsys):
    assert finished_run.health().status == "complete" and finished_run.health().describe() is None
    (finished_run.path / "images" / "shard-00001.parquet").unlink()
    health = Run.open(finished_run.path).health()
    assert (health.status, health.done_shards, health.missing_shards, health.images_present) == ("damaged", [0], [1], 8)
    assert health.describe().startswith("damaged: 1 finished shard(s) cannot be read: shard 1 has no images table "
                                        "(images/shard-00001.parquet is missing). Numbers cover 8 of 16 images only")
    # Readers use the readable shards only (no DuckDB error on the missing file) ...
    assert len(Run.open(finished_run.path).images()) == 8
    assert len(set(Run.open(finished_run.path).words()["image_id"])) <= 8
    # ... and say so: report header and notes, the CLI, the dashboard's run list.
    from core.report import build_report, to_markdown
    from core.store import discover_runs

    report = build_report(finished_run.path)
    assert report["run"]["status"] == "damaged" and report["notes"][0].startswith("This run is damaged: ")
    assert "status damaged" in to_markdown(report)
    assert cli.main(["report", str(finished_run.path), "--format", "json"]) == 0
    assert "warning: run " in capsys.readouterr().err
    entry = discover_runs({"yours": finished_run.path.parent})[0]
    assert entry.status == "damaged" and entry.health.startswith("damaged: ")


def test_a_deleted_words_shard_or_a_corrupt_one_does_not_count_as_done(finished_run):
    (finished_run.path / "words" / "shard-00000.parquet").unlink()
    assert Run.open(finished_run.path).done_shards() == {1}
    (finished_run.path / "sentences" / "shard-00001.parquet").write_bytes(b"PAR1 garbage")
    health = Run.open(finished_run.path).health()
    assert health.status == "damaged" and health.done_shards == []
    assert "sentences/shard-00001.parquet cannot be read" in health.problems[1]


def test_a_manifest_that_is_not_an_object_is_a_run_store_error(tmp_path, capsys):
    folder = tmp_path / "list-run"
    folder.mkdir()
    (folder / "manifest.json").write_text("[1, 2, 3]")
    with pytest.raises(RunStoreError,
                       match=r"manifest.json is not a run manifest: it holds a JSON list, not an object"):
        Run.open(folder)
    (folder / "manifest.json").write_text('{"progress": [1]}')
    with pytest.raises(RunStoreError, match=r"'progress' should be a JSON object, got list"):
        Run.open(folder)
    (folder / "manifest.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(RunStoreError, match="is not valid JSON"):
        Run.open(folder)
    assert cli.main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path):
    run = Run.create(tmp_path / "run", {"name": "x"})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from core.store.run import process_start

        lock = json.loads((run.path / LOCK_FILE).read_text())
        assert lock["pid"] == os.getpid()
        # Another live process holds the lock: this one must not write.
        (run.path / LOCK_FILE).write_text(json.dumps({**lock, "pid": sleeper.pid,
                                                      "started": process_start(sleeper.pid)}))
        with pytest.raises(RunLockedError, match=rf"is being written by another process \(pid {sleeper.pid} on "):
            Run.create(tmp_path / "run", {"name": "x"})
    finally:
        sleeper.kill()
        sleeper.wait()
    # Its process is gone: the lock is stale and taken over.
    Run.create(tmp_path / "run", {"name": "x"})
    assert json.loads((run.path / LOCK_FILE).read_text())["pid"] == os.getpid()
    run.finish()
    assert not (run.path / LOCK_FILE).exists()


# --- explain runs with tiny models ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from core.models.classifier import Preprocessing, from_module
    from core.models.lm import load_language_model
    from core.models.translator import Translator, TranslatorConfig

    lm = load_language_model(tiny.save_tiny_lm(tmp_path_factory.mktemp("lm") / "lm"))  # untrained: fast
    torch.manual_seed(0)
    clf = from_module(tiny.TinyNet(), ["landbird", "waterbird"], preprocessing=Preprocessing(resize=32, crop=32),
                      name="tinynet")
    cfg = TranslatorConfig(feature_dim=clf.feature_dim, hidden_size=lm.hidden_size, prefix_length=2,
                           classifier_identity=clf.identity, lm_identity=lm.identity)
    return clf, Translator(cfg).eval(), lm


def _explain(models, dataset_root, out, **kw):
    from core.engine.config import ExplainConfig
    from core.engine.pipeline import explain_dataset

    clf, tr, lm = models
    cfg = ExplainConfig(sentences_per_image=2, max_new_tokens=3, shard_size=4, device="cpu")
    return explain_dataset(open_dataset(dataset_root), clf, tr, lm, out, cfg, split="test", show_progress=False,
                           **kw)


def test_explain_records_undecodable_images_and_explains_the_rest(tmp_path, models):
    data = tiny.make_waterbirds(tmp_path / "wb", n_per_group=1)
    test = open_dataset(data).split("test").records
    test[0].path.write_bytes(_png(20_000, 20_000, 8, 2))  # a decompression bomb
    test[1].path.write_bytes(png((1, 1)))  # too small
    test[2].path.write_bytes(png16_gray(np.full((32, 32), 40000, dtype=np.uint16)))  # 16-bit: explained
    run = _explain(models, data, tmp_path / "run")
    images = run.images().set_index("image_id")
    assert run.health().status == "complete" and len(images) == 4
    assert "too large to decode safely" in images.loc[test[0].image_id, "error"]
    assert "is only 1×1 pixels" in images.loc[test[1].image_id, "error"]
    assert pd.isna(images.loc[test[2].image_id, "error"]) and images.loc[test[2].image_id, "n_sentences"] == 2


def test_resume_refuses_a_dataset_changed_in_place_and_force_starts_over(tmp_path, models):
    data = tiny.make_waterbirds(tmp_path / "wb", n_per_group=2)  # 8 test images: two shards of 4
    run = _explain(models, data, tmp_path / "run", max_shards=1)
    assert run.health().status == "partial" and run.health().describe() == (
        "partial: 4 of 8 images explained (the run is partial); numbers cover those only.")
    meta = pd.read_csv(data / "metadata.csv")
    meta.loc[meta["split"] == 2, "y"] = 1 - meta.loc[meta["split"] == 2, "y"]  # labels flipped in place
    meta.to_csv(data / "metadata.csv", index=False)
    with pytest.raises(RunMismatchError, match=r"was explained on other data: the dataset's records changed since "
                                               r"the run started \(8 images then, 8 now;.*pass --force"):
        _explain(models, data, tmp_path / "run")
    redone = _explain(models, data, tmp_path / "run", force=True)
    assert redone.health().status == "complete"
    images = redone.images()
    assert (images["label"] == images["label_name"].map({"landbird": 0, "waterbird": 1})).all()
    assert sorted(images["label"]) == sorted(meta.loc[meta["split"] == 2, "y"])
    # An image added to the dataset is another change.
    extra = pd.concat([meta, meta.iloc[[-1]].assign(img_id=999)])
    extra.to_csv(data / "metadata.csv", index=False)
    with pytest.raises(RunMismatchError, match=r"\(8 images then, 9 now;"):
        _explain(models, data, tmp_path / "run")


def test_a_deleted_words_shard_is_rebuilt_on_resume(tmp_path, models):
    data = tiny.make_waterbirds(tmp_path / "wb", n_per_group=2)
    full = _explain(models, data, tmp_path / "run")
    before = full.words().sort_values(["image_id", "word"]).reset_index(drop=True)
    (full.path / "words" / "shard-00001.parquet").unlink()
    assert Run.open(full.path).health().status == "damaged"
    again = _explain(models, data, tmp_path / "run")
    assert again.health().status == "complete"
    pd.testing.assert_frame_equal(again.words().sort_values(["image_id", "word"]).reset_index(drop=True), before)


def test_a_second_explain_process_on_the_same_out_is_refused(tmp_path, models):
    data = tiny.make_waterbirds(tmp_path / "wb", n_per_group=1)
    out = tmp_path / "run"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        from core.store.run import process_start

        (out / LOCK_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                 "started": process_start(sleeper.pid), "since": "now"}))
        with pytest.raises(RunLockedError, match="is being written by another process"):
            _explain(models, data, out)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert _explain(models, data, out).health().status == "complete"


# --- 4. refused pickles and checkpoints ------------------------------------------------------------------

class _Payload:
    """Unpickling this would run code (it writes a marker file); weights-only loading must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_a_malicious_train_state_is_refused(tmp_path, models):
    from core.engine.config import TrainConfig
    from core.engine.train import train_translator

    clf, _, lm = models
    marker = tmp_path / "pwned"
    out = tmp_path / "tr"
    out.mkdir()
    torch.save({"fingerprint": _Payload(marker)}, out / "train_state.pt")
    feats = torch.randn(4, clf.feature_dim)
    with pytest.raises(TrainStateError, match=r"train_state.pt cannot be resumed: it is not a training state this "
                                              r"code wrote \(UnpicklingError: .*Delete it to train from scratch"):
        train_translator(clf, lm, feats, ["a bird"] * 4, out, cfg=TrainConfig(max_steps=1, device="cpu"),
                         show_progress=False)
    assert not marker.exists()


def test_a_language_model_folder_with_a_malicious_pickle_is_refused(tmp_path, models):
    _, _, lm = models
    folder = tmp_path / "evil-lm"
    shutil.copytree(Path(lm.model.name_or_path), folder)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    marker = tmp_path / "pwned"
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump(_Payload(marker), f)
    from core.models.lm import load_language_model

    with pytest.raises(LanguageModelError, match=rf"language model '{folder}' could not be loaded from the folder "
                                                 rf".*: its pickled weights were refused: unpickling them could run"):
        load_language_model(folder)
    assert not marker.exists()


def test_a_classifier_file_points_to_the_checkpoint_option(tmp_path, capsys):
    from core.models import load_classifier

    f = tmp_path / "weights.pt"
    f.write_bytes(b"x")
    with pytest.raises(ClassifierLoadError, match=r"is a file; .* --classifier torchvision:ARCH --checkpoint "):
        load_classifier(f)
    args = ["train", "--classifier", "efficientnet-lite0", "--checkpoint", str(f), "--out", str(tmp_path / "o")]
    assert cli.main(args) == 2
    assert "error: --checkpoint FILE goes with --classifier torchvision:ARCH" in capsys.readouterr().err


# --- 5. the command line: one line, exit 2; --debug shows the traceback -------------------------------------

def test_every_project_error_is_a_texplain_error_and_what_it_was_before():
    from core.demo.assets import AssetError
    from core.errors import DemoWorldError

    for cls, legacy in ((DatasetError, ValueError), (ImageDecodeError, ValueError), (ClassifierLoadError, ValueError),
                        (LanguageModelError, ValueError), (TranslatorMismatchError, ValueError),
                        (TrainStateError, ValueError), (RunStoreError, RuntimeError), (RunMismatchError, RuntimeError),
                        (RunLockedError, RuntimeError), (JobError, RuntimeError), (AssetError, RuntimeError),
                        (DemoWorldError, RuntimeError)):
        assert issubclass(cls, TExplainError) and issubclass(cls, legacy), cls


def test_cli_user_errors_are_one_line_with_exit_2(tmp_path, finished_run, capsys):
    cases = [
        (["mitigate", str(tmp_path / "NOT_A_RUN")], "is not a run folder"),
        (["report", str(tmp_path / "NOT_A_RUN")], "no run at"),
        (["train", "--classifier", "nonsense", "--out", str(tmp_path / "t")], "unknown classifier 'nonsense'"),
        (["train", "--classifier", "efficientnet-lite0", "--captions", "xml:f", "--out", str(tmp_path / "t"),
          "--lm", str(tmp_path / "no-lm")], "language model folder"),
        (["train", "--classifier", "efficientnet-lite0", "--out", str(tmp_path / "t"), "--dropout", "1"],
         "--dropout must be in [0, 1), got 1.0"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert any(m in err for m in message.split("|")), err
    # DuckDB on a shard whose footer reads but whose data does not: a RunStoreError, one line.
    shard = finished_run.path / "words" / "shard-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[8:200] = b"\x00" * 192  # the column chunks, not the footer
    shard.write_bytes(bytes(data))
    code = cli.main(["report", str(finished_run.path)])
    err = capsys.readouterr().err
    assert code == 2 and "error: " in err and "a shard of this run cannot be read" in err and "Traceback" not in err
    with pytest.raises(RunStoreError):
        cli.main(["report", str(finished_run.path), "--debug"])


def test_an_unexpected_bug_is_one_line_with_exit_1(monkeypatch, capsys):
    from core.cli.commands import report

    monkeypatch.setattr(report, "run", lambda args: {}["boom"])  # a bug inside a verb
    assert cli.main(["report", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: internal error (KeyError: 'boom'); rerun with --debug") and err.count("\n") == 1
    with pytest.raises(KeyError):
        cli.main(["--debug", "report", "x"])


# --- 6. the dashboard: class names are text, not HTML --------------------------------------------------------

def test_class_names_are_escaped_in_raw_html(tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    data = make_dataset(tmp_path / "data", per_group=12, size=16)
    evil = "<img src=x onerror=alert(1)>"
    for name in ("demo-erm-test", "demo-robust-test"):  # Compare shows run A against run B
        run = make_run(tmp_path / "shipped" / name, data, name)
        manifest = run.manifest
        manifest["dataset"]["class_names"] = [evil, "waterbird"]
        (run.path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("TEXPLAIN_SHIPPED_RUNS", str(tmp_path / "shipped"))
    monkeypatch.setenv("TEXPLAIN_RUNS", str(tmp_path / "user"))
    for page in ("Home.py", "pages/6_Compare_classifiers.py"):
        at = AppTest.from_file(str(ROOT / "dashboard" / page), default_timeout=180)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        html = [str(m.value) for m in at.markdown if "alert(1)" in str(m.value)]
        assert html and all(evil not in h and "&lt;img src=x onerror=alert(1)&gt;" in h for h in html), (page, html)
