"""Plotly figures for the dashboard and the HTML report, built from the analysis tables; one look for all.

Every builder takes the DataFrame an analysis function returns (or the same rows read back from a JSON
report) and returns a `plotly.graph_objects.Figure`; nothing here computes statistics. Colours: the two
sides of any comparison are BLUE (a, before, right) and ORANGE (b, after, wrong); a highlighted item
(the worst group) is RED.
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

BLUE, ORANGE, GREEN, PURPLE, RED, GREY = "#3b6fb6", "#e08a2e", "#4a9c6d", "#8e6bb8", "#c8474b", "#9aa5b1"
PALETTE = [BLUE, ORANGE, GREEN, PURPLE, "#5fa8c7", "#b7873f", "#7a7a7a"]
FONT = "Inter, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"

TEMPLATE = go.layout.Template(layout=go.Layout(
    font=dict(family=FONT, size=13, color="#1f2933"),
    title=dict(font=dict(size=16), x=0.0, xanchor="left"),
    colorway=PALETTE,
    paper_bgcolor="white", plot_bgcolor="white",
    margin=dict(l=10, r=20, t=60, b=40),
    xaxis=dict(gridcolor="#e6e9ee", zerolinecolor="#c5ccd6", automargin=True),
    yaxis=dict(gridcolor="#e6e9ee", zerolinecolor="#c5ccd6", automargin=True),
    legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1.0),
    hoverlabel=dict(font=dict(family=FONT, size=12)),
    bargap=0.25,
))

__all__ = ["TEMPLATE", "PALETTE", "legend_clear_of_titles", "top_words_chart", "class_words_chart", "log_odds_chart",
           "flags_chart", "group_accuracy_chart", "variation_accuracy_chart", "class_variation_heatmap",
           "mitigation_chart", "run_comparison_chart", "feature_map_chart", "agreement_chart", "empty_chart"]


def legend_clear_of_titles(fig: go.Figure) -> go.Figure:
    """Lift the legend above the panel titles when they occupy the top edge, where TEMPLATE puts it.

    Used by every place that shows a figure (dashboard, HTML report), so a multi-panel chart never has
    its legend drawn over its panel titles (nor, below the panels, over rotated axis labels).
    """
    legend = any(getattr(t, "showlegend", None) is not False and getattr(t, "name", None) for t in fig.data)
    if legend and fig.layout.annotations and fig.layout.showlegend is not False:
        top = fig.layout.margin.t if fig.layout.margin.t is not None else 60
        # At the top right of the whole figure (container coordinates), in a margin tall enough for it,
        # the figure title (top left) and the panel titles (just above the panels).
        fig.update_layout(legend=dict(orientation="h", yref="container", y=1.0, yanchor="top", xanchor="right",
                                      x=1.0), margin=dict(t=max(top, 90)))
    return fig


def _frame(rows, argument: str, required: Iterable[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows) if isinstance(rows, list) else rows
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{argument} must be a DataFrame (or a list of row dicts), got {type(rows).__name__}")
    missing = [c for c in required if c not in df.columns]
    if missing and len(df):
        raise ValueError(f"{argument} is missing columns {missing}; it has {list(df.columns)}")
    return df


def _finish(fig: go.Figure, title: str | None, height: int) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=title, height=height)
    return fig


def _bar_height(n_bars: int, rows: int = 1) -> int:
    return int(max(260, min(900 * rows, 120 + 24 * n_bars * rows)))


def empty_chart(message: str, title: str | None = None) -> go.Figure:
    """A blank figure that says why there is nothing to show."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(size=14, color="#52606d"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _finish(fig, title, 240)


def _share_bars(df: pd.DataFrame, colour: str, name: str | None = None, show_ci: bool = True) -> go.Bar:
    df = df.iloc[::-1]  # largest on top
    error = None
    if show_ci and {"ci_low", "ci_high"} <= set(df.columns):
        error = dict(type="data", symmetric=False, array=(df["ci_high"] - df["share"]).tolist(),
                     arrayminus=(df["share"] - df["ci_low"]).tolist(), color="#52606d", thickness=1.2, width=3)
    custom = df[["images_with_word", "n_images"]].to_numpy() if {"images_with_word", "n_images"} <= set(df) else None
    hover = "<b>%{y}</b><br>share %{x:.1%}"
    if custom is not None:
        hover += "<br>in %{customdata[0]} of %{customdata[1]} images"
    return go.Bar(x=df["share"], y=df["word"], orientation="h", marker_color=colour, error_x=error, name=name,
                  customdata=custom, hovertemplate=hover + "<extra></extra>")


