"""The evidence behind a flag, for the report and the dashboard: where in an image the flagged word comes from (word
maps, drawn over the image and stored with the run once computed), whether the classifier uses it (the causal test's
stored verdict, core.evaluation.causal) and how often a run's word maps were measured to point right (the pointing
game's word_maps.json, core.evaluation.pointing).

    wm = compute_map(run, image_id, "lake", classifier, translator, lm)   # later: stored_map(run.path, id, "lake")
    picture = overlay(image, wm.heatmap, classifier.preprocessing)      # the map over what the classifier sees
    record = causal_for(read_causal(run.path), "landbird", "lake", predicted="waterbird")
    causal_text(record), reliability_text(map_reliability(run.path))

Maps are stored as small files under the run's `maps/` folder (a shipped run's under runs/.shipped/), so the
dashboard shows a map it computed once at once, and the HTML report embeds the maps that were computed without
loading any model.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from core.evaluation.openworld import is_scene_word
from core.store import CAUSAL_FILE, run_files

MAPS_FOLDER = "maps"  # word maps computed for a run's images, one .npz file per (image, word)
POINTING_FILE = "word_maps.json"  # the pointing game on a run (texplain maintain word-maps)
MAP_METHODS = ("auto", "occlusion")  # what a page may ask compute_map for
# The colours of a map, from cold to hot ("jet", as Grad-CAM figures draw them): blue, cyan, yellow, red. Blue and
# red stand out on most photos, where a dark-to-yellow scale vanished into autumn leaves and sand.
_COLOURS = np.array([(0, 0, 160), (0, 90, 255), (0, 230, 255), (255, 240, 0), (255, 60, 0), (170, 0, 0)],
                    dtype=float)
MAX_SIDE = 640  # pixels of a drawn map's longer side


# --- word maps: computed, stored, read back -------------------------------------------------------------------

def _map_file(run_path, image_id, word: str, which: str = "yours", method: str = "auto") -> Path:
    from core.store import user_file

    # "auto" keeps the name maps had before a method could be asked for; occlusion, asked for, gets its own file.
    key = f"{image_id}\0{word}" + (f"\0{method}" if method != "auto" else "")
    digest = hashlib.sha1(key.encode()).hexdigest()[:20]
    folder = user_file(run_path, MAPS_FOLDER) if which == "yours" else Path(run_path) / MAPS_FOLDER
    return folder / f"{digest}.npz"


def save_map(run_path, image_id, wm, preprocessing=None, method: str = "auto") -> Path:
    """Store a WordMap of one of the run's images (8 bits per pixel: a picture, not a measurement), with the crop
    it covers (`preprocessing`'s resize and crop), so that it can be drawn without loading the classifier.
    `method`: the one asked for ("auto" or "occlusion"), which names the file."""
    path = _map_file(run_path, image_id, wm.word, method=method)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"image_id": str(image_id), "word": wm.word, "method": wm.method, "log_prob": wm.log_prob,
            "occurrences": wm.occurrences, "sentences": wm.sentences, "occlusion": wm.occlusion}
    if preprocessing is not None:
        meta.update(resize=preprocessing.resize, crop=preprocessing.crop)
    buf = io.BytesIO()
    np.savez_compressed(buf, heatmap=np.round(np.clip(wm.heatmap, 0, 1) * 255).astype(np.uint8),
                        meta=np.array(json.dumps(meta)))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return path


def _read_map(run_path, image_id, word: str, method: str = "auto") -> tuple[np.ndarray, dict] | None:
    # An occlusion map asked for may be the "auto" one: a classifier without a spatial map is mapped by occlusion.
    files = [(which, m) for m in dict.fromkeys((method, "auto")) for which in ("yours", "shipped")]
    for which, m in files:
        path = _map_file(run_path, image_id, word, which, m)
        if not path.is_file():
            continue
        try:
            with np.load(path) as f:
                heat, meta = f["heatmap"].astype(np.float32) / 255.0, json.loads(str(f["meta"]))
        except (OSError, ValueError, KeyError):
            continue  # a broken file is a map not computed yet
        if meta.get("image_id") == str(image_id) and meta.get("word") == word \
                and (method == "auto" or meta.get("method") == method) and not _stale(meta):
            return heat, meta
    return None


def _stale(meta: dict) -> bool:
    """An occlusion map drawn otherwise than occlusion maps are drawn now (an older window, fill or mode) is
    redrawn."""
    from core.engine.word_map import Occlusion

    return meta.get("method") == "occlusion" and not Occlusion.is_current(meta.get("occlusion"))


def stored_map(run_path, image_id, word: str, method: str = "auto"):
    """The stored WordMap of (image, word) for a run (yours, else one shipped with it), drawn by `method` ("auto":
    as compute_map draws it by default; "occlusion"), or None."""
    from core.engine.word_map import WordMap

    word = word.strip().lower()
    found = _read_map(run_path, image_id, word, method)
    if found is None:
        return None
    heat, meta = found
    return WordMap(word, heat, meta["method"], float(meta["log_prob"]), int(meta["occurrences"]),
                   int(meta["sentences"]), meta.get("occlusion"))


def stored_picture(run, image_id, word: str, opacity: float = 0.5, method: str = "auto"):
    """The stored map of (image, word) drawn over the run's image (overlay), or None when it was never computed
    or the image cannot be read; no model is loaded. `method` as stored_map's."""
    from types import SimpleNamespace

    from core.data import DatasetError, load_rgb
    from core.store import Run

    run = run if isinstance(run, Run) else Run.open(run)
    found = _read_map(run.path, image_id, word.strip().lower(), method)
    if found is None:
        return None
    heat, meta = found
    images = run.images()
    row = images[images["image_id"].astype(str) == str(image_id)]
    if row.empty:
        return None
    try:
        image = load_rgb(run.image_path(str(row["path"].iloc[0])))
    except DatasetError:
        return None
    crop = SimpleNamespace(resize=meta["resize"], crop=meta["crop"]) if "crop" in meta else None
    return overlay(image, heat, crop, opacity)


def _explain_config(manifest: dict, n_sentences: int):
    from core.engine.config import ExplainConfig

    s = manifest.get("settings") or {}
    kw = {k: s[k] for k in ("top_p", "temperature", "max_new_tokens", "seed") if k in s}
    per = s.get("sentences_per_image")
    return ExplainConfig(sentences_per_image=per if isinstance(per, int) else max(1, int(n_sentences)), **kw)


def compute_map(run, image_id, word: str, classifier, translator, lm, extractor=None, store: bool = True,
                method: str = "auto"):
    """The WordMap of `word` over one of a run's images, from the run's own sentences (core.engine.word_map), stored
    with the run. A run that kept only a sample of each image's sentences gets the image's sentences sampled again
    when the word is in none of those kept (the counter-based sampler draws the run's own). ValueError names the
    image's words when it uses none. `method`: "auto" (the gradient where the classifier has a spatial feature map)
    or "occlusion"."""
    if method not in MAP_METHODS:
        raise ValueError(f"method must be one of {MAP_METHODS}, got {method!r}")
    from core.data import load_rgb
    from core.engine.word_map import word_map
    from core.store import Run

    run = run if isinstance(run, Run) else Run.open(run)
    images = run.images()
    row = images[images["image_id"].astype(str) == str(image_id)]
    if row.empty:
        raise ValueError(f"image {image_id!r} is not in run {run.name}")
    r = row.iloc[0]
    image = load_rgb(run.image_path(str(r["path"])))
    sentences = run.sentences([r["image_id"]])["text"].tolist()
    # A classifier read in a dataset's classes (SuperclassClassifier) has its base's features: map those, with the
    # base's spatial feature map (the wrapper has none to differentiate).
    features = getattr(classifier, "base", classifier)
    try:
        wm = word_map(image, word, features, translator, lm, sentences=sentences, extractor=extractor, method=method)
    except ValueError:
        n = int(r["n_sentences"]) if r["n_sentences"] == r["n_sentences"] and r["n_sentences"] else 0
        if len(sentences) >= n:
            raise
        wm = word_map(image, word, features, translator, lm, image_id=r["image_id"],
                      cfg=_explain_config(run.manifest, n), extractor=extractor, method=method)
    if store:
        save_map(run.path, r["image_id"], wm, getattr(classifier, "preprocessing", None), method)
    return wm


def class_map(image, classifier, class_index: int | None = None) -> np.ndarray | None:
    """Grad-CAM of `class_index` (None: the predicted class) over the classifier's input crop, (H, W) in [0, 1];
    None without a spatial feature map (core.engine.word_map.class_map, imported here when asked for: a report
    loads no torch)."""
    from core.engine.word_map import class_map as grad_cam

    return grad_cam(image, classifier, class_index)


# --- drawing a map over its image -----------------------------------------------------------------------------

def crop_box(size: tuple[int, int], preprocessing) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the part of an image of `size` (width, height) that the classifier sees: the
    centre crop after its shorter side is resized (core.models.classifier.Preprocessing)."""
    w, h = size
    side = min(w, h) * min(1.0, preprocessing.crop / preprocessing.resize)
    return ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)


def colour(heat: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 colours, dark blue (0) to dark red (1)."""
    t = np.clip(heat, 0, 1) * (len(_COLOURS) - 1)
    i = np.minimum(t.astype(int), len(_COLOURS) - 2)
    f = (t - i)[..., None]
    return np.round(_COLOURS[i] * (1 - f) + _COLOURS[i + 1] * f).astype(np.uint8)


def overlay(image, heatmap: np.ndarray, preprocessing=None, opacity: float = 0.5, peak: bool = True,
            max_side: int = MAX_SIDE):
    """A map over its image (a PIL image): the image cut to what the classifier sees (`preprocessing`'s crop; None:
    the whole image), the map's colours laid over it with `opacity` (0: the photo alone, 1: the map alone), and a
    ring at the map's peak."""
    from PIL import Image, ImageDraw

    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    im = image.convert("RGB")
    if preprocessing is not None:
        im = im.crop(tuple(int(round(v)) for v in crop_box(im.size, preprocessing)))
    scale = min(1.0, max_side / max(im.size))
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS)
    heat = Image.fromarray(np.round(np.clip(heatmap, 0, 1) * 255).astype(np.uint8)).resize(im.size,
                                                                                        Image.Resampling.BILINEAR)
    heat = np.asarray(heat, dtype=np.float32) / 255.0
    out = Image.fromarray(np.round(np.asarray(im, dtype=np.float32) * (1 - opacity) + colour(heat) * opacity)
                          .astype(np.uint8))
    if peak and heat.max() > 0:
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        r = max(5, round(min(out.size) / 24))
        draw = ImageDraw.Draw(out)
        draw.ellipse((x - r - 1, y - r - 1, x + r + 1, y + r + 1), outline=(0, 0, 0), width=2)
        draw.ellipse((x - r, y - r, x + r, y + r), outline=(255, 255, 255), width=2)
    return out


