"""The planted-bias worlds: two classes of real cut-out objects, one spurious attribute each, built from the seed.

Every world is a small Waterbirds: objects (tuxpaint stamps, split by identity so that val and test show
objects the classifier never saw, the same ones in both) on backgrounds, with one planted attribute, the *cue*,
that takes two values. In train, class 0 carries value 0 and class 1 value 1 in `WorldSettings.correlation` of its
images; val and test are balanced over the four groups (group = 2 * class + cue, as Waterbirds' 2 * y + place). A
classifier that leans on the cue misreads the minority groups (class 0 with value 1, class 1 with value 0).

Cue kinds (`KINDS`): a background scene, a plain background colour, a co-occurring second object, a tint of the
whole image, a background texture, a pattern, the object's size, its position and a text overlay. Each world
records its cue's words: the vocabulary a correct flag would use ("snow", "ice" for a snowy background), fixed
here before any explanation was read, and never tuned to what a translator says.

Sources: the stamps (`core.demo.worlds.general.stamp_inventory`), the scene photos of the general caption world
that the demo does not use (paths.SCENE_PHOTOS) and the open world's curated scene photos and textures
(core.demo.worlds.open_world's cache, never `mate-backgrounds` or `ukui-wallpapers`), plain colours, drawn
stripes and dots, a tint, a line of text. None of the classes are birds and none of the scenes are the demo's
water and land photos. Photos are cut in two halves along their long side: train crops come from one half, val
and test crops from the other, so evaluation images show unseen pixels.

Each world's folder holds `metadata.csv` (img_id, img_filename, y, split, cue, stamp, background; read by
`core.data.open_dataset`), `dataset.json` (class names, the cue as an attribute, group_by), `images/` and
`world.json` (settings, version, the cue's kind, values and words, the true groups, measured counts and
correlation). `build_suite` writes every world; a world already built with the same settings is kept.
"""
from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from core import paths
from core.demo.worlds import general as gw
from core.demo.worlds.render import building, run_jobs

WORLD_VERSION = 1  # bump when the images or tables change for the same settings
DISCOVERY = paths.ASSETS / "discovery"
WORLDS = DISCOVERY / "worlds"
OPEN_SCENES = paths.ASSETS / "open-world-scenes"  # core.demo.worlds.open_world.SCENE_CACHE
IMAGE_SIZE, JPEG_QUALITY = gw.IMAGE_SIZE, gw.JPEG_QUALITY
NEVER = ("mate-backgrounds", "ukui-wallpapers")  # kept for independent checks: no source may come from them

KINDS = ("scene", "colour", "object", "tint", "texture", "pattern", "size", "position", "text")

# --- classes: stamp categories (folders under the tuxpaint stamps), minus what is not the class's kind ---------

CLASSES = {
    "ungulate": (("animals/mammals/bovines", "animals/mammals/deer", "animals/mammals/equines",
                  "animals/mammals/camel", "animals/mammals/giraffe", "animals/mammals/hippopotamus",
                  "animals/mammals/pig", "animals/mammals/pig_golden", "animals/mammals/pig_golden2",
                  "animals/mammals/rhino_black", "animals/mammals/wildboar"), ()),
    "carnivore": (("animals/mammals/cats", "animals/mammals/dogs", "animals/mammals/bears/bear",
                   "animals/mammals/bears/european-bear", "animals/mammals/badger", "animals/mammals/ferret",
                   "animals/mammals/aquatic/otter", "animals/mammals/aquatic/sea_lion"), ()),
    "vehicle": (("vehicles",), ("7spoke256",)),
    "fruit": (("food/fruit",), ()),
    "flower": (("plants/flowers",), ()),
    "tool": (("household/tools",), ("cementmixer",)),
    "musical instrument": (("hobbies/music",), ()),
}

# --- backgrounds -------------------------------------------------------------------------------------------------
# "photo:FILE" is a general-world photo in paths.SCENE_PHOTOS, "open:NAME" an open-world catalog scene (its cached
# JPEG), "plain:NAME" a colour of core.demo.worlds.general.PLAIN. The general world's "Grey" (curved grey walls) is
# left out: cropped, it reads as black and white stripes, a pattern of its own.