def top_words_chart(shares: pd.DataFrame | list, k: int = 15, title: str | None = "Most frequent words",
                    colour: str = BLUE) -> go.Figure:
    """Horizontal bars of the `k` words with the largest share, with their confidence intervals."""
    df = _frame(shares, "shares", ("word", "share"))
    if df.empty:
        return empty_chart("No words to show", title)
    df = df.sort_values("share", ascending=False).head(k)
    fig = go.Figure(_share_bars(df, colour))
    fig.update_xaxes(title="share of an image's sentences", tickformat=".0%", rangemode="tozero")
    return _finish(fig, title, _bar_height(len(df)))


PANEL_BAR_PX = 26  # height of one bar row in a panel: at less, Plotly drops every other category label
PANEL_GAP_PX = 80  # between two rows of panels: the panel title and the axis' tick labels


def _panels(titles: list[str], per_row: int = 4, bars: int = 8) -> tuple[go.Figure, int, int, int]:
    """A grid of subplots, at most `per_row` across (nine classes side by side are unreadable), each tall
    enough for `bars` labelled bars; returns (figure, rows, cols, the figure's height in px)."""
    cols = max(1, min(len(titles), per_row))
    rows = -(-len(titles) // cols)
    panel = max(110, PANEL_BAR_PX * bars)
    height = 110 + rows * panel + (rows - 1) * PANEL_GAP_PX
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.16 if cols > 1 else 0.0,
                        vertical_spacing=PANEL_GAP_PX / max(height - 110, 1) if rows > 1 else 0.0)
    return fig, rows, cols, height


def _every_label(fig: go.Figure) -> None:
    """Every bar keeps its word (categorical axes may hide labels they find crowded) and the share axes keep
    few ticks, so neighbouring panels' percentages do not run into each other."""
    fig.update_yaxes(tickmode="linear", dtick=1, automargin=True)
    fig.update_xaxes(nticks=4, automargin=True)


def class_words_chart(shares: pd.DataFrame | list, by: str = "label", k: int = 10,
                      title: str | None = "Top words per class", per_row: int = 4) -> go.Figure:
    """Panels, one per value of `by` (e.g. class), `per_row` across, each with its top `k` words."""
    df = _frame(shares, "shares", (by, "word", "share"))
    if df.empty:
        return empty_chart("No words to show", title)
    values = list(dict.fromkeys(df[by]))
    longest = max(int((df[by] == v).sum()) for v in values)
    fig, rows, cols, height = _panels([str(v) for v in values], per_row, bars=min(k, longest))
    for i, value in enumerate(values):
        part = df[df[by] == value].sort_values("share", ascending=False).head(k)
        fig.add_trace(_share_bars(part, PALETTE[i % len(PALETTE)], name=str(value)), row=i // cols + 1,
                      col=i % cols + 1)
    fig.update_xaxes(tickformat=".0%", rangemode="tozero")
    _every_label(fig)
    fig.update_layout(showlegend=False)
    return _finish(fig, title, height)