def image_data_uri(image, max_side: int = 240) -> str:
    """A PIL image as a data: URI (JPEG, at most `max_side` pixels on its longer side), for a self-contained page."""
    import base64

    im = image.convert("RGB")
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# --- maps of a report's example images -----------------------------------------------------------------------

def example_maps(report: dict, per_flag: int = 3, limit: int = 24) -> dict:
    """{(class, word): [{"image_id", "uri"}]}: the stored maps of each error-view flag's example images, drawn over
    them, as data: URIs for the HTML report (at most `per_flag` per flag and `limit` in all; nothing is computed),
    drawn by the run's preferred_method."""
    from core.store import Run, RunStoreError

    try:
        run = Run.open(report["run"]["path"])
    except (RunStoreError, OSError, KeyError):
        return {}
    out, n, method = {}, 0, preferred_method(run.path)
    for cls, rows in report["flags"]["by_class"].items():
        for f in rows:
            for image_id in f.get("example_image_ids") or []:
                if n >= limit or len(out.get((cls, f["word"]), [])) >= per_flag:
                    break
                picture = stored_picture(run, image_id, f["word"], method=method)
                if picture is not None:
                    out.setdefault((cls, f["word"]), []).append({"image_id": image_id,
                                                                 "uri": image_data_uri(picture)})
                    n += 1
    return out


