"""The open caption world: many objects on many scenes, with whole scene packages and objects held out.

The general world (core.demo.worlds.general) taught a translator ~600 stamps on 32 scenes, and it learnt that
closed world by heart: a new scene read as the nearest trained one, a new object as a trained object. This
world is wider and is split so that generalisation can be measured where a user needs it:

- objects: every usable tuxpaint stamp (photos; split by identity exactly as the general world splits them,
  so the shipped translator's unseen stamps stay unseen) and clip art from Debian's `openclipart-png`
  (curated in data/clipart.json: hundreds of object nouns, cartoons left out; split by noun: a val or test
  noun appears in no training caption);
- scenes: real photos and photographic textures from several Debian packages (curated in data/scenes.json,
  each with its scene kinds, the kinds it shows only in part (`partial`: a treeline, a strip of bay; the measures
  count those neither shown nor absent) and several descriptions), split by whole package (SCENE_SPLITS), plus
  plain colours; `mate-backgrounds` and `ukui-wallpapers` are never used (kept for independent checks);
- images: one to three objects at several sizes on one background;
- captions: several per image, from many templates, scene descriptions at two levels of detail and object
  phrases in several forms ("a red apple", "an apple", "some fruit"), so that no caption recurs whole.

Val and test images come in two kinds (metadata column `held_out`): "scene" (a held-out scene behind trained
objects) and "object" (held-out objects on trained scenes), so each is measured on its own
(core.evaluation.openworld). Deterministic from the seed; built lazily by `texplain maintain open-world` or
by whoever trains on it (its Debian packages are fetched then, about 190 MB once).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core import paths
from core.demo.worlds import general as gw
from core.demo.worlds.render import building, run_jobs
from core.errors import StampWorldError

OPEN_WORLD_VERSION = 1  # bump when the output changes for the same seed and settings
OPEN_WORLD = paths.ASSETS / "open-world"
DATA = Path(__file__).resolve().parent / "data"
SCENES_FILE, CLIPART_FILE = DATA / "scenes.json", DATA / "clipart.json"
# The packages the open world reads beyond the demo's (core.demo.assets.DEBS), unpacked apart from them.
EXTRA_ROOT = paths.ASSETS / "debs" / "open-world-root"
CLIPART_PACKAGE = "openclipart-png"
CLIPART_DIR = "usr/share/openclipart/png"
NEVER = frozenset({"mate-backgrounds", "ukui-wallpapers"})  # kept out of every world, for independent checks
# Whole scene packages held out: what the held-out measures read. Every other package's photos are for training.
# Test: real photos of kinds the training packages hold (coasts, glaciers, forests, beaches, a city, a canyon, a
# hall, flowers); val: the Tux Paint template photos. (lomiri-wallpapers-20.04 and sway-backgrounds, first
# thought of, hold no usable scene: a bird, a fox and abstract art.)
SCENE_SPLITS = {"tuxtype-data": "test", "kphotoalbum": "test", "hugin-data": "test", "gimp-help-en": "test",
                "jigzo-data": "test", "tuxpaint-data": "val"}
SCENE_CACHE = paths.ASSETS / "open-world-scenes"  # each catalog scene as one plain image file, made once
# The general world's photos that data/scenes.json leaves out (its indoor and urban ones among them), with their
# kinds in core.evaluation.openworld's terms.
GENERAL_KINDS = {"water": "water", "forest": "forest", "field": "grass", "mountain": "rock", "sky": "sky",
                 "urban": "city", "indoor": "indoor", "ground": "grass", "trees": "forest", "road": "rock"}
IMAGE_SIZE, JPEG_QUALITY = gw.IMAGE_SIZE, gw.JPEG_QUALITY


# --- what goes in ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class OpenScene:
    name: str
    package: str                    # the Debian package, or "plain"
    path: str                       # the photo inside the unpacked package ("" for a plain colour)
    kinds: frozenset                # core.evaluation.openworld.SCENE_KINDS
    descriptions: tuple[str, ...]   # each true of any large crop
    split: str
    colour: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Thing:
    key: str           # "stamp:animals/birds/owl", "clipart:animals/mammals/zebra_01"
    name: str          # how a caption names it: "a great blue heron", "a red apple"
    noun: str          # its head noun: "heron", "apple"
    superclass: str | None  # core.evaluation.openworld.SUPERCLASSES' name, or None
    path: str          # the PNG
    split: str

    @property
    def source(self) -> str:
        return self.key.split(":", 1)[0]


def _root_of(package: str) -> Path:
    from core.demo.assets import DEB_ROOT, DEBS

    return DEB_ROOT if package in DEBS else EXTRA_ROOT


def partial_kinds() -> dict[str, frozenset]:
    """{scene name: the kinds its photo shows over a minority of its area} (data/scenes.json's "partial"): some of
    its crops show such a kind and some do not, so its images count as neither showing it nor not
    (core.evaluation.openworld.score_open_world)."""
    return {s["name"]: frozenset(s["partial"]) for s in json.loads(SCENES_FILE.read_text()) if s.get("partial")}


def scene_packages() -> list[str]:
    return sorted({s["package"] for s in json.loads(SCENES_FILE.read_text())} - NEVER)


def fetch_sources() -> None:
    """Download and unpack the Debian packages this world reads (once; about 190 MB)."""
    from core.demo.assets import DEBS, ensure_debs

    extra = [p for p in [*scene_packages(), CLIPART_PACKAGE] if p not in DEBS]
    ensure_debs(extra, EXTRA_ROOT)


def _materialise(entry: dict) -> Path:
    """The catalog scene as a plain image file (cut out of its container, cropped, tiled to 512 px when it is a
    small repeating pattern), made once under SCENE_CACHE."""
    from core.demo.worlds.containers import open_image

    out = SCENE_CACHE / f"{entry['name']}.jpg"
    if out.exists():
        return out
    image = open_image(_root_of(entry["package"]) / entry["path"], entry.get("format"), entry.get("member"))
    if entry.get("crop_box"):
        image = image.crop(tuple(entry["crop_box"]))
    if entry.get("tile"):
        tiled = Image.new("RGB", (512, 512))
        for x in range(0, 512, image.width):
            for y in range(0, 512, image.height):
                tiled.paste(image, (x, y))
        image = tiled
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.jpg")
    image.save(tmp, "JPEG", quality=95)
    tmp.replace(out)
    return out


def _photo_key(path: str) -> str:
    """One wallpaper's name whatever its copy: Plasma's folder (usr/share/wallpapers/<Name>/contents/images/...)
    or the file's stem, as the demo's photo folder names them (core.demo.assets.prepare_photos)."""
    parts = Path(path).parts
    return (parts[3] if parts[:3] == ("usr", "share", "wallpapers") and len(parts) > 3 else Path(path).stem).lower()


def scene_catalog() -> list[OpenScene]:
    """Every curated scene (data/scenes.json; split by package), the general world's photos it leaves out (for
    training), then the plain colours (in every split)."""
    out, files = [], set()
    for s in json.loads(SCENES_FILE.read_text()):
        if s["package"] in NEVER:
            continue
        out.append(OpenScene(s["name"], s["package"], str(_materialise(s)), frozenset(s["kinds"]),
                             tuple(s["descriptions"]), SCENE_SPLITS.get(s["package"], "train")))
        files.add(_photo_key(s["path"]))
    for name, sc in gw.SCENES.items():
        if sc.colour is None and _photo_key(sc.file) not in files and (paths.SCENE_PHOTOS / sc.file).exists():
            kinds = frozenset(GENERAL_KINDS[k] for k in sc.kinds)
            out.append(OpenScene(f"general_{name}", "general-world", str(paths.SCENE_PHOTOS / sc.file), kinds,
                                 sc.descriptions, "train"))
    for name, rgb in gw.PLAIN.items():
        out.append(OpenScene(f"{gw.PLAIN_PREFIX}{name.replace(' ', '-')}", "plain", "", frozenset({"plain"}),
                             (f"a plain {name} background", f"an empty {name} backdrop", f"a {name} background",
                              f"a flat {name} wall"), "all", rgb))
    return out


def _noun_split(nouns: list[str], rng: np.random.Generator, share: float) -> dict[str, str]:
    """noun -> split: `share` of the nouns each for val and test, drawn from the sorted nouns."""
    order = [nouns[i] for i in rng.permutation(len(nouns))]
    n = int(round(share * len(order)))
    return {noun: "val" if i < n else "test" if i < 2 * n else "train" for i, noun in enumerate(order)}


def thing_catalog(stamps_dir: str | Path = gw.STAMPS_DIR, clipart_share: float = 0.1) -> list[Thing]:
    """Every usable stamp (split as the general world splits them, seed 0) and every curated clip art (split by
    noun; a noun some stamp has goes where the stamp goes, so a held-out noun is held out everywhere)."""
    from core.evaluation.openworld import superclass_of

    stamps, _ = gw.stamp_inventory(stamps_dir)
    split_of = gw.split_identities(np.random.default_rng(0), stamps, 0.1, 0.1)  # the general world's, seed 0
    things = []
    for s in stamps:
        noun = stamp_noun(s)
        things.append(Thing(f"stamp:{s.key}", s.object_name, noun, superclass_of(noun), s.path,
                            split_of[s.identity]))
    clips = json.loads(CLIPART_FILE.read_text())
    stamp_nouns = {}
    for t in things:  # a noun two stamps share goes where the first (sorted) stamp goes
        stamp_nouns.setdefault(t.noun, t.split)
    nouns = sorted({c["noun"].lower() for c in clips} - set(stamp_nouns))
    noun_split = {**_noun_split(nouns, np.random.default_rng(1), clipart_share), **stamp_nouns}
    root = EXTRA_ROOT / CLIPART_DIR
    for c in clips:
        noun = c["noun"].lower()
        superclass = superclass_of(noun) or CURATED_SUPERCLASS.get(c.get("superclass"))
        things.append(Thing(f"clipart:{Path(c['path']).with_suffix('').as_posix()}", c["name"].strip(), noun,
                            superclass, str(root / c["path"]), noun_split[noun]))
    return things


# The curated clip art's own superclass labels, in core.evaluation.openworld's names, for nouns WordNet does not
# place (its senses decide first, so that a noun's superclass is the same wherever it occurs).
CURATED_SUPERCLASS = {"mammal": "mammal", "bird": "bird", "fish": "fish", "reptile": "reptile",
                      "amphibian": "amphibian", "insect": "insect", "other animal": "invertebrate", "plant": "plant",
                      "flower": "plant", "fruit": "food", "vegetable": "food", "food": "food", "drink": "food",
                      "vehicle": "vehicle", "boat": "boat", "aircraft": "aircraft",
                      "musical instrument": "musical instrument", "tool": "tool", "furniture": "furniture",
                      "clothing": "clothing", "building": "building", "sports equipment": "sports equipment",
                      "toy": "toy", "container": "container"}


def _head_noun(phrase: str) -> str:
    """The last word of a noun phrase, lower case: "a great blue heron" -> "heron"."""
    words = re.findall(r"[A-Za-z]+", phrase.split(" with ")[0].split(" of ")[0])
    return words[-1].lower() if words else phrase.lower()


def stamp_noun(stamp: gw.Stamp) -> str:
    """The head noun of a stamp's object, as the open world names it (and the general world's images hold it)."""
    return _head_noun(stamp.object_name)


# --- captions ----------------------------------------------------------------------------------------

TEMPLATES = (
    "A photo of {objs} {prep} {scene}.",
    "{Objs} {prep} {scene}.",
    "{Scene}, with {objs} in the foreground.",
    "A picture of {objs} with {scene} behind {them}.",
    "There {be} {objs} {prep} {scene}.",
    "In this image, {objs} {stand} {prep} {scene}.",
    "{Objs}, and behind {them} {scene}.",
    "An image showing {objs} {prep} {scene}.",
    "{Scene} behind {objs}.",
    "Close to the camera, {objs}; in the background, {scene}.",
    "We see {objs} {prep} {scene}.",
    "{Objs} can be seen {prep} {scene}.",
)
PREPOSITIONS = {"photo": ("in front of", "near", "by", "before", "against"),
                "plain": ("against", "on", "in front of", "over")}
MAX_CAPTION_WORDS = 30


def _article(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def thing_phrases(thing: Thing) -> tuple[str, ...]:
    """How captions may name a thing: its full name, its noun with an article, and (rarely) its superclass."""
    out = [thing.name, _article(thing.noun)]
    if thing.superclass and thing.superclass not in (thing.noun, "plant", "food", "container", "sports equipment"):
        out.append(_article(thing.superclass))
    return tuple(dict.fromkeys(out))


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _upper(s: str) -> str:
    return s[:1].upper() + s[1:]


def make_captions(rng: np.random.Generator, things: list[Thing], scene: OpenScene, k: int) -> list[str]:
    """k distinct captions naming every thing and the scene, in varied words."""
    preps = PREPOSITIONS["plain" if scene.colour else "photo"]
    many = len(things) > 1
    out: list[str] = []
    for _ in range(30 * k):
        if len(out) == k:
            break
        phrases = []
        for t in things:
            forms = thing_phrases(t)
            # The full name most often; the bare noun often; the superclass seldom (it names less).
            p = [0.6, 0.3, 0.1][:len(forms)]
            phrases.append(forms[rng.choice(len(forms), p=np.array(p) / sum(p))])
        objs = _join(phrases)
        where = scene.descriptions[rng.integers(len(scene.descriptions))]
        text = TEMPLATES[rng.integers(len(TEMPLATES))].format(
            objs=objs, Objs=_upper(objs), scene=where, Scene=_upper(where), prep=preps[rng.integers(len(preps))],
            them="them" if many else "it", be="are" if many else "is", stand="stand" if many else "stands")
        if text not in out and len(text.split()) <= MAX_CAPTION_WORDS:
            out.append(text)
    return out


# --- the plan ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OpenWorldSettings:
    seed: int = 0
    n_train: int = 8000
    n_val: int = 600     # half held-out scenes, half held-out objects
    n_test: int = 1000   # likewise
    plain_share: float = 0.15
    captions_per_image: int = 4
    objects: tuple[float, float, float] = (0.6, 0.3, 0.1)  # shares of images with 1, 2, 3 objects
    size_one: tuple[float, float] = (0.3, 0.75)    # an object alone: longer side, share of the image side
    size_many: tuple[float, float] = (0.2, 0.5)    # each of several objects


def _pick(rng, items: list, n: int) -> list:
    return [items[i] for i in rng.choice(len(items), n, replace=len(items) < n)]


def _crop(rng, size) -> tuple[int, int, int, int]:
    return gw.random_crop(rng, size)


def _plan(s: OpenWorldSettings, scenes: list[OpenScene], things: list[Thing], sizes: dict) -> list[dict]:
    rng = np.random.default_rng(s.seed)
    photos = {sp: [x for x in scenes if x.colour is None and x.split == sp] for sp in ("train", "val", "test")}
    plains = [x for x in scenes if x.colour is not None]
    objects = {sp: [t for t in things if t.split == sp] for sp in ("train", "val", "test")}
    jobs = [("train", None, s.n_train)]
    for sp, n in (("val", s.n_val), ("test", s.n_test)):
        jobs += [(sp, "scene", n // 2), (sp, "object", n - n // 2)]
    plan = []
    for split, held, n in jobs:
        for _ in range(n):
            scene_split = split if held == "scene" else "train"
            thing_split = split if held == "object" else "train"
            if held != "scene" and rng.random() < s.plain_share:
                scene = plains[rng.integers(len(plains))]
            else:
                scene = photos[scene_split][rng.integers(len(photos[scene_split]))]
            k = 1 + int(rng.choice(3, p=np.array(s.objects) / sum(s.objects)))
            chosen = _pick(rng, objects[thing_split], k)
            lo, hi = s.size_one if k == 1 else s.size_many
            placed = [{"thing": t.key, "size": float(rng.uniform(lo, hi)), "flip": bool(rng.random() < 0.5),
                       "xy": (float(rng.uniform(0.05, 0.95)), float(rng.uniform(0.15, 0.95)))} for t in chosen]
            plan.append({"img_filename": f"images/{len(plan):05d}.jpg", "split": split, "held_out": held or "",
                         "scene": scene.name, "crop": None if scene.colour else _crop(rng, sizes[scene.name]),
                         "scene_flip": bool(rng.random() < 0.5), "things": placed,
                         "captions": make_captions(rng, chosen, scene, s.captions_per_image)})
    return plan


# --- rendering -----------------------------------------------------------------------------------------

_SCENES: dict[str, OpenScene] = {}
_PHOTOS: dict[str, Image.Image] = {}
_THINGS: dict[str, Image.Image] = {}


def _load_sources(scenes: list[OpenScene], things: list[Thing]) -> None:
    for sc in scenes:
        _SCENES[sc.name] = sc
        if sc.colour is None and sc.name not in _PHOTOS:
            with Image.open(sc.path) as im:
                _PHOTOS[sc.name] = im.convert("RGB")
    for t in things:
        if t.key not in _THINGS:
            with Image.open(t.path) as im:
                rgba = im.convert("RGBA")
            _THINGS[t.key] = rgba.crop(rgba.getbbox())


def _render_chunk(args: tuple[list[dict], str]) -> int:
    items, out_dir = args
    for item in items:
        sc = _SCENES[item["scene"]]
        if sc.colour is not None:
            canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), sc.colour)
        else:
            canvas = _PHOTOS[sc.name].resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC, box=item["crop"])
            if item["scene_flip"]:
                canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        for p in item["things"]:
            thing = _THINGS[p["thing"]]
            f = p["size"] * IMAGE_SIZE / max(thing.size)
            thing = thing.resize((max(1, round(thing.size[0] * f)), max(1, round(thing.size[1] * f))),
                                 Image.Resampling.BICUBIC)
            if p["flip"]:
                thing = thing.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            fx, fy = p["xy"]
            canvas.paste(thing, (int(fx * (IMAGE_SIZE - thing.size[0])), int(fy * (IMAGE_SIZE - thing.size[1]))), thing)
        canvas.save(Path(out_dir) / item["img_filename"], "JPEG", quality=JPEG_QUALITY)
    return len(items)


def build_open_world(out_dir: str | Path = OPEN_WORLD, seed: int = 0, force: bool = False, workers: int | None = None,
                     verbose: bool = True, scenes: list[OpenScene] | None = None, things: list[Thing] | None = None,
                     **settings) -> Path:
    """Build the open world into `out_dir` (fetching its Debian packages first) and return it; a no-op when it is
    already built with the same seed, settings and version (unless `force`). `scenes` and `things` replace the
    curated catalogs (tests build small worlds from their own images)."""
    out_dir = Path(out_dir)
    s = OpenWorldSettings(seed=seed, **settings)
    as_dict = json.loads(json.dumps(asdict(s)))
    if not force and gw.is_current(out_dir, OPEN_WORLD_VERSION, as_dict):
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "world.json").exists():
        raise StampWorldError(f"{out_dir} exists and is not an open world; pick an empty or new folder")
    t0 = time.time()
    if scenes is None or things is None:
        fetch_sources()
    scenes = scene_catalog() if scenes is None else scenes
    things = thing_catalog() if things is None else things
    missing = [x.path for x in scenes if x.colour is None and not Path(x.path).exists()]
    missing += [t.path for t in things if not Path(t.path).exists()]
    if missing:
        raise StampWorldError(f"{len(missing)} source images are missing (e.g. {missing[0]}); their Debian packages "
                              f"did not unpack as expected under {EXTRA_ROOT}")
    sizes = {}
    for x in scenes:
        if x.colour is None:
            with Image.open(x.path) as im:
                sizes[x.name] = im.size
    plan = _plan(s, scenes, things, sizes)
    with building(out_dir) as tmp:
        (tmp / "images").mkdir()
        _load_sources(scenes, things)
        try:
            run_jobs(_render_chunk, plan, tmp, workers)
        finally:
            _SCENES.clear()
            _PHOTOS.clear()
            _THINGS.clear()
        _write_tables(plan, scenes, things, tmp, as_dict, name=out_dir.name)  # not the temporary folder's
    if verbose:
        size = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file()) / 2**20
        print(f"[open-world] {len(plan)} images ({len(things)} objects, {len(scenes)} scenes) in "
              f"{time.time() - t0:.0f} s, {size:.0f} MB -> {out_dir}", flush=True)
    return out_dir


def _write_tables(plan: list[dict], scenes: list[OpenScene], things: list[Thing], out_dir: Path,
                  settings: dict, name: str) -> None:
    by_scene, by_thing = {x.name: x for x in scenes}, {t.key: t for t in things}
    first = [by_thing[it["things"][0]["thing"]] for it in plan]
    supers = sorted({t.superclass or "other" for t in things})
    meta = pd.DataFrame({
        "img_filename": [it["img_filename"] for it in plan],
        "y": [supers.index(t.superclass or "other") for t in first],  # the class: the first object's superclass
        "split": [it["split"] for it in plan],
        "held_out": [it["held_out"] for it in plan],
        "scene": [it["scene"] for it in plan],
        "scene_package": [by_scene[it["scene"]].package for it in plan],
        "scene_kinds": [" ".join(sorted(by_scene[it["scene"]].kinds)) for it in plan],
        "things": [" ".join(p["thing"] for p in it["things"]) for it in plan],
        "nouns": [" ".join(by_thing[p["thing"]].noun for p in it["things"]) for it in plan],
        "superclass": [t.superclass or "" for t in first],
        "n_objects": [len(it["things"]) for it in plan],
    })
    meta.to_csv(out_dir / "metadata.csv", index=False)
    (out_dir / "dataset.json").write_text(json.dumps({"name": name, "classes": supers}, indent=1) + "\n")
    captions = pd.DataFrame([(it["img_filename"], c, it["split"]) for it in plan for c in it["captions"]],
                            columns=["img_filename", "caption", "split"])
    captions.to_csv(out_dir / "captions.csv", index=False)
    world = {
        "version": OPEN_WORLD_VERSION, "seed": settings["seed"], "settings": settings, "images": len(meta),
        "captions": len(captions), "distinct_captions": int(captions["caption"].nunique()),
        "counts": meta.groupby(["split", "held_out"]).size().rename(lambda x: x or "none", level=1)
                      .unstack(fill_value=0).to_dict(orient="index"),
        "scenes": {sp: sorted(x.name for x in scenes if x.split == sp) for sp in ("train", "val", "test", "all")},
        "scene_splits": SCENE_SPLITS, "never_used": sorted(NEVER),
        "objects": {sp: {"stamps": sum(t.split == sp and t.source == "stamp" for t in things),
                         "clipart": sum(t.split == sp and t.source == "clipart" for t in things),
                         "nouns": len({t.noun for t in things if t.split == sp})} for sp in ("train", "val", "test")},
    }
    (out_dir / "world.json").write_text(json.dumps(world, indent=1) + "\n", encoding="utf-8")


def read_open_world(root: str | Path = OPEN_WORLD) -> pd.DataFrame:
    """Its captions as the caption readers return them: path, caption, split."""
    root = Path(root)
    if not (root / "captions.csv").exists():
        raise StampWorldError(f"{root} holds no open world; build it with `texplain maintain open-world`")
    frame = pd.read_csv(root / "captions.csv")
    frame.insert(0, "path", [str(root / f) for f in frame.pop("img_filename")])
    return frame


# --- captions at the superclass level ------------------------------------------------------------------------

# How a caption names a superclass in one word that core.evaluation.openworld.superclass_of reads back as that
# superclass ("an ungulate": "a hoofed mammal" reads as a mammal; "amphibian" is first the amphibious vehicle,
# "fruit" no food to WordNet, and sports equipment has no such word).
SUPERCLASS_PHRASES = {"dog": "a dog", "cat": "a cat", "carnivore": "a carnivore", "primate": "a primate",
                      "rodent": "a rodent", "hoofed mammal": "an ungulate", "mammal": "a mammal", "bird": "a bird",
                      "fish": "a fish", "reptile": "a reptile", "insect": "an insect",
                      "invertebrate": "an invertebrate", "musical instrument": "an instrument", "boat": "a boat",
                      "aircraft": "an aircraft", "vehicle": "a vehicle", "food": "some food", "plant": "a plant",
                      "tool": "a tool", "furniture": "a piece of furniture", "clothing": "a garment",
                      "building": "a building", "container": "a container", "toy": "a toy"}


def superclass_rewording(caption: str, things: list[Thing]) -> str | None:
    """The caption with every object it names by name or noun renamed by its superclass (SUPERCLASS_PHRASES);
    None when it renames none. "A red apple by the sea." -> "Some food by the sea."."""
    out, renamed = caption, False
    for t in things:
        new = SUPERCLASS_PHRASES.get(t.superclass or "")
        if new is None:
            continue
        for old in sorted(thing_phrases(t), key=len, reverse=True):
            hit = re.search(rf"\b{re.escape(old)}\b", out, flags=re.IGNORECASE)
            if hit:
                first = hit.start() == 0 or out[:hit.start()].rstrip().endswith((".", ";"))
                out = out[:hit.start()] + (_upper(new) if first else new) + out[hit.end():]
                renamed = True
                break
    return out if renamed else None


def superclass_captions(root: str | Path = OPEN_WORLD, things: list[Thing] | None = None) -> pd.DataFrame:
    """One more training caption per training image (path, caption, split): its first caption with its objects
    named by their superclasses (superclass_rewording), where that renames any. `things`: the world's objects
    (default: thing_catalog()). Training on them teaches the translator words that hold for unseen objects too."""
    root = Path(root)
    meta = pd.read_csv(root / "metadata.csv", keep_default_na=False).query("split == 'train'")
    by_key = {t.key: t for t in (thing_catalog() if things is None else things)}
    first = read_open_world(root).query("split == 'train'").drop_duplicates("path").set_index("path")["caption"]
    rows = []
    for f, keys in zip(meta["img_filename"], meta["things"]):
        path = str(root / f)
        new = superclass_rewording(first[path], [by_key[k] for k in str(keys).split()])
        if new is not None:
            rows.append((path, new, "train"))
    return pd.DataFrame(rows, columns=["path", "caption", "split"])