def log_odds_chart(comparison: pd.DataFrame | list, k: int = 12, a_name: str | None = None,
                   b_name: str | None = None, title: str | None = None) -> go.Figure:
    """Butterfly chart of log-odds z-scores: the `k` words most typical of each set, a to the right."""
    df = _frame(comparison, "comparison", ("word", "z"))
    attrs = getattr(comparison, "attrs", {}) or {}
    a_name, b_name = a_name or attrs.get("a", "a"), b_name or attrs.get("b", "b")
    title = title if title is not None else f"Words typical of {a_name} vs. {b_name} (log-odds z)"
    if df.empty:
        return empty_chart("No words to compare", title)
    top_a = df[df["z"] > 0].nlargest(k, "z")
    top_b = df[df["z"] < 0].nsmallest(k, "z")
    both = pd.concat([top_b.iloc[::-1], top_a.iloc[::-1]]).sort_values("z")
    custom = both[["share_a", "share_b"]].to_numpy() if {"share_a", "share_b"} <= set(both) else None
    hover = "<b>%{y}</b><br>z %{x:.1f}"
    if custom is not None:
        hover += f"<br>share in {a_name} %{{customdata[0]:.1%}}<br>share in {b_name} %{{customdata[1]:.1%}}"
    fig = go.Figure(go.Bar(x=both["z"], y=both["word"], orientation="h",
                           marker_color=[BLUE if z > 0 else ORANGE for z in both["z"]],
                           customdata=custom, hovertemplate=hover + "<extra></extra>"))
    fig.add_vline(x=0, line_color="#52606d", line_width=1)
    fig.update_xaxes(title=f"← more in {b_name}     z-score     more in {a_name} →")
    return _finish(fig, title, _bar_height(len(both)))