def maps_to_compute(report: dict, per_flag: int = 2, limit: int = 6) -> list[tuple[str, str]]:
    """(image_id, word) pairs whose maps the report's examples lack (drawn by the run's preferred_method): flags with
    a stored causal test first, then the others in rank order; `per_flag` example images per flag, `limit` in all (a
    map takes seconds on a CPU)."""
    from core.store import Run

    run = Run.open(report["run"]["path"])
    flags = [(cls, f) for cls, rows in report["flags"]["by_class"].items() for f in rows]
    flags.sort(key=lambda cf: (cf[1].get("causal") is None, cf[1]["rank"]))
    todo, method = [], preferred_method(run.path)
    for _, f in flags:
        for image_id in (f.get("example_image_ids") or [])[:per_flag]:
            if len(todo) < limit and stored_map(run.path, image_id, f["word"], method) is None:
                todo.append((image_id, f["word"]))
    return todo


# --- the causal test's verdict on a flag ----------------------------------------------------------------------

CAUSAL_FIELDS = ("verdict", "images", "prediction_changed", "control_prediction_changed", "difference",
                 "ratio_to_control", "right_after", "control_right_after", "word_share_change", "mean_share_before",
                 "mean_share_after", "mean_share_control")
SETTINGS_FIELDS = ("share", "fill", "seed", "max_images", "predicted", "region", "map_method")