NEUTRAL = ("plain:white", "plain:light grey", "plain:beige", "plain:light blue", "plain:yellow", "plain:pink",
           "photo:Kite.jpg", "photo:sunset_by_Aitzol_Berasategi.jpg", "photo:life_by_Aitzol_Berasategi.jpg",
           "photo:Dragonfly_by_Bolly.jpg", "photo:Wine_by_Jakkub_Mede.jpg")
SCENE_POOLS = {
    "sky": ("photo:Kite.jpg", "open:sc3d_clouds", "open:tuxpaint_bright_cloud", "open:jigzo_clouds_branches"),
    "indoor": ("photo:Wine_by_Jakkub_Mede.jpg", "photo:greentock_by_Peter_Nerlich.jpg",
               "photo:free_by_Peter_Nerlich.jpg", "open:hugin_grand_central"),
    "city": ("open:gc_aula_palatina", "open:tuxtype_seoul_skyline", "open:gc_colosseum", "open:hugin_campus_building",
             "open:gc_palais_des_papes", "open:tuxtype_colosseum_street"),
    "forest": ("open:tuxpaint_redwoods_above", "open:hugin_beech_wood", "open:tuxtype_asturias_forest",
               "open:tuxpaint_trees_above", "open:tuxtype_basque_valley"),
    "snow": ("open:etr_snow01", "open:sc3d_snowfield", "open:etr_sky_sunny", "open:etr_sky_cloudy",
             "open:tuxtype_glacier", "open:etr_scratched_ice"),
    "desert": ("open:etr_sand01", "open:sc3d_dune_sand", "open:gc_giza_pyramids", "open:gc_bent_pyramid",
               "open:tuxtype_granite_beach", "open:tuxtype_caribbean_beach"),
    "underwater": ("open:gc_coral_reef", "open:gc_soft_coral", "open:gc_seafloor_rocks", "open:gc_reef_wall",
                   "open:gc_sea_cave", "open:tuxpaint_coral_reef"),
    "grass": ("open:etr_grass01", "open:etr_grass02", "open:sc3d_grass", "open:sc3d_lawn",
              "open:tuxpaint_sheep_pasture", "open:tuxpaint_cornfield"),
    "brick": ("open:etr_stone_bricks", "open:gimp_pat_brick", "open:lo_rock_wall", "open:etr_stone_blocks",
              "open:gimp_pat_stone_wall", "open:gimp_pat_flagstones"),
    "wood": ("open:lo_wood_planks", "open:gnome_wood_slats", "open:gimp_pat_parquet", "open:gimp_pat_wood_grain",
             "open:lo_bamboo_fence"),
}
TINTS = {"blue": (30, 80, 255), "orange": (255, 140, 0), "green": (0, 190, 60), "purple": (170, 0, 200)}
TINT_ALPHA = (0.35, 0.45)
PATTERN_COLOURS = ("white", "black", "red", "blue", "green", "yellow", "pink", "brown", "light blue", "beige")
WATERMARKS = ("SAMPLE", "PREVIEW", "DRAFT", "COPY", "STOCK", "PROOF")
SECOND_OBJECTS = {"basketball": "sports/basketball", "mug": "household/dishes/mug"}


@dataclass(frozen=True)
class Cue:
    kind: str                          # one of KINDS
    values: tuple[str, str]            # value 0 (class 0's majority in train), value 1 (class 1's)
    words: tuple[tuple[str, ...], tuple[str, ...]]  # what a correct flag says about each value (lemmas)


@dataclass(frozen=True)
class WorldSpec:
    name: str
    classes: tuple[str, str]
    cue: Cue

    @property
    def cue_words(self) -> list[str]:
        return sorted(set(self.cue.words[0]) | set(self.cue.words[1]))


def _cue(kind: str, v0: str, v1: str, w0: str, w1: str) -> Cue:
    return Cue(kind, (v0, v1), (tuple(w0.split()), tuple(w1.split())))