def flags_chart(flags: pd.DataFrame | list, k: int = 5, title: str | None = "Spurious-term flags",
                per_row: int = 4) -> go.Figure:
    """Per class (`per_row` panels across), the top `k` flagged words: share in misread images (orange)
    vs. correctly read (blue)."""
    df = _frame(flags, "flags", ("class", "word", "share_wrong", "share_right"))
    if df.empty:
        return empty_chart("No word was flagged", title)
    classes = list(dict.fromkeys(df["class"]))
    counts = {c: int((df["class"] == c).sum()) for c in classes}
    # A panel that leaves flags out says so: the table beside it lists them all.
    names = [f"top {k} of {n} flags for {c}" if n > k else f"flags for {c}" for c, n in counts.items()]
    fig, rows, cols, height = _panels(names, per_row, bars=(3 * min(k, max(counts.values())) + 1) // 2)
    for i, cls in enumerate(classes):
        part = df[df["class"] == cls].head(k).iloc[::-1]
        targets = part["predicted_as"].dropna() if "predicted_as" in part else pd.Series(dtype=object)
        target = targets.iloc[0] if len(targets) else "another class"
        for column, colour, label in (("share_right", BLUE, "read correctly"),
                                      ("share_wrong", ORANGE, "misread")):
            fig.add_trace(go.Bar(x=part[column], y=part["word"], orientation="h", marker_color=colour,
                                 name=label, legendgroup=label, showlegend=i == 0,
                                 hovertemplate=f"<b>%{{y}}</b><br>{cls} images {label}"
                                               f"{' (as ' + str(target) + ')' if column == 'share_wrong' else ''}"
                                               ": %{x:.1%}<extra></extra>"),
                          row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(tickformat=".0%", rangemode="tozero")
    _every_label(fig)
    fig.update_layout(barmode="group")
    return _finish(fig, title, height)


def group_accuracy_chart(per_group: pd.DataFrame | list, worst_group: int | None = None,
                         average: float | None = None, title: str | None = "Accuracy per group") -> go.Figure:
    """Accuracy per group with Wilson intervals; the worst group in red, an optional average line.

    Few groups with short names stand as columns; many groups or long names (ImageNet-9's inferred groups)
    lie as rows, each name whole on its own line. The value sits past the interval's end, never on it.
    """
    df = _frame(per_group, "per_group", ("group", "accuracy"))
    if df.empty:
        return empty_chart("No groups", title)
    if worst_group is None:
        worst_group = int(df.loc[df["accuracy"].idxmin(), "group"])
    names = (df["group_name"] if "group_name" in df else df["group"].map(lambda g: f"group {g}")).astype(str)
    rows = len(df) > 6 or names.str.len().max() > 22
    has_ci = {"ci_low", "ci_high"} <= set(df.columns)
    spread = None
    if has_ci:
        spread = dict(type="data", symmetric=False, array=(df["ci_high"] - df["accuracy"]).tolist(),
                      arrayminus=(df["accuracy"] - df["ci_low"]).tolist(), color="#52606d", thickness=1.2)
    n = df["n"].tolist() if "n" in df else [None] * len(df)
    colours = [RED if int(g) == worst_group else GREY for g in df["group"]]
    top = (df["ci_high"] if has_ci else df["accuracy"]).tolist()
    if rows:
        fig = go.Figure(go.Bar(
            y=names, x=df["accuracy"], orientation="h", error_x=spread, customdata=n, marker_color=colours,
            showlegend=False, hovertemplate="<b>%{y}</b><br>accuracy %{x:.1%}<br>%{customdata} images<extra></extra>"))
        for name, end, a in zip(names, top, df["accuracy"]):
            fig.add_annotation(x=end, y=name, text=f"{a:.0%}", showarrow=False, xanchor="left", xshift=6,
                               font=dict(size=12, color="#1f2933"))
        if average is not None:
            fig.add_vline(x=average, line_dash="dash", line_color=BLUE, annotation_text=f"average {average:.0%}",
                          annotation_position="top")
        fig.update_xaxes(title="accuracy", tickformat=".0%", range=[0, 1.15])
        fig.update_yaxes(autorange="reversed", tickmode="linear", dtick=1, automargin=True)
        return _finish(fig, title, max(300, 110 + 30 * len(df)))
    fig = go.Figure(go.Bar(
        x=names, y=df["accuracy"], error_y=spread, customdata=n, marker_color=colours, showlegend=False,
        hovertemplate="<b>%{x}</b><br>accuracy %{y:.1%}<br>%{customdata} images<extra></extra>"))
    # Values above the interval's top, lifted clear of its cap: a bar's own label would sit on its error bar.
    for name, end, a in zip(names, top, df["accuracy"]):
        fig.add_annotation(x=name, y=end, text=f"{a:.0%}", showarrow=False, yanchor="bottom", yshift=4,
                           font=dict(size=12, color="#1f2933"))
    if average is not None:
        fig.add_hline(y=average, line_dash="dash", line_color=BLUE,
                      annotation_text=f"average {average:.0%}", annotation_position="top left")
    fig.update_yaxes(title="accuracy", tickformat=".0%", range=[0, 1.15])
    fig.update_xaxes(tickmode="linear", dtick=1, automargin=True)
    return _finish(fig, title, 380)


def variation_accuracy_chart(table: pd.DataFrame | list, title: str | None = "Accuracy per background variation"
                             ) -> go.Figure:
    """Accuracy per Backgrounds Challenge variation (core.dashboard_api.background_challenge's table) with
    Wilson intervals, drawn as group_accuracy_chart draws groups; mixed_rand (else the lowest) in red."""
    df = _frame(table, "table", ("variation", "accuracy"))
    if df.empty:
        return empty_chart("No variation runs", title)
    per_group = df.rename(columns={"variation": "group_name", "images": "n"}).assign(group=range(len(df)))
    variations = list(df["variation"])
    highlight = variations.index("mixed_rand") if "mixed_rand" in variations else None
    return group_accuracy_chart(per_group, highlight, title=title)


def class_variation_heatmap(by_class: pd.DataFrame | list, worst: dict | None = None,
                            title: str | None = "Accuracy per class and background variation") -> go.Figure:
    """Accuracy of each class (rows) in each variation (columns), red (low) to blue (high), the number of
    images in the hover; `worst` (a row of by_class, BackgroundChallenge.worst_cell) is outlined."""
    df = _frame(by_class, "by_class", ("variation", "class", "accuracy"))
    if df.empty:
        return empty_chart("No class x variation groups", title)
    columns = list(dict.fromkeys(df["variation"]))
    rows = list(dict.fromkeys(df["class"]))  # the dataset's class order
    grid = df.pivot_table(index="class", columns="variation", values="accuracy", aggfunc="first").reindex(
        index=rows, columns=columns)
    n = df.pivot_table(index="class", columns="variation", values="images", aggfunc="first").reindex(
        index=rows, columns=columns) if "images" in df else grid * float("nan")
    text = [[f"{v:.0%}" if pd.notna(v) else "" for v in r] for r in grid.to_numpy()]
    fig = go.Figure(go.Heatmap(
        z=grid.to_numpy(), x=columns, y=rows, zmin=0, zmax=1, text=text, texttemplate="%{text}",
        customdata=n.to_numpy(), colorscale=[[0, RED], [0.5, "#f4f1ea"], [1, BLUE]],
        colorbar=dict(title="accuracy", tickformat=".0%", thickness=12),
        hovertemplate="<b>%{y}</b> in %{x}<br>accuracy %{z:.1%}<br>%{customdata} images<extra></extra>"))
    if worst:
        x, y = columns.index(worst["variation"]), rows.index(worst["class"])
        fig.add_shape(type="rect", x0=x - 0.5, x1=x + 0.5, y0=y - 0.5, y1=y + 0.5, line=dict(color="#1f2933", width=3))
    fig.update_yaxes(autorange="reversed", showgrid=False)
    fig.update_xaxes(side="top", showgrid=False)
    return _finish(fig, title, int(max(300, min(900, 140 + 34 * len(rows)))))


def mitigation_chart(records: pd.DataFrame | list, title: str | None = "Before and after mitigation") -> go.Figure:
    """Worst-group and average accuracy before (blue) and after (orange) each mitigation method."""
    df = _frame(records, "records", ("method", "worst_group_before", "worst_group_after"))
    if df.empty:
        return empty_chart("No mitigation results", title)
    labels = list(df["label"]) if "label" in df else [
        f"{m} ({g} groups)" if "groups" in df and pd.notna(g) else str(m)
        for m, g in zip(df["method"], df.get("groups", [None] * len(df)))]
    metrics = [("worst_group", "worst group")]
    if {"average_before", "average_after"} <= set(df.columns):
        metrics.append(("average", "average"))
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[m[1] for m in metrics], shared_yaxes=True)
    for i, (metric, _) in enumerate(metrics):
        for when, colour in (("before", BLUE), ("after", ORANGE)):
            values = pd.to_numeric(df[f"{metric}_{when}"], errors="coerce")
            error = None
            if {f"{metric}_{when}_low", f"{metric}_{when}_high"} <= set(df.columns):
                low = pd.to_numeric(df[f"{metric}_{when}_low"], errors="coerce")
                high = pd.to_numeric(df[f"{metric}_{when}_high"], errors="coerce")
                if low.notna().any():  # 95% intervals (older records have none)
                    error = dict(type="data", symmetric=False, array=(high - values).fillna(0).tolist(),
                                 arrayminus=(values - low).fillna(0).tolist(), color="#555", thickness=1.2, width=4)
            fig.add_trace(go.Bar(x=labels, y=values, name=when, marker_color=colour, legendgroup=when,
                                 showlegend=i == 0, error_y=error,
                                 text=[f"{v:.0%}" if pd.notna(v) else "" for v in values],
                                 textposition="inside" if error else "outside", cliponaxis=False,
                                 # inside, at the base: the interval's whisker crosses the bar's top half
                                 insidetextanchor="start",
                                 hovertemplate="%{x}<br>" + when + " %{y:.1%}<extra></extra>"), row=1, col=i + 1)
    fig.update_yaxes(tickformat=".0%", range=[0, 1.1])
    fig.update_layout(barmode="group")
    return _finish(fig, title, 380)


def run_comparison_chart(changes: pd.DataFrame | list, by: str = "label", k: int = 8, a_name: str | None = None,
                         b_name: str | None = None, title: str | None = None, per_row: int = 4) -> go.Figure:
    """Per value of `by` (`per_row` panels across), the `k` words whose share changed most between run a
    (blue) and run b (orange)."""
    df = _frame(changes, "changes", (by, "word", "share_a", "share_b"))
    attrs = getattr(changes, "attrs", {}) or {}
    a_name, b_name = a_name or attrs.get("a", "run a"), b_name or attrs.get("b", "run b")
    title = title if title is not None else f"Words that changed most: {a_name} vs. {b_name}"
    if df.empty:
        return empty_chart("No shared classes to compare", title)
    values = list(dict.fromkeys(df[by]))
    longest = max(int((df[by] == v).sum()) for v in values)
    fig, rows, cols, height = _panels([str(v) for v in values], per_row, bars=(3 * min(k, longest) + 1) // 2)
    for i, value in enumerate(values):
        part = df[df[by] == value]
        part = part.reindex((part["share_b"] - part["share_a"]).abs().sort_values(ascending=False).index).head(k)
        part = part.iloc[::-1]
        for column, colour, label in (("share_a", BLUE, a_name), ("share_b", ORANGE, b_name)):
            fig.add_trace(go.Bar(x=part[column], y=part["word"], orientation="h", marker_color=colour, name=label,
                                 legendgroup=label, showlegend=i == 0,
                                 hovertemplate=f"<b>%{{y}}</b><br>{label}: %{{x:.1%}}<extra></extra>"),
                          row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(tickformat=".0%", rangemode="tozero")
    _every_label(fig)
    fig.update_layout(barmode="group")
    return _finish(fig, title, height)


def feature_map_chart(points: pd.DataFrame | list, colour: str = "class", title: str | None = None,
                      method: str | None = None) -> go.Figure:
    """The images as points in 2-D (core.analysis.images.read_feature_map joined to image_rows), coloured by a
    column: a category (class, group, correct) or a number in [0, 1] (a word's share). Each point carries its
    image_id as customdata, so a click can open it."""
    df = _frame(points, "points", ("image_id", "x", "y", colour))
    title = (title if title is not None
             else f"The classifier's features in 2-D{f' ({method.upper()})' if method else ''}")
    if df.empty:
        return empty_chart("No images on the map", title)
    hover = "<b>%{customdata[0]}</b><br>%{customdata[1]}<extra></extra>"
    detail = [f"{c} → {p}" + (f"<br>{w}" if w else "") for c, p, w in
              zip(df.get("class", [""] * len(df)), df.get("predicted", [""] * len(df)),
                  df.get("top_words", [""] * len(df)))]
    custom = list(zip(df["image_id"].astype(str), detail))
    fig = go.Figure()
    values = df[colour]
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        fig.add_trace(go.Scatter(x=df["x"], y=df["y"], mode="markers", customdata=custom, hovertemplate=hover,
                                   marker=dict(size=8, color=values, colorscale=[[0, "#e6e9ee"], [1, ORANGE]],
                                               cmin=0, cmax=max(float(values.max()), 1e-9),
                                               colorbar=dict(title=colour.replace("_", " "), tickformat=".0%",
                                                             thickness=12), line=dict(width=0.5, color="#52606d")),
                                   showlegend=False))
    else:
        labels = values.map(lambda v: {True: "read right", False: "misread"}.get(v, v) if isinstance(v, bool)
                            else ("unknown" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)))
        colours = {"read right": BLUE, "misread": RED, "unknown": GREY}
        for i, name in enumerate(dict.fromkeys(labels)):
            keep = (labels == name).to_numpy()
            fig.add_trace(go.Scatter(
                x=df["x"][keep], y=df["y"][keep], mode="markers", name=name,
                customdata=[c for c, k in zip(custom, keep) if k], hovertemplate=hover,
                marker=dict(size=8, color=colours.get(name, PALETTE[i % len(PALETTE)]),
                            line=dict(width=0.5, color="white"))))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    fig.update_layout(clickmode="event+select")  # a click selects one point (the dashboard opens it)
    return _finish(fig, title, 520)


def agreement_chart(table: pd.DataFrame, a_name: str, b_name: str, title: str | None = None) -> go.Figure:
    """The 2x2 table of two classifiers on the same images (core.analysis.agreement): counts, the cells where
    they disagree in orange."""
    df = _frame(table, "table", ("a", "b", "images"))
    title = title if title is not None else f"{a_name} vs. {b_name} on the same images"
    if df.empty:
        return empty_chart("No shared images", title)
    rows, cols = ["right", "wrong"], ["right", "wrong"]
    grid = df.pivot_table(index="a", columns="b", values="images", aggfunc="sum").reindex(index=rows, columns=cols)
    grid = grid.fillna(0).astype(int)
    colour = [[0 if r == c else 1 for c in cols] for r in rows]
    fig = go.Figure(go.Heatmap(z=colour, x=[f"{b_name}: {c}" for c in cols], y=[f"{a_name}: {r}" for r in rows],
                               text=grid.to_numpy(), texttemplate="%{text} images", showscale=False,
                               colorscale=[[0, "#e8f0fb"], [1, "#fdf0e3"]], zmin=0, zmax=1,
                               hovertemplate="%{y}, %{x}: %{text} images<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return _finish(fig, title, 260)