def causal_record(entry: dict) -> dict:
    """One stored causal test (an entry of read_causal) as the report's `causal` field of a flag: verdict, images,
    the rates with 95% intervals, and the settings it ran with."""
    s = entry.get("summary") or {}
    out = {k: s[k] for k in CAUSAL_FIELDS if k in s}
    out.setdefault("verdict", "no image of the class uses the word")
    out.setdefault("images", 0)
    out["settings"] = {k: (entry.get("settings") or {}).get(k) for k in SETTINGS_FIELDS}
    return out


def causal_for(tests: dict, class_name: str, word: str, predicted: str | None = None) -> dict | None:
    """The stored test that speaks for the flag (class_name, word): the one on the class's images read as
    `predicted` (an error-view flag's "pulls toward"), else on all its images, else any; the one on the most images
    among equals, the test meant for the word before another: for a scene word (water, lake, forest, ...) the
    scene swap (fill "swap", region "scene", the one the demo's truth confirms), for any other the default removal
    (CausalSettings' share, fill and map). As causal_record, or None when the flag was never tested. Tests that
    removed another region than the word's map (a `region=` key) do not count."""
    found = [e for k, e in tests.items() if "|region=" not in k and e.get("class") == class_name
             and e.get("word") == word and e.get("rows")]
    if not found:
        return None
    from core.evaluation.causal import CausalSettings  # tests are stored: read_causal has loaded it

    default, scene = CausalSettings(), is_scene_word(word)

    def rank(e):
        s = e.get("settings") or {}
        p = s.get("predicted")
        if scene:
            usual = s.get("fill") == "swap" and s.get("region") == "scene"
        else:
            usual = s.get("share", default.share) == default.share and s.get("fill", default.fill) == default.fill \
                and s.get("map_method", default.map_method) == default.map_method \
                and s.get("region", default.region) == default.region
        return (0 if predicted is not None and p == predicted else 1 if p is None else 2, -len(e.get("rows") or []),
                0 if usual else 1)

    return causal_record(min(found, key=rank))


def causal_by_flag(run_path, flags: dict) -> dict:
    """{(class, word): causal record} for the error-view flags of a report ({class: [flag rows]}) that were tested."""
    from core.evaluation.causal import read_causal

    tests = read_causal(run_path)
    out = {}
    for cls, rows in flags.items():
        for f in rows:
            record = causal_for(tests, cls, f["word"], f.get("predicted_as"))
            if record is not None:
                out[(cls, f["word"])] = record
    return out


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _rate(r: dict | None) -> str:
    if not r:
        return "–"
    lo, hi = r.get("ci95") or (None, None)
    return f"{_pct(r.get('rate'))} (95% CI {_pct(lo)}–{_pct(hi)})"


def tested_images(record: dict, class_name: str, word: str) -> str:
    """Which images a test ran on, in words: "38 landbird images read as waterbird whose sentences use 'lake'"."""
    p = (record.get("settings") or {}).get("predicted")
    read = f" read as {p}" if p is not None and p != class_name else " read right" if p == class_name else ""
    n = record.get("images", 0)
    return f"{n} {class_name} image{'s' if n != 1 else ''}{read} whose sentences use '{word}'"


def describe_removal(fill: str | None, share: float | None) -> tuple[str, str]:
    """(what was done to the word's region, what the control did), in words, for pages and reports
    (core.evaluation.causal's fills; kept here, free of torch, for reports)."""
    if fill == "swap" and share is None:  # region "scene"
        return ("the scene (all but the object) taken from an image of the class whose sentences lack the word",
                "the scene taken from an image of the class whose sentences use it")
    size = f"{100 * share:.0f}% of the image" if share is not None else "the word's region"
    if fill == "swap":
        return (f"the word's region ({size}) taken from an image of the class whose sentences lack the word",
                "the same region taken from an image of the class whose sentences use it")
    return f"the word's region ({size}) removed ({fill or 'blur'})", "as much of the image removed elsewhere"


