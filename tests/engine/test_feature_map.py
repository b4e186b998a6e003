"""The feature map: a run's classifier over its images again, projected to 2-D, stored beside the run (a
shipped run's in the user's overlay) and read back by core.analysis.images."""
from __future__ import annotations

import numpy as np
import pytest

from core.analysis.images import image_rows, read_feature_map, word_share
from core.engine.feature_map import build_feature_map, feature_map_file, project_2d
from tests.dashboard_fixtures import make_dataset, make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmap")
    data = make_dataset(root / "data", per_group=8)
    return make_run(root / "runs" / "tiny", data, "tiny")


def test_the_map_is_computed_once_stored_and_read_back(run, tiny_classifier):
    assert read_feature_map(run.path) is None
    seen = []
    table = build_feature_map(run, classifier=tiny_classifier, method="umap",
                              progress=lambda d, n, s: seen.append((d, n, s)))
    assert len(table) == 32 and table.attrs["method"] == "umap" and np.isfinite(table[["x", "y"]]).all().all()
    assert seen[0][2] == "features" and seen[-1][2] == "done" and (32, 32, "features") in seen
    back = read_feature_map(run.path)
    assert back["image_id"].tolist() == table["image_id"].tolist() and back.attrs["method"] == "umap"
    assert feature_map_file(run.path) == run.path / "feature_map.parquet"


def test_an_unreadable_image_is_left_out_and_named(run, tiny_classifier):
    images = run.images()
    broken = run.image_path(images["path"].iloc[0])
    saved = broken.read_bytes()
    broken.write_bytes(b"not an image")
    try:
        table = build_feature_map(run, classifier=tiny_classifier, method="pca")
    finally:
        broken.write_bytes(saved)
    assert len(table) == 31 and images["image_id"].iloc[0] in table.attrs["problems"][0]


def test_a_broken_map_file_says_how_to_remake_it(run, tiny_classifier):
    build_feature_map(run, classifier=tiny_classifier, method="pca")
    feature_map_file(run.path).write_bytes(b"PAR1 garbage")
    with pytest.raises(ValueError, match="compute the map again"):
        read_feature_map(run.path)
    feature_map_file(run.path).unlink()


def test_projections_refuse_what_cannot_be_mapped():
    with pytest.raises(ValueError, match="at least 2 images"):
        project_2d(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="method must be one of"):
        project_2d(np.zeros((20, 4)), method="mds")
    xy, used = project_2d(np.random.default_rng(0).normal(size=(5, 8)))
    assert xy.shape == (5, 2) and used == "pca"  # too few images for UMAP
    xy, used = project_2d(np.random.default_rng(0).normal(size=(40, 8)), method="tsne")
    assert xy.shape == (40, 2) and used == "tsne"


def test_image_rows_say_what_each_image_is_and_uses(run):
    rows = image_rows(run, flagged={"landbird": ["water", "lake"], "waterbird": ["tree"]})
    assert len(rows) == 32 and set(rows["class"]) == {"landbird", "waterbird"}
    water_landbirds = rows[(rows["class"] == "landbird") & rows["group"].str.contains("water")]
    assert water_landbirds["uses_flagged"].mean() > 0.5
    assert all(w in {"water", "lake"} for ws in rows.loc[rows["class"] == "landbird", "flagged_used"] if ws
               for w in ws.split(", "))
    assert rows["top_words"].str.contains("%").all()
    share = word_share(run, "water")
    assert share.between(0, 1).all() and share.max() > 0
