"""The shipped demo in the dashboard: ERM next to ERM fixed from its own explanations, and a clean repo after use.

Runs every page on the real shipped runs (checkpoints/runs) with the user's runs in a temporary folder,
marks a word, runs the mitigation from the Worst-group page as a background job, and checks that the
results show up and that nothing under the tracked checkpoints/ changed (git status before == after).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")

from core import jobs, paths  # noqa: E402
from core.store import user_file  # noqa: E402
from tests.dashboard_fixtures import run_page as fixtures_run_page  # noqa: E402
from tests.dashboard_fixtures import texts  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "dashboard"
FIXED_RUN = paths.SHIPPED_RUNS / "demo-erm-fixed-test"
pytestmark = [pytest.mark.demo, pytest.mark.skipif(
    not (FIXED_RUN / "manifest.json").exists() or not (paths.DEMO_DATA / "metadata.csv").exists()
    or not (paths.LM_DIR / "config.json").exists(), reason="the shipped demo or its assets are missing; `make setup`")]


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "checkpoints"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def user_runs(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:  # restored however the module's tests end
        env.delenv("TEXPLAIN_SHIPPED_RUNS", raising=False)
        env.setenv("TEXPLAIN_RUNS", str(tmp_path_factory.mktemp("user") / "runs"))
        before = git_status()
        yield Path(os.environ["TEXPLAIN_RUNS"])
        assert git_status() == before, "using the dashboard changed files under checkpoints/"


def run_page(page: str, **state):
    return fixtures_run_page(page, timeout=300, **state)


def test_home_and_compare_open_on_erm_and_the_fixed_classifier(user_runs):
    record = next(r for r in json.loads((paths.SHIPPED_RUNS / "demo-erm-test" / "mitigation.json").read_text())
                  if r["method"] == "dfr" and r["groups"] == "inferred")
    low, high = record["intervals"]["worst_group_change"]
    at = run_page("Home.py")
    text = texts(at)
    assert "Run A: demo-erm-test" in text and "Run B: demo-erm-fixed-test" in text
    # Green only when the interval clears zero; otherwise a neutral note that says so.
    shown = at.success if low > 0 else at.info
    banner = next(s.value for s in shown if "Detect, fix, compare" in s.value)
    gain = round(100 * (record["worst_group_after"] - record["worst_group_before"]))
    assert f"{gain:+d} pts (95% interval {100 * low:+.0f} to {100 * high:+.0f} pts)" in banner
    assert ("not clearly better" in banner) == (low <= 0)
    assert "groups inferred from its explanations" in banner

    at = run_page("pages/6_Compare_classifiers.py")
    worst = [m for m in at.metric if m.label == "Worst-group accuracy"]
    assert [m.value for m in worst] == [f"{100 * record['worst_group_before']:.1f}%",
                                       f"{100 * record['worst_group_after']:.1f}%"]
    assert worst[1].proto.delta == f"{100 * (record['worst_group_after'] - record['worst_group_before']):+.1f} pts"
    assert "same words" in texts(at)  # same features, same translator: only the last layer differs
    assert at.radio[0].value == "predicted class"


def test_every_page_and_a_mitigation_from_the_dashboard_leave_checkpoints_untouched(user_runs):
    for page in ("Home.py", *sorted(p.relative_to(PAGES).as_posix() for p in (PAGES / "pages").glob("*.py"))):
        run_page(page)
    # Mark a word on a shipped run: saved with the user's runs, not in the run folder.
    at = run_page("pages/4_Spurious_terms.py")
    at.text_input(key="mark_word").set_value("puddle")
    at.radio(key="mark_action").set_value("spurious")
    next(b for b in at.button if b.label == "Save mark").click().run()
    assert not at.exception
    marks = user_file(paths.SHIPPED_RUNS / "demo-erm-test", "annotations.json")
    assert "puddle" in json.dumps(json.loads(marks.read_text()))
    # Run DFR from the Worst-group page, in the background, and wait for its results.
    at = run_page("pages/5_Worst-group_accuracy.py")
    assert any(m.label == "Worst group, fixed from the explanations" for m in at.metric)
    form = [s for s in at.selectbox if s.label == "Groups (DFR)"][0]
    form.set_value("inferred")
    next(b for b in at.button if b.label == "Run in the background").click().run()
    assert not at.exception, [e.value for e in at.exception]
    folder = user_file(paths.SHIPPED_RUNS / "demo-erm-test", "mitigation.json").parent
    deadline = time.time() + 600
    while jobs.job_status(folder, kind="mitigate").running and time.time() < deadline:
        time.sleep(2)
    status = jobs.job_status(folder, kind="mitigate")
    assert status.state == "complete", status.log_tail
    at = run_page("pages/5_Worst-group_accuracy.py")
    table = next(d.value for d in at.dataframe if "label" in d.value)
    assert "dfr (inferred groups), yours" in table["label"].tolist()
    assert "dfr (inferred groups), shipped" in table["label"].tolist()
    assert (user_runs / "classifiers" / "demo-erm" / "dfr-inferred" / "model.safetensors").exists()
    # The fixed classifier's run (the test run's explanations, new predictions) is ready to compare.
    from core import store
    from dashboard import backend as api

    entries = {e.folder: e for e in store.discover_runs({"shipped": paths.SHIPPED_RUNS, "yours": user_runs})}
    mine = entries["demo-erm-test-dfr-inferred"]
    assert mine.ok and mine.status == "complete"
    link = api.mitigation_link(entries["demo-erm-test"], mine)
    assert link is not None and link.record["source"] == "yours" and "95% interval" in link.sentence()
