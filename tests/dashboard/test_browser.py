"""The dashboard in a real browser: `streamlit run dashboard/Home.py` driven by Chromium through Playwright.

Every page opens without an exception and is screenshotted into tests/artifacts/screenshots/ (laptop width,
full length); the main flows run end to end: choose two runs and compare them, mark a word on Spurious
terms and see it flagged, download a report and read it. The shipped demo runs are used when they exist
(copied to a temporary folder, so marks never touch the repo), else synthetic runs.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "tests" / "artifacts" / "screenshots"
LAPTOP = {"width": 1440, "height": 900}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PAGES = [("", "Home", "TExplain Studio"), ("Images", "Images", "Images"),
         ("Explain_an_image", "Explain an image", "Explain an image"),
         ("Class_words", "Class words", "Class words"), ("Spurious_terms", "Spurious terms", "Spurious terms"),
         ("Worst-group_accuracy", "Worst-group accuracy", "Worst-group accuracy"),
         ("Compare_classifiers", "Compare classifiers", "Compare classifiers"), ("Report", "Report", "Report"),
         ("New_run", "New run", "New run")]
DEMO_RUNS = ("demo-erm-test", "demo-erm-fixed-test", "demo-robust-test")

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: the real-browser suite "
                                                               "needs Debian's chromium package")]
pytest.importorskip("playwright.sync_api", reason="the real-browser suite needs playwright (requirements-dev.txt)")


def _demo_runs_ready() -> bool:
    from core import paths

    for name in DEMO_RUNS:
        try:
            manifest = json.loads((paths.SHIPPED_RUNS / name / "manifest.json").read_text())
        except (OSError, ValueError):
            return False
        if manifest.get("status") != "complete":
            return False
    return True


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Run folders for the server: copies of the shipped demo runs when present, else synthetic ones."""
    from core import paths
    from tests.dashboard_fixtures import make_world

    root = tmp_path_factory.mktemp("browser")
    if _demo_runs_ready():
        shipped = root / "shipped"
        shutil.copytree(paths.SHIPPED_RUNS, shipped, ignore=shutil.ignore_patterns("job.json", "*.log"))
        user = root / "user"
        user.mkdir()
        not_a_dataset = root / "not-a-dataset"
        not_a_dataset.mkdir()
        (not_a_dataset / "notes.txt").write_text("no images here")
        return {"shipped": shipped, "user": user, "demo": True, "not_a_dataset": not_a_dataset}
    made = make_world(root)
    return {**made, "demo": False}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    """`streamlit run dashboard/Home.py` on a free port; its base URL."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("server") / "streamlit.log", "w")
    env = {**os.environ, "TEXPLAIN_SHIPPED_RUNS": str(world["shipped"]), "TEXPLAIN_RUNS": str(world["user"])}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard/Home.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            log.close()
            pytest.fail(f"streamlit did not start: {Path(log.name).read_text()[-2000:]}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport=LAPTOP, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(180_000)
    yield pg
    context.close()


# --- helpers -----------------------------------------------------------------------------------------

def settle(page, rerun: bool = True, timeout_s: float = 240) -> None:
    """Wait until the script has run (after the rerun an action starts, when `rerun`) and every chart is drawn."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    if rerun:
        try:  # a rerun starts within a moment of the click; a very fast one may already be over
            page.wait_for_selector('[data-testid="stApp"][data-test-script-state="running"]', timeout=3000)
        except PlaywrightTimeout:
            pass
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_s * 1000)
    page.wait_for_function("""() => Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]'))
                                  .every(c => c.querySelector('.main-svg'))""", timeout=60_000)
    page.wait_for_timeout(500)


def open_page(page, base: str, slug: str) -> None:
    page.goto(f"{base}/{slug}")
    page.wait_for_selector("h1", timeout=120_000)
    settle(page, rerun=False)


def go(page, nav_label: str) -> None:
    """Follow a sidebar link (keeps the session, unlike a new URL)."""
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=re.compile(f"^{re.escape(nav_label)}$")).click()
    settle(page)


