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


def test_the_sentence_calls_a_difference_borderline_where_the_two_tests_disagree(runs):
    """38 fixed, 22 broken of 200 (the Waterbirds demo's fix): McNemar p = 0.053 while the bootstrap interval of the
    average difference is above zero; the sentence says borderline instead of "can be chance" beside that interval."""
    from dataclasses import replace

    erm, robust = runs
    ag = agreement(erm, robust)
    table = ag.table.copy()
    table["images"] = [100 if (a, b) == ("right", "right") else 22 if (a, b) == ("right", "wrong")
                       else 38 if (a, b) == ("wrong", "right") else 40 for a, b in zip(table["a"], table["b"])]
    close = replace(ag, table=table, mcnemar=mcnemar(22, 38),
                    accuracy_gap={"gap": 0.08, "low": 0.005, "high": 0.155, "n": 200})
    text = close.sentence()
    assert 0.05 < close.mcnemar["p_value"] < 0.06
    assert "38 images only B reads right, 22 only A" in text and "borderline" in text and "+0.5 to +15.5" in text
    assert "can be chance" not in text
    # Both tests agree: the plain verdicts
    wide = replace(close, accuracy_gap={"gap": 0.08, "low": -0.01, "high": 0.15, "n": 200})
    assert "can be chance" in wide.sentence() and "borderline" not in wide.sentence()
    assert "unlikely to be chance" in ag.sentence() and "borderline" not in ag.sentence()
