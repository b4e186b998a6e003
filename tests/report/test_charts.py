"""The charts' look, as a first-time user met it: every bar keeps its label, ticks do not collide, group
names are not cut off, values do not sit on error bars."""
from __future__ import annotations

import pandas as pd

from core import plots


def _axes(fig, kind: str) -> list:
    return [fig.layout[k] for k in fig.layout if k.startswith(kind)]


def _panel_px(fig) -> float:
    """The height in px of one panel (the first y axis' share of the plotting area)."""
    lo, hi = fig.layout.yaxis.domain
    return (hi - lo) * (fig.layout.height - 110)


def test_ten_classes_of_eight_words_keep_every_label():
    # ImageNet-9 Compare: 10 classes, 8 words each; at 12 px a bar Plotly dropped every other word.
    rows = [{"label": f"class {c}", "word": f"w{c}-{i}", "share": 0.1 + i / 100, "ci_low": 0.05, "ci_high": 0.2}
            for c in range(10) for i in range(8)]
    fig = plots.class_words_chart(pd.DataFrame(rows), k=8, per_row=2)
    assert _panel_px(fig) / 8 >= 24
    assert all(a.dtick == 1 and a.tickmode == "linear" for a in _axes(fig, "yaxis"))
    changes = pd.DataFrame([{"label": f"class {c}", "word": f"w{i}", "share_a": 0.1, "share_b": 0.1 + i / 50}
                            for c in range(10) for i in range(8)])
    fig = plots.run_comparison_chart(changes, k=8)
    assert _panel_px(fig) / 8 >= 24 and all(a.dtick == 1 for a in _axes(fig, "yaxis"))


def test_side_by_side_panels_keep_few_ticks_and_room_between_them():
    # Waterbirds Compare: two panels in half a page; "30%" of one ran into "0%" of the next.
    rows = [{"label": c, "word": f"w{i}", "share": 0.05 * i} for c in ("landbird", "waterbird") for i in range(8)]
    fig = plots.class_words_chart(pd.DataFrame(rows), per_row=2)
    assert all(a.nticks == 4 for a in _axes(fig, "xaxis"))
    left, right = fig.layout.xaxis.domain, fig.layout.xaxis2.domain
    assert right[0] - left[1] >= 0.15


def test_many_or_long_group_names_lie_as_rows_and_are_not_cut():
    names = [f"{c}, without cow/deer/forest/squirrel" for c in ("dog", "bird", "vehicle", "reptile")] * 4
    per_group = pd.DataFrame({"group": range(16), "group_name": [f"{n} {i}" for i, n in enumerate(names)],
                              "accuracy": [0.5] * 16, "n": [10] * 16, "ci_low": [0.2] * 16, "ci_high": [0.8] * 16})
    fig = plots.group_accuracy_chart(per_group)
    assert fig.data[0].orientation == "h" and list(fig.data[0].y) == list(per_group["group_name"])
    assert fig.layout.height >= 16 * 30
    # each value sits past the interval's end, to its right
    assert {(a.x, a.xanchor) for a in fig.layout.annotations if a.text == "50%"} == {(0.8, "left")}


def test_mitigation_values_sit_at_the_bars_base_clear_of_the_intervals():
    records = pd.DataFrame({"method": ["dfr"], "groups": ["inferred"], "worst_group_before": [0.16],
                            "worst_group_after": [0.54], "worst_group_before_low": [0.08],
                            "worst_group_before_high": [0.28], "worst_group_after_low": [0.4],
                            "worst_group_after_high": [0.67]})
    fig = plots.mitigation_chart(records)
    assert all(t.insidetextanchor == "start" for t in fig.data)