def open_options(page, label: str) -> None:
    """Open the option list of the selectbox labelled `label` (its "Open" button; retried once)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box = page.get_by_role("combobox", name=label, exact=True)
    for _ in range(3):
        box.locator("xpath=..").get_by_role("button", name="Open").click()
        try:
            page.get_by_role("option").first.wait_for(timeout=5000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    raise AssertionError(f"the options of {label!r} do not open")


def pick(page, label: str, option: str) -> None:
    """Choose the option matching regex `option` in the selectbox labelled `label`, and check it was chosen: on a
    busy machine a click can land while the list is still moving, and the list then stays open (retried)."""
    box = page.get_by_role("combobox", name=label, exact=True)
    for _ in range(3):
        open_options(page, label)
        page.get_by_role("option", name=re.compile(option)).first.click()
        settle(page)
        shown = box.input_value()  # the chosen option's text
        if re.search(option, shown):
            return
        page.keyboard.press("Escape")
    raise AssertionError(f"{label!r} does not take the option {option!r}; it shows {shown!r}")


def wait_for_text(page, text: str | re.Pattern, timeout_s: float = 120) -> None:
    """Wait until `text` is on the page (an action's result may take a second rerun to show), then settle."""
    page.get_by_text(text).first.wait_for(timeout=timeout_s * 1000)
    settle(page, rerun=False)


def flag_count(page, cls: str) -> int:
    """The number of flags in the Spurious terms tab of class `cls` ("Flags for landbird (5)")."""
    label = page.get_by_role("tab", name=re.compile(f"^Flags for {cls} ")).first.inner_text()
    return int(re.search(r"\((\d+)\)", label).group(1))


def assert_no_exception(page, where: str) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, f"{where}: an exception is shown"
    assert "Traceback" not in page.inner_text("body"), f"{where}: a traceback is shown"


def screenshot(page, name: str) -> Path:
    """The whole page (the app scrolls inside its main container), at laptop width."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate("""() => { const m = document.querySelector('[data-testid="stMain"]')
                                        || document.querySelector('section.main');
                                      return m ? m.scrollHeight : document.body.scrollHeight; }""")
    page.set_viewport_size({"width": LAPTOP["width"], "height": int(min(max(height + 20, LAPTOP["height"]), 7000))})
    page.wait_for_timeout(800)  # charts follow the new size
    out = SHOTS / f"{name}.png"
    page.screenshot(path=str(out), full_page=True)
    page.set_viewport_size(LAPTOP)
    return out


# --- tests ---------------------------------------------------------------------------------------------

def test_every_page_opens_without_exception(page, server):
    for i, (slug, _, title) in enumerate(PAGES):
        open_page(page, server, slug)
        assert_no_exception(page, title)
        assert title in page.locator("h1").first.inner_text()
        overflow = page.evaluate("""() => { const m = document.querySelector('[data-testid="stMain"]');
                                          return m ? m.scrollWidth - m.clientWidth : 0; }""")
        assert overflow <= 1, f"{title} scrolls sideways at laptop width ({overflow}px)"
        shot = screenshot(page, f"{i}_{slug or 'Home'}")
        assert shot.stat().st_size > 10_000


def test_home_opens_on_the_demo_runs(page, server, world):
    open_page(page, server, "")
    body = page.inner_text("body")
    b = "demo-erm-fixed-test" if world["demo"] else "demo-robust-test"  # ERM next to ERM fixed by default
    assert "Run A: demo-erm-test" in body and f"Run B: {b}" in body
    if world["demo"]:
        assert "Detect, fix, compare." in body and "95% interval" in body
    assert "Worst-group accuracy" in body and "Top flagged spurious terms" in body
    assert "found" in body  # asset status


def test_choose_two_runs_and_compare(page, server, world):
    open_page(page, server, "")
    pick(page, "Run A", "^demo-erm-test")
    pick(page, "Run B (to compare)", "^demo-robust-test")
    go(page, "Compare classifiers")
    assert_no_exception(page, "Compare classifiers")
    body = page.inner_text("body")
    assert "A: demo-erm-test" in body and "B: demo-robust-test" in body
    assert "Words whose share changed most" in body and "Flags, side by side" in body
    assert page.locator('[data-testid="stMetric"]').count() >= 4
    screenshot(page, "flow_compare")
    # A run on other data (or another split) is refused with the reason, and the page keeps working.
    other = "demo-erm-val" if world["demo"] else "other-data-run"
    open_options(page, "Run B (to compare)")
    options = page.get_by_role("option", name=re.compile(f"^{other}"))
    if options.count():
        options.first.click()
        wait_for_text(page, "These runs are not on the same data")
        assert_no_exception(page, "Compare classifiers, other data")
        screenshot(page, "flow_compare_other_data")
    else:
        page.keyboard.press("Escape")


def test_mark_a_word_spurious_and_see_it_flagged(page, server):
    open_page(page, server, "Spurious_terms")
    before = flag_count(page, "landbird")  # "snow": in the demo run's sentences, not flagged by the analysis
    form = page.locator('[data-testid="stForm"]')
    form.get_by_role("textbox", name="Word").fill("snow")
    form.get_by_text("spurious", exact=True).click()
    form.get_by_role("button", name="Save mark").click()
    wait_for_text(page, "Saved: 'snow' is now spurious for landbird")
    assert_no_exception(page, "Spurious terms after marking")
    marks = page.locator('[data-testid="stMarkdownContainer"]').filter(has_text="Your marks")
    assert "snow" in marks.first.inner_text()
    # The analysis now flags it, from the user's mark: one more flag for landbird, and its evidence.
    assert flag_count(page, "landbird") == before + 1
    pick(page, "Flag", r"^snow \(flagged for landbird\)")
    # Its evidence says it is the user's flag (with its statistics when misread images use it).
    assert re.search(r"\bsnow\b.*marked spurious (for landbird )?by the user", page.inner_text("body"))
    screenshot(page, "flow_spurious_marked")
    # Undo, so the other tests see the run as it was.
    form = page.locator('[data-testid="stForm"]')
    form.get_by_role("textbox", name="Word").fill("snow")
    form.get_by_text("no mark", exact=True).click()
    form.get_by_role("button", name="Save mark").click()
    wait_for_text(page, "'snow' is now unmarked for landbird")


def test_download_reports(page, server):
    open_page(page, server, "Report")
    assert_no_exception(page, "Report")
    with page.expect_download() as info:
        page.get_by_role("button", name=re.compile("JSON")).click()
    report = json.loads(Path(info.value.path()).read_text())
    assert info.value.suggested_filename == "demo-erm-test-report.json"
    assert Path(report["run"]["path"]).name == "demo-erm-test" and report["run"]["name"]
    flagged = [f["word"] for flags in report["flags"]["by_class"].values() for f in flags]
    assert flagged, "the demo run has flags"
    with page.expect_download() as info:
        page.get_by_role("button", name=re.compile("Markdown")).click()
    markdown = Path(info.value.path()).read_text()
    assert report["run"]["name"] in markdown and all(w in markdown for w in flagged[:3])
    with page.expect_download() as info:
        page.get_by_role("button", name=re.compile("HTML")).click()
    html = Path(info.value.path()).read_text()
    assert "TExplain bias report" in html and flagged[0] in html
    # The comparison report, once run B is chosen.
    page.get_by_text(re.compile("compared with demo-(erm-fixed|robust)-test")).click()
    wait_for_text(page, re.compile("^Comparison with "))  # the preview's comparison section
    with page.expect_download() as info:
        page.get_by_role("button", name=re.compile("JSON")).click()
    compared = json.loads(Path(info.value.path()).read_text())
    assert compared["comparison"]["run"]["name"]
    screenshot(page, "flow_report")


def test_new_run_rejects_a_folder_that_is_not_a_dataset(page, server, world):
    open_page(page, server, "New_run")
    field = page.get_by_role("textbox", name="Dataset folder")
    field.fill(str(world["not_a_dataset"]))
    field.press("Enter")
    wait_for_text(page, "This folder is not a dataset TExplain can read")
    assert_no_exception(page, "New run with a bad folder")
    screenshot(page, "flow_new_run_bad_folder")


# --- the workbench -------------------------------------------------------------------------------------

def table_rows(page) -> int:
    """The rows the Images table reports ("**40** of 200 images match")."""
    text = page.get_by_text(re.compile(r"of \d+ images match")).first.inner_text()
    return int(re.search(r"(\d+) of \d+ images match", text).group(1))


def test_images_page_filters_and_maps_every_image(page, server):
    open_page(page, server, "Images")
    assert_no_exception(page, "Images")
    everything = table_rows(page)
    page.wait_for_selector('[data-testid="stDataFrame"]', timeout=60_000)  # the grid draws after the count's line
    assert everything > 0
    pick(page, "Prediction", "^misread$")
    misread = table_rows(page)
    assert 0 < misread < everything
    field = page.get_by_role("textbox", name="Sentences use the word")
    field.fill("zebra-that-no-sentence-uses")
    field.press("Enter")
    wait_for_text(page, "No image matches these filters.")
    field.fill("")
    field.press("Enter")
    settle(page)
    # The map: computed once with the run's own classifier, with a progress bar, then drawn.
    page.get_by_role("button", name="Compute the map").click()
    wait_for_text(page, "Colour by", timeout_s=600)
    assert_no_exception(page, "Images with the map")
    # The chart's element comes a render after the selectbox above it (Plotly loads lazily); wait, then count.
    page.wait_for_selector('[data-testid="stPlotlyChart"]', timeout=60_000)
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 1
    screenshot(page, "flow_images")
    # A click on a point of the map opens that image's explanation.
    page.locator('[data-testid="stPlotlyChart"]').last.scroll_into_view_if_needed()
    page.wait_for_function("""() => { const gds = document.querySelectorAll('.js-plotly-plot');
        return gds.length > 0 && gds[gds.length - 1]._fullLayout && gds[gds.length - 1]._fullData; }""",
                           timeout=60_000)
    page.wait_for_timeout(1000)
    x, y = page.evaluate("""() => { const gds = document.querySelectorAll('.js-plotly-plot');
        const gd = gds[gds.length - 1], fl = gd._fullLayout, tr = gd._fullData[0], r = gd.getBoundingClientRect();
        return [r.left + fl.xaxis._offset + fl.xaxis.l2p(tr.x[0]),
                r.top + fl.yaxis._offset + fl.yaxis.l2p(tr.y[0])]; }""")
    page.mouse.click(x, y)
    wait_for_text(page, "True class")
    assert "Explain an image" in page.locator("h1").first.inner_text() and "image=" in page.url


def test_a_flagged_word_opens_its_slice(page, server):
    open_page(page, server, "Spurious_terms")
    # The first visible one: a class tab that is not open keeps its buttons in the page, hidden.
    button = page.locator('[class*="st-key-slice-error-"] button:visible').first
    word = button.inner_text().strip().splitlines()[-1].strip()
    button.click()
    wait_for_text(page, "Images in the slice")
    assert_no_exception(page, "Images, a flag's slice")
    assert page.get_by_role("textbox", name="Words (comma-separated)").input_value() == word
    assert "Accuracy in the slice" in page.inner_text("body")
    screenshot(page, "flow_slice_from_flag")


def test_a_flipped_image_on_compare_opens_its_explanation(page, server):
    open_page(page, server, "Compare_classifiers")
    assert_no_exception(page, "Compare classifiers")
    body = page.inner_text("body")
    assert "Image by image" in body and "McNemar" in body
    tab = page.get_by_role("tab", name=re.compile(r"^Fixed by B \(\d+\)"))
    fixed = int(re.search(r"\((\d+)\)", tab.inner_text()).group(1))
    assert fixed > 0
    page.locator('[class*="st-key-flip-fixed-by-B-"] button').first.click()
    wait_for_text(page, "True class")
    assert_no_exception(page, "Explain an image, from a flip")
    assert "image=" in page.url  # the image is in the URL: a reload shows it again
    screenshot(page, "flow_flip_to_explain")


def test_the_runs_chosen_survive_a_reload(page, server):
    open_page(page, server, "")
    pick(page, "Run A", "^demo-robust-test")
    assert "a=demo-robust-test" in page.url
    page.reload()
    page.wait_for_selector("h1")
    settle(page, rerun=False)
    assert "Run A: demo-robust-test" in page.inner_text("body")


def test_a_word_map_over_the_image_beside_the_class_gradcam(page, server, world):
    if not world["demo"]:
        pytest.skip("a word map needs the run's models: the demo's (texplain setup builds them)")
    open_page(page, server, "Explain_an_image")
    assert_no_exception(page, "Explain an image")
    page.get_by_text("Where in the image a word comes from").first.scroll_into_view_if_needed()
    page.get_by_role("button", name=re.compile(r"^Show where '.+' comes from$")).click()
    wait_for_text(page, "Grad-CAM of the predicted class", timeout_s=600)  # loads the real models the first time
    assert_no_exception(page, "Explain an image, a word map")
    body = page.inner_text("body")
    # The demo run's pointing game found the birds far more often by occlusion (84% against 40%): drawn so first.
    assert "Method: occlusion" in body and "Its peak (the ring) is in the" in body
    assert "maps by occlusion" in body and "the image's centre:" in body
    maps = page.locator('[data-testid="stImage"] img')
    drawn = page.evaluate("""() => Array.from(document.querySelectorAll('[data-testid="stImage"] img'))
                                   .slice(-2).map(i => [i.naturalWidth, i.naturalHeight])""")
    assert maps.count() >= 4 and all(w > 100 and w == h for w, h in drawn)  # two square maps of the centre crop
    # The opacity slider redraws both from the stored map (nothing is computed again).
    slider = page.get_by_role("slider", name="Map opacity")
    slider.focus()
    for _ in range(4):
        slider.press("ArrowLeft")
    settle(page)
    assert_no_exception(page, "Explain an image, map opacity")
    screenshot(page, "flow_word_map")