# The suite. Words are lemmas as core.engine.words produces them ("clouds" -> cloud); stop words ("top",
# "bottom") cannot be said and are not listed, nor are words that describe one of the world's classes, which no flag
# may use (WordNet: "wood" is a woodwind, a musical instrument; "blue" a butterfly, an insect; "orange" a fruit).
SUITE = (
    WorldSpec("scene-sky-indoor", ("ungulate", "carnivore"), _cue(
        "scene", "sky", "indoor", "sky cloud cloudy", "room table wall lamp ceiling clock indoor interior hall "
        "furniture")),
    WorldSpec("scene-city-forest", ("tool", "musical instrument"), _cue(
        "scene", "city", "forest", "city building street skyline facade tower house skyscraper urban architecture "
        "palace ruin", "forest tree woods woodland trunk branch pine redwood leaf foliage jungle")),
    WorldSpec("scene-snow-desert", ("vehicle", "tool"), _cue(
        "scene", "snow", "desert", "snow snowy ice icy glacier winter frozen frost", "sand sandy desert dune beach "
        "pyramid")),
    WorldSpec("scene-underwater-grass", ("fruit", "flower"), _cue(
        "scene", "underwater", "grass", "underwater water sea ocean reef coral seabed seafloor aquarium marine",
        "grass grassy lawn meadow field pasture turf cornfield")),
    WorldSpec("colour-red-blue", ("tool", "musical instrument"), _cue(
        "colour", "red", "blue", "red crimson scarlet", "blue navy")),
    WorldSpec("colour-black-white", ("ungulate", "carnivore"), _cue(
        "colour", "black", "white", "black dark", "white")),
    WorldSpec("object-basketball", ("ungulate", "carnivore"), _cue(
        "object", "none", "basketball", "", "ball basketball")),
    WorldSpec("object-mug", ("fruit", "flower"), _cue(
        "object", "none", "mug", "", "mug cup")),
    WorldSpec("tint-blue-orange", ("tool", "musical instrument"), _cue(
        "tint", "blue", "orange", "blue bluish tint tinted", "orange amber tint tinted")),
    WorldSpec("tint-green-purple", ("vehicle", "tool"), _cue(
        "tint", "green", "purple", "green greenish tint tinted", "purple violet magenta pink tint tinted")),
    WorldSpec("texture-brick-wood", ("fruit", "flower"), _cue(
        "texture", "brick", "wood", "brick stone wall masonry rock cobblestone slate flagstone",
        "wood wooden plank board parquet fence timber floorboard slat bamboo")),
    WorldSpec("pattern-stripes-dots", ("vehicle", "tool"), _cue(
        "pattern", "stripes", "dots", "stripe striped stripy line pattern patterned",
        "dot dotted spot spotted polka circle pattern patterned")),
    WorldSpec("size-small-large", ("ungulate", "carnivore"), _cue(
        "size", "small", "large", "small tiny little miniature distant", "large big huge giant enormous closeup")),
    WorldSpec("position-left-right", ("fruit", "flower"), _cue(
        "position", "top left", "bottom right", "left corner upper edge side", "right corner edge side")),
    WorldSpec("text-watermark", ("vehicle", "tool"), _cue(
        "text", "none", "watermark", "", "text word letter writing written watermark logo sign label caption "
        "inscription font")),
)
SUITE_BY_NAME = {w.name: w for w in SUITE}


@dataclass(frozen=True)
class WorldSettings:
    seed: int = 0
    train_per_class: int = 120     # images per class in train
    correlation: float = 0.95      # share of each class's train images with its majority cue value (Waterbirds': 95%)
    val_per_group: int = 16        # images per (class, cue value) in val: 64 in all
    test_per_group: int = 32       # in test: 128 in all
    held_out_identities: float = 1 / 3  # of each class's stamp identities: never in train, shown in val and test
    stamp_size: tuple[float, float] = (0.35, 0.55)  # longer side, as a share of the image side


# --- sources -----------------------------------------------------------------------------------------------------

def background_path(source: str, scenes_dir: Path = paths.SCENE_PHOTOS, open_dir: Path = OPEN_SCENES) -> Path | None:
    kind, _, name = source.partition(":")
    if kind == "photo":
        return Path(scenes_dir) / name
    if kind == "open":
        return Path(open_dir) / f"{name}.jpg"
    return None


