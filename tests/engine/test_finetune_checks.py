"""What `finetune` refuses before training (a train split of one class) and how it leaves its files (readable
as any file the user writes, not only by its owner)."""
from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from core import cli
from tests import tiny


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_train_split_of_one_class_is_refused(tmp_path, capsys):
    root = tiny.make_waterbirds(tmp_path / "wb", n_per_group=1)
    meta = pd.read_csv(root / "metadata.csv")
    meta.loc[meta["split"] == 0, "y"] = 0  # every training image is a landbird
    meta.to_csv(root / "metadata.csv", index=False)
    assert cli.main(["finetune", "--dataset", str(root), "--out", str(tmp_path / "c"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "error: the train split of wb holds 1 class (landbird) of 2; a classifier needs images of at least two " \
           "classes" in err
    assert not (tmp_path / "c" / "model.safetensors").exists()


def test_finetuned_weights_are_written_with_the_users_umask(tmp_path, capsys, umask_022):
    root = tiny.make_waterbirds(tmp_path / "wb", n_per_group=1)
    out = tmp_path / "c"
    assert cli.main(["finetune", "--dataset", str(root), "--out", str(out), "--epochs", "1", "--batch-size", "4"]) == 0
    for name in ("model.safetensors", "config.json", "finetune_state.pt"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    os.umask(0o002)  # a group-shared setup: the group may write too
    from core.models import load_classifier

    load_classifier(out).save_pretrained(tmp_path / "again")
    assert stat.S_IMODE((tmp_path / "again" / "model.safetensors").stat().st_mode) == 0o664
