"""Two classifiers on the same images, image by image: flips both ways, the 2x2 table, McNemar's test and
paired intervals on the differences."""
from __future__ import annotations

import pytest

from core.analysis.agreement import agreement, mcnemar
from tests.fake_runs import make_waterbirds_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("agreement")
    erm = make_waterbirds_run(root / "erm", name="erm")
    robust = make_waterbirds_run(root / "robust", name="robust", error_rates=(0.05, 0.1, 0.1, 0.05), seed=1)
    return erm, robust


def test_flips_both_ways_and_the_two_by_two_table(runs):
    erm, robust = runs
    ag = agreement(erm, robust)
    assert ag.n == 400 and ag.table["images"].sum() == 400
    fixed, broken = ag.count("wrong", "right"), ag.count("right", "wrong")
    assert fixed > broken > 0
    directions = ag.flips["direction"].value_counts()
    assert directions["fixed by B"] == fixed and directions["broken by B"] == broken
    assert (ag.flips["predicted_a"] != ag.flips["predicted_b"]).all()
    assert ag.mcnemar["p_value"] < 0.001 and "unlikely to be chance" in ag.sentence()
    gap = ag.accuracy_gap
    assert gap["low"] <= gap["gap"] <= gap["high"] and gap["low"] > 0
    wg = ag.worst_group_gap
    assert wg["low"] <= wg["gap"] <= wg["high"] and wg["gap"] > 0.3
    assert list(ag.group_gaps["group"])[1] == "landbird on water"
    assert (ag.group_gaps["low"] <= ag.group_gaps["change"]).all()


def test_mcnemar_is_exact_for_few_discordant_pairs():
    small = mcnemar(1, 9)
    assert small["method"] == "exact binomial" and small["p_value"] == pytest.approx(0.021484375)
    assert mcnemar(30, 10)["method"].startswith("chi-square") and mcnemar(0, 0)["p_value"] == 1.0
    with pytest.raises(ValueError, match=">= 0"):
        mcnemar(-1, 2)