def causal_text(record: dict, class_name: str, word: str) -> str:
    """One plain sentence of a flag's causal test: the verdict, then what removing the word's region did next to
    removing as much of the image elsewhere."""
    verdict = record.get("verdict", "")
    what = tested_images(record, class_name, word)
    if verdict not in ("causal", "correlational only"):
        return f"Causal test on {what}: {verdict} to conclude (at least 5 are needed)." \
            if verdict == "too few images" else f"Causal test: {verdict}."
    st = record.get("settings") or {}
    done, control = describe_removal(st.get("fill"), st.get("share") if st.get("region", "map") == "map" else None)
    text = (f"Causal test on {what}: {verdict.upper()}. With {done}, "
            f"{_rate(record.get('prediction_changed'))} of the predictions changed; with {control}, "
            f"{_rate(record.get('control_prediction_changed'))}.")
    if verdict == "correlational only":
        n = record.get("images", 0)
        small = (f"; with {n} images only a large effect would show, so test more before ruling it out"
                 if n < 20 else "")
        text += (" Not clearly more than the control: the test did not show that the classifier uses what the word "
                 f"names{small}.")
        if is_scene_word(word) and st.get("fill") != "swap":
            text += (" For a scene word that says little: removing part of a scene rarely changes a prediction even "
                     "when the scene decided it (on the Waterbirds demo a land background put 79% of the misread "
                     "landbirds on water right; removing the word's region changed 10%). Test it as a scene swap "
                     "(`texplain verify --fill swap --region scene`), which there calls water causal.")
    return text


def add_evidence(report: dict) -> dict:
    """The report with its stored evidence: a `causal` field on every flag (both views) whose causal test is stored
    with the run (causal_for), and `word_map_reliability` (the pointing game, or null). Two small JSON reads."""
    path = report["run"]["path"]
    tests = {}
    if run_files(path, CAUSAL_FILE):  # core.evaluation.causal imports torch: 20 s of a first report on a busy CPU
        from core.evaluation.causal import read_causal

        tests = read_causal(path)
    flags = report["flags"]
    for cls, rows in flags["by_class"].items():
        for f in rows:
            if (record := causal_for(tests, cls, f["word"], f.get("predicted_as"))) is not None:
                f["causal"] = record
    for cls, rows in (flags.get("association") or {}).get("by_class", {}).items():
        for f in rows:
            if (record := causal_for(tests, cls, f["word"], cls)) is not None:
                f["causal"] = record
    doc = map_reliability(path)
    report["word_map_reliability"] = reliability_summary(doc, preferred_in(doc))
    return report


def reliability_summary(doc: dict | None, method: str = "auto") -> dict | None:
    """The pointing game's figures that a report carries for maps drawn by `method` (per word kind: maps, hit_rate,
    ci95, random_hit_rate, random_ci95, and where measured strict_hit_rate, random_strict_hit_rate, flat_maps,
    centre_hit_rate, centre_ci95, off_centre), the method they are of, or None."""
    if not doc:
        return None
    shown = measured(doc, method) or doc  # the occlusion entry where asked for and measured
    keep = ("maps", "hit_rate", "ci95", "random_hit_rate", "random_ci95", "strict_hit_rate", "random_strict_hit_rate",
            "flat_maps", "centre_hit_rate", "centre_ci95", "off_centre")
    out = {kind: {k: shown[kind][k] for k in keep if k in shown[kind]} for kind in ("scene", "object")
           if isinstance(shown.get(kind), dict)}
    return {**out, "method": "gradient" if shown is doc else "occlusion", "images": shown.get("images"),
            "rule": shown.get("rule"), "tolerance_px": shown.get("tolerance_px"),
            "seconds_per_map": shown.get("seconds_per_map"), "text": reliability_text(doc, method)}


# --- how far a run's word maps point right --------------------------------------------------------------------

def map_reliability(run_path) -> dict | None:
    """The pointing game stored with a run (word_maps.json: yours over the shipped one), or None."""
    from core.store import run_files

    found = run_files(run_path, POINTING_FILE)
    for which in ("yours", "shipped"):
        try:
            doc = json.loads(found[which].read_text()) if which in found else None
        except (OSError, ValueError):
            doc = None
        if isinstance(doc, dict) and any(isinstance(doc.get(k), dict) for k in ("scene", "object")):
            return doc
    return None