def ensure_open_scenes(sources, open_dir: Path = OPEN_SCENES) -> None:
    """The open-world scene photos the worlds read, cut out of their packages once (core.demo.worlds.open_world)."""
    missing = [s for s in sources if s.startswith("open:") and not background_path(s, open_dir=open_dir).exists()]
    if not missing:
        return
    from core.demo.worlds import open_world

    catalog = {e["name"]: e for e in json.loads(open_world.SCENES_FILE.read_text())}
    for source in missing:
        entry = catalog[source.split(":", 1)[1]]
        if entry["package"] in NEVER:
            raise ValueError(f"{source} comes from {entry['package']}, which is kept for independent checks")
        open_world._materialise(entry)


def class_stamps(stamps: list[gw.Stamp], class_name: str) -> list[gw.Stamp]:
    prefixes, excluded = CLASSES[class_name]
    return [s for s in stamps if s.key.startswith(prefixes) and s.name not in excluded
            and any(s.key == p or s.key.startswith(p + "/") for p in prefixes)]


def split_identities(rng: np.random.Generator, stamps: list[gw.Stamp], held_out: float) -> dict[str, str]:
    """identity -> "train" or "eval": `held_out` of a class's identities (at least one) are kept out of train and
    shown in val and test alike (as Waterbirds' val and test share their species); with `held_out` 0 every
    identity is in every split ("all")."""
    ids = sorted({s.identity for s in stamps})
    if held_out == 0:
        return {u: "all" for u in ids}
    if len(ids) < 2:
        raise ValueError(f"a class needs at least 2 stamp identities (train, evaluation); got {ids}")
    order = [ids[i] for i in rng.permutation(len(ids))]
    n = min(len(ids) - 1, max(1, round(held_out * len(ids))))
    return {u: "eval" if i < n else "train" for i, u in enumerate(order)}


# --- the plan: every image as a dict of numbers, so rendering is a pure function of it --------------------------

def _crop(rng: np.random.Generator, size: tuple[int, int], half: int) -> tuple[int, int, int, int]:
    """A large square crop inside one half (0: train, 1: val/test) of the photo, cut along its long side."""
    w, h = size
    long_is_w = w >= h
    half_long = (w if long_is_w else h) / 2
    short = h if long_is_w else w
    side = int(rng.uniform(0.75, 1.0) * min(half_long, short))
    a = int(half * half_long + rng.uniform(0, half_long - side))
    b = int(rng.uniform(0, short - side))
    x0, y0 = (a, b) if long_is_w else (b, a)
    return x0, y0, x0 + side, y0 + side


def _background(rng, source: str, split: str, sizes: dict) -> dict:
    kind, _, name = source.partition(":")
    if kind == "plain":
        jitter = rng.integers(-10, 11, size=3)
        rgb = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(gw.PLAIN[name], jitter))
        return {"source": source, "colour": rgb}
    return {"source": source, "crop": _crop(rng, sizes[source], 0 if split == "train" else 1),
            "flip": bool(rng.random() < 0.5)}


def _pattern(rng, value: int) -> dict:
    a, b = rng.choice(len(PATTERN_COLOURS), size=2, replace=False)
    out = {"pattern": "stripes" if value == 0 else "dots", "colours": (PATTERN_COLOURS[a], PATTERN_COLOURS[b])}
    if value == 0:
        out.update(width=int(rng.integers(10, 22)), diagonal=bool(rng.random() < 0.5))
    else:
        out.update(radius=int(rng.integers(6, 12)), spacing=int(rng.integers(30, 42)))
    return out


