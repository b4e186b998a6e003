"""Input a command cannot use ends in one clear line and exit 2, never an internal error (exit 1) or a run that
carries on with what it should have refused: a GPU that is not there, numbers out of range, a full disk,
an architecture without its weights, a training folder given as a translator."""
from __future__ import annotations

import errno
import json

import pytest
import torch

from core import cli
from core.errors import ClassifierLoadError, RunStoreError
from tests import tiny

ONE_LINE = "error: "


def _error(capsys) -> str:
    """The one error line of what a command wrote on stderr (after any warnings and progress bars)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(ONE_LINE)]
    assert len(lines) == 1 and err.rstrip("\n").endswith(lines[0]), err
    assert "internal error" not in err and "Traceback" not in err, err
    return lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_that_is_not_there_is_one_line(tmp_path, capsys):
    from core.device import DeviceError, resolve

    with pytest.raises(DeviceError, match="torch sees no CUDA GPU on this machine; use --device cpu"):
        resolve("cuda")
    with pytest.raises(DeviceError, match="'gpu0' is not a device"):
        resolve("gpu0")
    data = tiny.make_waterbirds(tmp_path / "wb", n_per_group=1)
    for argv in (["explain", "--dataset", str(data), "--classifier", "efficientnet-lite0", "--out",
                  str(tmp_path / "run"), "--device", "cuda"],
                 ["train", "--classifier", "efficientnet-lite0", "--out", str(tmp_path / "t"), "--device", "cuda:1"]):
        assert cli.main(argv) == cli.USER_ERROR_EXIT, argv
        assert "torch sees no CUDA GPU" in _error(capsys)


@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
    ("--train-from-block", "99", "--train-from-block must be 0..16 (EfficientNet-Lite0 has 16 blocks"),
    ("--epochs", "0", "--epochs must be >= 1, got 0"),
    ("--lr", "0", "--lr must be > 0, got 0.0"),
])
def test_finetune_numbers_out_of_range_are_one_line(tmp_path, capsys, option, value, message):
    data = tiny.make_waterbirds(tmp_path / "wb", n_per_group=1)
    assert cli.main(["finetune", "--dataset", str(data), "--out", str(tmp_path / "c"), option, value]) == 2
    assert message in _error(capsys)
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_an_architecture_without_its_weights_is_refused_unless_asked_for(tmp_path, capsys):
    from core.models.registry import load_classifier_spec

    with pytest.raises(ClassifierLoadError, match=r"--classifier torchvision:resnet18 needs its trained weights: "
                                                  r"--checkpoint FILE .* \(or --random-weights for a smoke test"):
        load_classifier_spec("torchvision:resnet18")
    with pytest.raises(ClassifierLoadError, match=r"--classifier timm:resnet18 needs its trained weights: "
                                                  r"--checkpoint FILE .*; nothing is downloaded"):
        load_classifier_spec("timm:resnet18")
    untrained = load_classifier_spec("torchvision:shufflenet_v2_x0_5", random_weights=True)
    assert untrained.arch == "shufflenet_v2_x0_5"
    with pytest.raises(ClassifierLoadError, match="--random-weights goes with --classifier torchvision:ARCH"):
        load_classifier_spec("efficientnet-lite0", random_weights=True)
    assert cli.main(["train", "--classifier", "torchvision:resnet18", "--out", str(tmp_path / "t")]) == 2
    assert "needs its trained weights" in _error(capsys)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from tests.dashboard_fixtures import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("models"))


def _explain_args(models, data, out, *extra):
    return ["explain", "--dataset", str(data), "--split", "test", "--classifier", models["classifier"],
            "--translator", models["translator"], "--lm", models["lm"], "--sentences", "2", "--max-new-tokens", "3",
            "--shard-size", "2", "--device", "cpu", "--out", str(out), *extra]


def test_a_full_disk_during_explain_is_one_line_and_the_run_resumes(tmp_path, capsys, monkeypatch, tiny_models):
    import pyarrow.parquet as pq

    data = tiny.make_waterbirds(tmp_path / "wb", n_per_group=1)  # 4 test images: 2 shards of 2
    real = pq.write_table

    def fills_the_disk(table, where, *args, **kwargs):
        if "shard-00001" in str(where):
            with open(where, "wb") as f:  # half a file, then no space left
                f.write(b"PAR1")
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", fills_the_disk)
    out = tmp_path / "run"
    assert cli.main(_explain_args(tiny_models, data, out)) == 2
    err = _error(capsys)
    assert "the disk is full: writing" in err and "run the same command again to resume it" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["progress"]["done_shards"] == [0] and manifest["status"] == "failed"
    assert not (out / "run.lock").exists() and not list(out.glob("*/*.tmp"))
    with pytest.raises(RunStoreError, match="the disk is full"):
        cli.main([*_explain_args(tiny_models, data, out), "--debug"])
    monkeypatch.setattr(pq, "write_table", real)  # space freed: the same command resumes
    assert cli.main(_explain_args(tiny_models, data, out)) == 0
    assert "complete, 4/4 images" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["progress"]["done_shards"] == [0, 1]


def test_a_training_folder_given_as_translator_uses_its_best_checkpoint(tmp_path, capsys, tiny_models):
    import shutil

    data = tiny.make_waterbirds(tmp_path / "wb", n_per_group=1)
    trained = tmp_path / "translators" / "mine"
    shutil.copytree(tiny_models["translator"], trained / "best")  # what `texplain train --out OUT` leaves
    args = _explain_args({**tiny_models, "translator": str(trained)}, data, tmp_path / "run")
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"translator: {trained} is a training folder; using its best checkpoint, {trained / 'best'}" in out
    (trained / "best").rename(trained / "epoch-3")
    assert cli.main([*args[:-1], str(tmp_path / "run2")]) == 2
    assert f"holds no translator checkpoint (config.json); it holds epoch-3: pass --translator " \
           f"{trained / 'epoch-3'}" in _error(capsys)