def measured(doc: dict | None, method: str = "auto") -> dict | None:
    """A stored pointing game's figures for maps drawn by `method`: the document itself for "auto" (gradient where
    the classifier has a spatial map), its "occlusion" entry for "occlusion"; None where that was not measured."""
    if not isinstance(doc, dict):
        return None
    if method == "occlusion":
        return doc.get("occlusion") if isinstance(doc.get("occlusion"), dict) else None
    return doc


def preferred_method(run_path) -> str:
    """How this run's word maps are best drawn: "occlusion" where its pointing game found object words' objects more
    often by occlusion than by gradient, the two 95% intervals apart (the Waterbirds demo's fine-tuned classifier:
    84% against 40%); "auto" otherwise, and where nothing was measured (gradient maps take a second, occlusion
    several)."""
    return preferred_in(map_reliability(run_path))


def preferred_in(doc: dict | None) -> str:
    """preferred_method, read off a run's stored pointing game (map_reliability's document, or None)."""
    doc = doc or {}
    occl = measured(doc, "occlusion") or {}
    grad_ci, occl_ci = (doc.get("object") or {}).get("ci95"), (occl.get("object") or {}).get("ci95")
    if isinstance(grad_ci, list) and isinstance(occl_ci, list) and len(grad_ci) == len(occl_ci) == 2 \
            and occl_ci[0] > grad_ci[1]:
        return "occlusion"
    return "auto"


def reliability_text(doc: dict | None, method: str = "auto") -> str | None:
    """The pointing game in two clauses (object words' peak on the object, scene words' in the scene around it),
    each next to random peaks on the same images, for maps drawn by `method` ("auto" or "occlusion"), with one
    clause on the other method where it was measured too; None without one."""
    if not doc:
        return None
    other = measured(doc, "occlusion")
    shown, alt, alt_name = (other, doc, "by gradient") if method == "occlusion" and other else \
        (doc, other, "by occlusion")
    tol = shown.get("tolerance_px")
    parts = []
    for kind, where, exactly in (("object", "on the object", "on the object itself"),
                                 ("scene", "in the scene around it", "off the object entirely")):
        k = shown.get(kind)
        if not isinstance(k, dict) or not k.get("maps"):
            continue
        lo, hi = k.get("ci95") or (None, None)
        strict = f", {_pct(k['strict_hit_rate'])} {exactly}" if tol and k.get("strict_hit_rate") is not None else ""
        centre = f", the image's centre: {_pct(k['centre_hit_rate'])}" if k.get("centre_hit_rate") is not None else ""
        off = k.get("off_centre") if kind == "object" and isinstance(k.get("off_centre"), dict) else {}
        away = (f", and for {_pct(off['hit_rate'])} of the {off['maps']} whose object lies away from the centre"
                if off.get("maps", 0) >= 10 and off.get("hit_rate") is not None else "")
        parts.append(f"{kind} words' maps peak {where} for {_pct(k.get('hit_rate'))} of {k['maps']} images "
                     f"(95% CI {_pct(lo)}–{_pct(hi)}; random peaks: {_pct(k.get('random_hit_rate'))}{centre}){strict}"
                     f"{away}")
    if not parts:
        return None
    how = "by occlusion" if shown is other else "by gradient" if other else ""
    within = f", a peak within {tol} px of its word's region counting" if tol else ""
    text = (f"Measured on this run's images with known object masks (the pointing game{', maps ' + how if how else ''}"
            f"{within}): " + "; ".join(parts) + ".")
    scene = shown.get("scene") or {}
    if scene.get("hit_rate") is not None and scene.get("random_hit_rate") is not None \
            and scene["hit_rate"] <= scene["random_hit_rate"]:
        text += (" A scene word's peak is no better than a random point (most of the image is scene): read a scene "
                 "word's map as 'somewhere in the scene', not as a place.")
    obj = shown.get("object") or {}
    if obj.get("hit_rate") is not None and obj.get("centre_hit_rate") is not None \
            and obj["hit_rate"] <= obj["centre_hit_rate"]:
        text += (" An object word's peak finds the object no more often than the image's centre does (the objects "
                 "sit near the middle): its map says little about where the object is.")
    if alt and all(isinstance(alt.get(k), dict) and alt[k].get("hit_rate") is not None for k in ("object", "scene")):
        text += (f" Mapped {alt_name} instead, on the same images: object words {_pct(alt['object']['hit_rate'])} on "
                 f"the object, scene words {_pct(alt['scene']['hit_rate'])} in the scene.")
    return text