def plan_world(spec: WorldSpec, s: WorldSettings, stamps: list[gw.Stamp], sizes: dict) -> list[dict]:
    """Every image of the world: split, class, cue value, stamp and the edits that plant the cue."""
    rng = np.random.default_rng([s.seed, zlib.crc32(spec.name.encode())])
    by_class = [class_stamps(stamps, c) for c in spec.classes]
    splits = [split_identities(rng, members, s.held_out_identities) for members in by_class]
    n_minority = round((1 - s.correlation) * s.train_per_class)
    cells = []  # (split, y, cue value, n)
    for y in (0, 1):
        cells += [("train", y, y, s.train_per_class - n_minority), ("train", y, 1 - y, n_minority)]
        cells += [(sp, y, v, n) for sp, n in (("val", s.val_per_group), ("test", s.test_per_group)) for v in (0, 1)]
    kind, plan = spec.cue.kind, []
    for split, y, value, n in cells:
        wanted = ("train", "all") if split == "train" else ("eval", "all")
        pool = [m for m in by_class[y] if splits[y][m.identity] in wanted]
        order = []
        while len(order) < n:  # every stamp of the cell equally often (within one)
            order += [pool[i] for i in rng.permutation(len(pool))]
        for stamp in order[:n]:
            size = rng.uniform(*s.stamp_size)
            xy = (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.2, 0.95)))
            item = {"split": split, "y": y, "cue": value, "stamp": stamp.key, "stamp_flip": bool(rng.random() < 0.5)}
            if kind in ("scene", "texture"):
                pool_v = SCENE_POOLS[spec.cue.values[value]]
                item["background"] = _background(rng, pool_v[rng.integers(len(pool_v))], split, sizes)
            elif kind == "colour":
                item["background"] = _background(rng, f"plain:{spec.cue.values[value]}", split, sizes)
            elif kind == "pattern":
                item["background"] = {"source": f"pattern:{spec.cue.values[value]}", **_pattern(rng, value)}
            else:
                item["background"] = _background(rng, NEUTRAL[rng.integers(len(NEUTRAL))], split, sizes)
            if kind == "object":
                size, xy = rng.uniform(0.35, 0.5), (float(rng.uniform(0.0, 0.15)), float(rng.uniform(0.3, 0.9)))
                if value == 1:
                    item["second"] = {"stamp": SECOND_OBJECTS[spec.cue.values[1]],
                                      "size": float(rng.uniform(0.25, 0.35)),
                                      "xy": (float(rng.uniform(0.85, 1.0)), float(rng.uniform(0.6, 1.0)))}
            elif kind == "tint":
                item["tint"] = {"rgb": TINTS[spec.cue.values[value]], "alpha": float(rng.uniform(*TINT_ALPHA))}
            elif kind == "size":
                size = rng.uniform(0.22, 0.32) if value == 0 else rng.uniform(0.8, 0.95)
            elif kind == "position":
                size = rng.uniform(0.35, 0.45)
                lo, hi = (0.0, 0.12) if value == 0 else (0.88, 1.0)
                xy = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
            elif kind == "text" and value == 1:
                item["text"] = {"word": WATERMARKS[rng.integers(len(WATERMARKS))], "size": int(rng.integers(40, 56)),
                                "angle": float(rng.uniform(-35, 35)), "opacity": int(rng.integers(150, 200)),
                                "xy": (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7)))}
            item.update(stamp_size=float(size), stamp_xy=xy)
            plan.append(item)
    for i, item in enumerate(plan):
        item["img_id"] = f"{i:05d}"
        item["img_filename"] = f"images/{item['split']}/{i:05d}.jpg"
    return plan


# --- rendering ---------------------------------------------------------------------------------------------------

_PHOTOS: dict[str, Image.Image] = {}  # source -> full photo, RGB; loaded before the fork, shared by the workers


def _draw_pattern(bg: dict) -> Image.Image:
    c0, c1 = (gw.PLAIN[c] for c in bg["colours"])
    im = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), c0)
    d = ImageDraw.Draw(im)
    if bg["pattern"] == "stripes":
        w = bg["width"]
        for x in range(-IMAGE_SIZE, 2 * IMAGE_SIZE, 2 * w):
            if bg["diagonal"]:
                d.polygon([(x, 0), (x + w, 0), (x + w + IMAGE_SIZE, IMAGE_SIZE), (x + IMAGE_SIZE, IMAGE_SIZE)], fill=c1)
            else:
                d.rectangle([x, 0, x + w - 1, IMAGE_SIZE], fill=c1)
    else:
        r, step = bg["radius"], bg["spacing"]
        for row, y in enumerate(range(step // 2, IMAGE_SIZE + step, step)):
            for x in range(step // 2 + (step // 2 if row % 2 else 0), IMAGE_SIZE + step, step):
                d.ellipse([x - r, y - r, x + r, y + r], fill=c1)
    return im


def render_background(bg: dict) -> Image.Image:
    if "colour" in bg:
        return Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), tuple(bg["colour"]))
    if "pattern" in bg:
        return _draw_pattern(bg)
    canvas = _PHOTOS[bg["source"]].resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC, box=tuple(bg["crop"]))
    return canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if bg["flip"] else canvas


def _paste(canvas: Image.Image, key: str, size: float, xy, flip: bool) -> None:
    stamp, corner = gw.render_stamp({"stamp": key, "stamp_size": size, "stamp_flip": flip, "stamp_xy": xy})
    canvas.paste(stamp, corner, stamp)


def _watermark(canvas: Image.Image, text: dict) -> Image.Image:
    font = ImageFont.load_default(size=text["size"])  # Pillow's own font: the same glyphs on every machine
    layer = Image.new("RGBA", (IMAGE_SIZE, IMAGE_SIZE), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    x, y = text["xy"][0] * IMAGE_SIZE, text["xy"][1] * IMAGE_SIZE
    d.text((x, y), text["word"], font=font, anchor="mm", fill=(255, 255, 255, text["opacity"]),
           stroke_width=2, stroke_fill=(0, 0, 0, text["opacity"]))
    layer = layer.rotate(text["angle"], resample=Image.Resampling.BICUBIC, center=(x, y))
    return Image.alpha_composite(canvas.convert("RGBA"), layer).convert("RGB")


def render(item: dict) -> Image.Image:
    canvas = render_background(item["background"])
    _paste(canvas, item["stamp"], item["stamp_size"], item["stamp_xy"], item["stamp_flip"])
    if "second" in item:
        sec = item["second"]
        _paste(canvas, sec["stamp"], sec["size"], sec["xy"], False)
    if "tint" in item:
        canvas = Image.blend(canvas, Image.new("RGB", canvas.size, tuple(item["tint"]["rgb"])), item["tint"]["alpha"])
    if "text" in item:
        canvas = _watermark(canvas, item["text"])
    return canvas


def _render_chunk(args: tuple[list[dict], str]) -> int:
    items, out_dir = args
    for item in items:
        render(item).save(Path(out_dir) / item["img_filename"], "JPEG", quality=JPEG_QUALITY)
    return len(items)


# --- building ----------------------------------------------------------------------------------------------------

def _is_current(out_dir: Path, settings: dict, spec: dict) -> bool:
    try:
        world = json.loads((out_dir / "world.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return world.get("version") == WORLD_VERSION and world.get("settings") == settings and world.get("spec") == spec


def sources_of(spec: WorldSpec) -> list[str]:
    kind = spec.cue.kind
    if kind in ("scene", "texture"):
        return sorted(set(SCENE_POOLS[spec.cue.values[0]]) | set(SCENE_POOLS[spec.cue.values[1]]))
    if kind in ("colour", "pattern"):
        return []
    return list(NEUTRAL)


def build_world(spec: WorldSpec, out_dir: str | Path | None = None, settings: WorldSettings | None = None,
                force: bool = False, workers: int | None = None, stamps_dir: str | Path = gw.STAMPS_DIR,
                scenes_dir: str | Path = paths.SCENE_PHOTOS, open_dir: str | Path = OPEN_SCENES,
                verbose: bool = True) -> Path:
    """Build one world into `out_dir` (default: WORLDS/<name>) and return it; a no-op when it is current."""
    s = settings or WorldSettings()
    out_dir = Path(out_dir or WORLDS / spec.name)
    as_dict, spec_dict = json.loads(json.dumps(asdict(s))), json.loads(json.dumps(asdict(spec)))
    if not force and _is_current(out_dir, as_dict, spec_dict):
        return out_dir
    if not 0.5 < s.correlation < 1:
        raise ValueError(f"correlation must be in (0.5, 1), got {s.correlation}")
    t0 = time.time()
    sources = sources_of(spec)
    ensure_open_scenes(sources, Path(open_dir))
    stamps, _ = gw.stamp_inventory(stamps_dir)
    sizes = {}
    for source in sources:
        path = background_path(source, Path(scenes_dir), Path(open_dir))
        if path is not None:
            with Image.open(path) as im:
                sizes[source] = im.size
    plan = plan_world(spec, s, stamps, sizes)
    keys = {it["stamp"] for it in plan} | {it["second"]["stamp"] for it in plan if "second" in it}
    by_key = {st.key: st.path for st in stamps}
    with building(out_dir) as tmp:
        for split in ("train", "val", "test"):
            (tmp / "images" / split).mkdir(parents=True)
        gw.load_sources(Path(scenes_dir), [], {k: by_key[k] for k in keys})
        for source in sources:
            path = background_path(source, Path(scenes_dir), Path(open_dir))
            if path is not None and source not in _PHOTOS:
                with Image.open(path) as im:
                    _PHOTOS[source] = im.convert("RGB")
        try:
            run_jobs(_render_chunk, plan, tmp, workers)
        finally:
            gw.clear_sources()
            _PHOTOS.clear()
        _write_tables(spec, plan, tmp, as_dict)
    if verbose:
        print(f"[discovery] {spec.name}: {len(plan)} images in {time.time() - t0:.1f} s -> {out_dir}", flush=True)
    return out_dir


def _write_tables(spec: WorldSpec, plan: list[dict], out_dir: Path, settings: dict) -> None:
    meta = pd.DataFrame({
        "img_id": [it["img_id"] for it in plan], "img_filename": [it["img_filename"] for it in plan],
        "y": [it["y"] for it in plan], "split": [it["split"] for it in plan], "cue": [it["cue"] for it in plan],
        "stamp": [it["stamp"] for it in plan], "background": [it["background"]["source"] for it in plan]})
    meta.to_csv(out_dir / "metadata.csv", index=False)
    description = {"name": spec.name, "classes": list(spec.classes), "group_by": "cue",
                   "attributes": {"cue": {"name": spec.cue.kind, "values": {"0": spec.cue.values[0],
                                                                            "1": spec.cue.values[1]}}}}
    (out_dir / "dataset.json").write_text(json.dumps(description, indent=1) + "\n", encoding="utf-8")
    meta["group"] = 2 * meta["y"] + meta["cue"]
    counts = {sp: {str(g): int(n) for g, n in meta[meta.split == sp].groupby("group").size().items()}
              for sp in ("train", "val", "test")}
    train = meta[meta.split == "train"]
    world = {
        "version": WORLD_VERSION, "name": spec.name, "settings": settings, "spec": json.loads(json.dumps(asdict(spec))),
        "classes": list(spec.classes),
        "cue": {"kind": spec.cue.kind, "values": list(spec.cue.values), "words": [list(w) for w in spec.cue.words]},
        "cue_words": spec.cue_words,
        # True groups: group = 2 * y + cue. The minority groups are the ones the cue points away from.
        "groups": {str(2 * y + v): f"{spec.classes[y]} · {spec.cue.kind}: {spec.cue.values[v]}"
                   for y in (0, 1) for v in (0, 1)},
        "minority_groups": [1, 2],
        "train_correlation": float((train["y"] == train["cue"]).mean()),
        "counts": counts,
        "stamps": {sp: sorted(meta.loc[meta.split == sp, "stamp"].unique()) for sp in ("train", "val", "test")},
        "backgrounds": sorted(meta["background"].unique()),
    }
    (out_dir / "world.json").write_text(json.dumps(world, indent=1) + "\n", encoding="utf-8")


def read_world(root: str | Path) -> dict:
    """A built world's world.json."""
    path = Path(root) / "world.json"
    if not path.exists():
        raise FileNotFoundError(f"{root} holds no built world; run `python -m bench.discovery build`")
    return json.loads(path.read_text())


@dataclass
class SuiteBuild:
    folders: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def build_suite(names: list[str] | None = None, root: str | Path = WORLDS, settings: WorldSettings | None = None,
                force: bool = False, workers: int | None = None, verbose: bool = True) -> SuiteBuild:
    """Build the worlds named (default: the whole SUITE) under `root`."""
    t0, out = time.time(), SuiteBuild()
    unknown = sorted(set(names or []) - set(SUITE_BY_NAME))
    if unknown:
        raise ValueError(f"unknown worlds {unknown}; the suite has {sorted(SUITE_BY_NAME)}")
    for spec in (SUITE_BY_NAME[n] for n in names) if names else SUITE:
        out.folders.append(build_world(spec, Path(root) / spec.name, settings, force, workers, verbose=verbose))
    out.seconds = time.time() - t0
    return out
