"""The general caption world: every usable tuxpaint stamp pasted on scene photos and plain backgrounds.

A translator for the unmodified ImageNet classifier has to describe any object on any background, not
just birds on lakes. This world gives it image–caption pairs of that kind from what the offline set-up
already has: the `tuxpaint-stamps-default` cut-outs (animals, food, vehicles, tools, instruments,
plants, ...; each with an English caption, the first line of its `NAME.txt`) and real scene photos
from the Debian wallpaper packages. Captions name the stamp (its own caption) and the scene.

The stamp inventory is read from the package, not listed by hand: a stamp is a PNG with its `.txt`
(caption) and an optional `.dat` (tuxpaint flags). What is left out, and how it is recognised:
- cartoons: tuxpaint keeps them in `cartoon/` folders;
- shapes meant to be painted (letters, math symbols, silhouettes): their `.dat` says `colorable`;
- mirror copies (`*_mirror.png`): the builder flips stamps itself;
- stamps that carry their own background (an opaque rectangle: road-sign plates, traffic lights) or a
  patch of ground (a peahen on grass): measured from the alpha channel, plus a reviewed list;
- flat drawings that are not photos or realistic renderings (hats, outline clothes, Easter bunnies,
  flags, speech balloons): a reviewed list (`DRAWINGS`), made by looking at every remaining stamp;
- stamps under 96 px on their longer side: they would be blown up 2-3x and look it;
- exact duplicates (one fireman photo ships in two folders).

Splits are by stamp identity (variants of one subject, "gnu-baby" and "gnu-stand", count as one), so
val and test describe objects the translator never saw. The output folder holds `images/`,
`captions.csv` (img_filename, caption, split; several rows per image), `metadata.csv` (one row per
image: stamp, category, scene, split) and `world.json` (seed, version, settings, counts, the inventory
with every exclusion and its reason). Everything follows from the seed.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core import paths
from core.demo.worlds.render import building, run_jobs
from core.errors import StampWorldError

GENERAL_WORLD_VERSION = 1  # bump when the output changes for the same seed and settings
STAMPS_DIR = paths.ASSETS / "debs" / "root" / "usr" / "share" / "tuxpaint" / "stamps"  # core.assets unpacks it
GENERAL_WORLD = paths.ASSETS / "general-world"
IMAGE_SIZE = 256  # the classifiers resize to 256 and centre-crop 224, as for the demo world
JPEG_QUALITY = 90

MIN_STAMP_SIDE = 96       # px, longer side
MIN_TRANSPARENT = 0.08    # share of clear pixels below which a stamp is a filled rectangle
MAX_OPAQUE_BORDER = 0.5   # share of opaque border pixels above which a stamp fills its own box

# Reviewed by eye on contact sheets of all 381 stamps the automatic rules keep (keys: folder/stem).
DRAWINGS = frozenset({
    "animals/mammals/hedgehog", "clothes/button", "clothes/hats/blue_fedora", "clothes/hats/feathered_hat",
    "clothes/hats/green_fedora", "clothes/hats/propeller_hat", "clothes/hats/sombrero", "clothes/hats/tophat",
    "clothes/t_baseballcap", "clothes/t_glove", "clothes/t_jacket", "clothes/t_pants", "clothes/t_poloshirt",
    "clothes/t_scarf", "clothes/t_shirt", "clothes/t_sock", "clothes/t_tshirt", "food/pizza", "medical/tooth",
    "people/body_parts/eye", "seasonal/christmas/Santa", "seasonal/christmas/candy_cane", "seasonal/christmas/star",
    "seasonal/christmas/tree", "seasonal/easter/bluebird", "seasonal/easter/bunny-egg", "seasonal/easter/bunny-head",
    "seasonal/easter/bunny", "seasonal/easter/butterfly", "seasonal/easter/chick-hatched",
    "seasonal/easter/chick-in-egg", "seasonal/easter/chick", "seasonal/easter/daffodil",
    "seasonal/hanukkah/dreydl", "seasonal/hanukkah/dreydl-gimmel", "seasonal/hanukkah/dreydl-hay",
    "seasonal/hanukkah/dreydl-nun", "seasonal/hanukkah/dreydl-shin", "seasonal/hanukkah/menorah",
    "symbols/clockface", "symbols/shapes/scream_balloon", "symbols/shapes/speech_balloon",
    "symbols/shapes/thought_balloon", "town/flags/blue-and-yellowflag", "town/flags/checkeredflag",
    "town/flags/greenflag", "town/flags/redflag", "town/flags/whiteflag", "town/flags/yellowflag",
    "town/monuments/inukshuk-outline",
})
# Folders of typography: letters and math signs are shapes, not things with a scene around them.
TYPOGRAPHY = ("symbols/alphabets/", "symbols/math/")
# Cut-outs that keep a patch of the ground they stood on: that ground would travel with the object.
GROUND_PATCH = frozenset({"animals/birds/albino_peahen", "animals/mammals/bovines/indian_blackbuck"})
# Variants of one subject whose names the suffix rule below does not join.
SAME_SUBJECT = {"gnu-baby": "gnu", "gnu-baby-stand": "gnu", "gnu-sitting": "gnu", "gnu-stand": "gnu",
                "pig_golden": "pig", "pig_golden2": "pig", "heron_greatblue_flying": "heron_greatblue",
                "tiger_sumatran": "tiger", "rabbit_little": "rabbit", "cow_white": "cow", "sheep_lamb": "sheep",
                "donkey_eating": "donkey", "fireman200b": "fireman", "fireman240a": "fireman",
                "european-bear": "bear", "gnu-baby_stand": "gnu", "chicken_profile": "hen",
                "moon_3qt": "moon", "moon_full": "moon", "moon_crescent": "moon"}


# What captions call a stamp whose own caption is a sentence about it rather than a name ("Eat your
# broccoli!"); reviewed against every usable stamp whose caption does not read as "a/an/the ...".
OBJECT_NAMES = {
    "bluegroper": "a blue groper", "lobster": "a spiny lobster", "edward_bear": "a teddy bear",
    "orange_seville": "a Seville orange", "broccoli": "broccoli", "corn": "an ear of sweet corn",
    "toilet": "a toilet", "measuring_tape": "a measuring tape", "stethoscope": "a stethoscope",
    "old_naval_shell": "an old artillery shell", "final-roll-call": "a soldier's helmet on a rifle and boots",
    "bradley": "an armoured personnel carrier", "infantry-stryker": "an eight-wheeled armoured vehicle",
    "ww2_german_gun": "a tank", "explosion": "a cloud of smoke", "fire": "a flame",
    "grannysmith": "an old rag doll", "adeenia": "a desert rose flower", "anthoorium": "an anthurium flower",
    "appooppanthady": "a milkweed seed head", "bolsom": "a balsam flower", "chemparathi": "a hibiscus flower",
    "chuvanna_plastic_poo": "a red plastic flower", "cep-1": "a cep mushroom", "cep-2": "two cep mushrooms",
    "holly_leaves": "a sprig of holly leaves", "Candy_cane_photo_1": "a candy cane",
    "Candy_cane_photo_2": "a candy cane", "Christmas_pudding": "a Christmas pudding",
    "German_Christmas_toy": "a wooden toy figure", "Mince_Pie": "a mince pie", "Roast_turkey": "a roast turkey",
    "grave-h": "a tombstone", "1_mercury": "the planet Mercury", "2_venus": "the planet Venus",
    "4_mars": "the planet Mars", "5_jupiter": "the planet Jupiter", "6_saturn": "the planet Saturn",
    "7_uranus": "the planet Uranus", "8_neptune": "the planet Neptune", "rugby_goal_posts": "rugby goal posts",
    "001penny": "a copper coin", "005nickel": "a silver coin", "010dime": "a small silver coin",
    "025quarter": "a silver coin", "100loonie": "a gold coin", "200toonie": "a two-coloured coin",
    "200": "a two euro coin", "yen001": "a Japanese coin", "yen005": "a Japanese coin with a hole",
    "yen010": "a copper Japanese coin", "yen050": "a Japanese coin with a hole", "yen100": "a Japanese coin",
    "yen500": "a Japanese coin", "inukshuk-photo": "a stone cairn", "crossroads": "a crossroads road sign",
    "dead_end_sign": "a dead end road sign", "give_way_sign": "a give way sign", "roundabout": "a roundabout sign",
    "school_sign": "a school warning sign", "t-junction": "a T-junction road sign",
    "xing_school": "a school crossing sign", "yield": "a yield sign", "sedan_police": "a police car",
}


@dataclass(frozen=True)
class Stamp:
    key: str       # folder/stem under the stamps folder, unique: "animals/birds/owl"
    caption: str   # the stamp's English caption, first line of NAME.txt ("An owl.")
    identity: str  # what splits keep together: variants of one subject share it
    path: str      # the PNG

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def category(self) -> str:
        return self.key.rsplit("/", 1)[0]

    @property
    def object_name(self) -> str:
        """How a caption names it: "a great blue heron"."""
        return OBJECT_NAMES.get(self.name) or object_phrase(self.caption)


def _identity(key: str) -> str:
    folder, stem = key.rsplit("/", 1)
    stem = SAME_SUBJECT.get(stem, stem)
    # "frog-1", "lion-2", "grave-a", "guitar2", "cep-1": numbered or lettered takes of one subject.
    base = re.sub(r"([-_]?\d+[a-z]?|-[a-z])$", "", stem) or stem
    return f"{folder}/{base.lower()}"


def _caption_of(png: Path) -> str:
    txt = png.with_suffix(".txt")
    if not txt.exists():
        return ""
    lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
    return lines[0].strip() if lines else ""


def _alpha_stats(rgba: Image.Image) -> tuple[float, float]:
    """(share of clear pixels, share of opaque pixels along the border)."""
    a = np.asarray(rgba.getchannel("A"))
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    return float((a < 16).mean()), float((border > 200).mean())


def stamp_inventory(stamps_dir: str | Path = STAMPS_DIR) -> tuple[list[Stamp], dict[str, str]]:
    """(usable stamps sorted by key, {key: why it was left out}) for every PNG stamp in the package."""
    stamps_dir = Path(stamps_dir)
    pngs = sorted(stamps_dir.rglob("*.png"))
    if not pngs:
        raise StampWorldError(f"no tuxpaint stamps under {stamps_dir}; run `make setup` (or `texplain setup`)"
                              " to fetch and unpack tuxpaint-stamps-default")
    usable, excluded, seen = [], {}, {}
    for png in pngs:
        rel = png.relative_to(stamps_dir).with_suffix("")
        key = rel.as_posix()
        dat = png.with_suffix(".dat")
        flags = dat.read_text(errors="replace").split() if dat.exists() else []
        if "cartoon" in rel.parts:
            excluded[key] = "cartoon"
            continue
        if "colorable" in flags:
            excluded[key] = "a one-colour shape to paint (letter, symbol), not a photo"
            continue
        if key.startswith(TYPOGRAPHY):
            excluded[key] = "a letter or math sign, not a photo"
            continue
        if png.stem.endswith("_mirror"):
            excluded[key] = "mirror copy of another stamp"
            continue
        if key in DRAWINGS:
            excluded[key] = "a flat drawing, not a photo or realistic rendering"
            continue
        if key in GROUND_PATCH:
            excluded[key] = "carries its own background (a patch of ground)"
            continue
        with Image.open(png) as im:
            rgba = im.convert("RGBA")
        clear, opaque_border = _alpha_stats(rgba)
        if clear < MIN_TRANSPARENT or opaque_border > MAX_OPAQUE_BORDER:
            excluded[key] = "carries its own background (an opaque box)"
            continue
        if max(rgba.size) < MIN_STAMP_SIDE:
            excluded[key] = f"too small ({rgba.size[0]}x{rgba.size[1]} px)"
            continue
        caption = _caption_of(png)
        if not caption:
            excluded[key] = "no English caption"
            continue
        digest = hashlib.sha1(png.read_bytes()).hexdigest()
        if digest in seen:
            excluded[key] = f"same image as {seen[digest]}"
            continue
        seen[digest] = key
        usable.append(Stamp(key, caption, _identity(key), str(png)))
    return usable, excluded


def object_phrase(caption: str) -> str:
    """The stamp's caption as a noun phrase for a sentence: "A great blue heron." -> "a great blue heron"."""
    text = caption.replace("“", "").replace("”", "").replace('"', "").strip()
    text = re.split(r"(?<=[a-z])[.!?](\s|$)|—|--|: ", text, maxsplit=1)[0].strip().rstrip(".!?")
    first, _, rest = text.partition(" ")
    # Lower-case the article only: "The Sun", "Mercury" and "Adelaide rosella" keep their capitals.
    if first in ("A", "An", "The", "Some", "Our", "Two", "Three", "Big", "Small"):
        text = first.lower() + (" " + rest if rest else "")
    return text


# --- scenes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    file: str                      # in paths.SCENE_PHOTOS ("" for a plain colour)
    kinds: frozenset               # what the scene shows: water, forest, field, mountain, sky, urban, indoor, ground
    descriptions: tuple[str, ...]  # true of any large crop of the photo
    colour: tuple[int, int, int] | None = None  # plain backgrounds


def _photo(file: str, kinds: str, *descriptions: str) -> Scene:
    return Scene(file, frozenset(kinds.split()), descriptions)


# Real photos only, each with what a person names at a glance. Left out: abstract wallpapers, and the
# photos that show an object of their own (a dog behind a door, cups, brushes, a fig), which would
# compete with the stamp for the caption.
SCENES = {
    "BytheWater": _photo("BytheWater.jpg", "water", "a wooden dock by a lake", "a lake seen from a wooden pier",
                         "old planks of a pier over the water"),
    "ColdRipple": _photo("ColdRipple.jpg", "water", "a wooden pier on a foggy lake", "a misty grey lake",
                         "a jetty over still grey water"),
    "DarkestHour": _photo("DarkestHour.jpg", "water", "a dark blue lake at dusk", "still water under a misty sky"),
    "EveningGlow": _photo("EveningGlow.jpg", "water", "rowing boats on a lake shore at sunset",
                          "a lake under an orange evening sky", "wooden boats on a beach"),
    "summer_1am": _photo("summer_1am.jpg", "water sky", "a calm lake at dawn", "a purple sky over still water"),
    "life": _photo("life_by_Aitzol_Berasategi.jpg", "water forest", "a stream running over rocks in a forest",
                   "a small waterfall among trees", "a rocky creek in the woods"),
    "Path": _photo("Path.jpg", "forest", "a path through a pine forest", "a dark green forest of tall trees"),
    "FallenLeaf": _photo("FallenLeaf.jpg", "forest ground", "autumn leaves on the forest floor",
                         "fallen leaves in warm autumn light"),
    "OneStandsOut": _photo("OneStandsOut.jpg", "ground", "green moss on the ground", "a carpet of small green plants"),
    "aitzgorri": _photo("aitzgorri_by_Aitzol_Berasategi.jpg", "field mountain", "a green meadow below a mountain",
                        "autumn trees on a hillside"),
    "picosdeeuropa": _photo("picosdeeuropa_by_Aitzol_Berasategi.jpg", "mountain field road",
                            "a dirt track across a mountain meadow", "rocky mountains above green grass"),
    "seeding": _photo("seeding_by_Clements_Engelhardt.jpg", "field", "dandelions in a grassy field",
                      "tall grass in the sun"),
    "sunset": _photo("sunset_by_Aitzol_Berasategi.jpg", "mountain ground sky", "a rocky hilltop at sunset",
                     "the sun setting over hills"),
    "Dragonfly": _photo("Dragonfly_by_Bolly.jpg", "trees sky", "green leaves of a tree against a blue sky",
                        "tree branches under a clear sky"),
    "Kite": _photo("Kite.jpg", "sky", "a blue sky with white clouds", "clouds in a bright blue sky"),
    "Bridge": _photo("Bridge_by_Sander_Klootwijk.jpg", "urban sky", "the cables of a bridge against the sky",
                     "a steel bridge over a wide river"),
    "Grey": _photo("Grey.jpg", "urban", "the facade of a modern building", "curved grey walls of a building"),
    "Wine": _photo("Wine_by_Jakkub_Mede.jpg", "indoor", "a room with a wooden table", "a cosy living room"),
    "greentock": _photo("greentock_by_Peter_Nerlich.jpg", "indoor", "a clock on a grey wall",
                        "a plain wall with a clock"),
    "free": _photo("free_by_Peter_Nerlich.jpg", "indoor", "white lamps hanging from a ceiling",
                   "a room lit by round lamps"),
}
PLAIN = {
    "white": (245, 245, 245), "light grey": (200, 200, 200), "dark grey": (70, 70, 70), "black": (15, 15, 15),
    "blue": (60, 100, 190), "light blue": (170, 205, 235), "green": (70, 140, 80), "yellow": (235, 210, 90),
    "red": (185, 50, 45), "beige": (225, 210, 180), "brown": (120, 85, 55), "pink": (235, 170, 190),
}
PLAIN_PREFIX = "plain-"  # scene names of the plain backgrounds: plain-white, plain-light-grey, ...
for _name, _rgb in PLAIN.items():
    SCENES[f"{PLAIN_PREFIX}{_name.replace(' ', '-')}"] = Scene(
        "", frozenset({"plain"}), (f"a plain {_name} background", f"an empty {_name} backdrop"), _rgb)

TEMPLATES = (
    "A photo of {obj} {prep} {scene}.",
    "{Obj} {prep} {scene}.",
    "{Scene}, with {obj} in the foreground.",
    "A picture of {obj} with {scene} behind it.",
    "There is {obj} {prep} {scene}.",
    "{stamp} Behind it, {scene}.",
)
PREPOSITIONS = {"photo": ("in front of", "near", "by"), "plain": ("against", "on", "in front of")}
MAX_CAPTION_WORDS = 24


def _upper(s: str) -> str:
    return s[:1].upper() + s[1:]


def make_captions(rng: np.random.Generator, stamp: Stamp, scene: str, k: int) -> list[str]:
    """k distinct captions naming the stamp (its own caption) and the scene."""
    obj, sc = stamp.object_name, SCENES[scene]
    preps = PREPOSITIONS["plain" if sc.colour else "photo"]
    stamp_sentence = stamp.caption if stamp.name not in OBJECT_NAMES else _upper(obj) + "."
    out: list[str] = []
    for _ in range(20 * k):
        if len(out) == k:
            break
        where = sc.descriptions[rng.integers(len(sc.descriptions))]
        text = TEMPLATES[rng.integers(len(TEMPLATES))].format(
            obj=obj, Obj=_upper(obj), scene=where, Scene=_upper(where), prep=preps[rng.integers(len(preps))],
            stamp=stamp_sentence)
        if text not in out and len(text.split()) <= MAX_CAPTION_WORDS:
            out.append(text)
    return out


def scene_span(caption: str, scene: str) -> tuple[int, int] | None:
    """Where `caption` (make_captions') names its scene: the character span of the scene's description in it
    (capitalised at a sentence start or not); None if it names none of them."""
    low = caption.lower()
    for d in sorted(SCENES[scene].descriptions, key=len, reverse=True):
        i = low.find(d.lower())
        if i >= 0:
            return i, i + len(d)
    return None


# --- shared rendering: one stamp on one background -------------------------------------------

def scene_sizes(scenes_dir: Path, names) -> dict[str, tuple[int, int]]:
    sizes = {}
    for name in names:
        sc = SCENES[name]
        if sc.colour is None:
            with Image.open(scenes_dir / sc.file) as im:
                sizes[name] = im.size
    return sizes


def random_crop(rng: np.random.Generator, size: tuple[int, int], side_share=(0.6, 1.0)) -> tuple[int, int, int, int]:
    """A large square crop: tight crops lose what makes a lake a lake (the demo world's lesson)."""
    w, h = size
    side = rng.uniform(*side_share) * min(w, h)
    x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
    return int(x0), int(y0), int(x0 + side), int(y0 + side)


_PHOTOS: dict[str, Image.Image] = {}  # scene -> full photo, RGB; loaded once per process, shared by fork
_STAMPS: dict[str, Image.Image] = {}  # stamp key -> RGBA cropped to its content


def load_sources(scenes_dir: Path, scene_names, stamps: dict[str, str]) -> None:
    for name in scene_names:
        sc = SCENES[name]
        if sc.colour is None and name not in _PHOTOS:
            with Image.open(scenes_dir / sc.file) as im:
                _PHOTOS[name] = im.convert("RGB")
    for key, path in stamps.items():
        if key not in _STAMPS:
            with Image.open(path) as im:
                rgba = im.convert("RGBA")
            _STAMPS[key] = rgba.crop(rgba.getbbox())


def clear_sources() -> None:
    _PHOTOS.clear()
    _STAMPS.clear()


def render_background(item: dict) -> Image.Image:
    sc = SCENES[item["scene"]]
    if sc.colour is not None:
        return Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), sc.colour)
    canvas = _PHOTOS[item["scene"]].resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC, box=item["crop"])
    return canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if item["scene_flip"] else canvas


def render_stamp(item: dict) -> tuple[Image.Image, tuple[int, int]]:
    """(the stamp as RGBA at its size in the image, its top-left corner)."""
    stamp = _STAMPS[item["stamp"]]
    f = item["stamp_size"] * IMAGE_SIZE / max(stamp.size)
    stamp = stamp.resize((max(1, round(stamp.size[0] * f)), max(1, round(stamp.size[1] * f))),
                         Image.Resampling.BICUBIC)
    if item["stamp_flip"]:
        stamp = stamp.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    fx, fy = item["stamp_xy"]
    return stamp, (int(fx * (IMAGE_SIZE - stamp.size[0])), int(fy * (IMAGE_SIZE - stamp.size[1])))


def is_current(out_dir: Path, version: int, settings: dict) -> bool:
    try:
        world = json.loads((out_dir / "world.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return world.get("version") == version and world.get("settings") == settings


# --- the general world -----------------------------------------------------------------------

@dataclass(frozen=True)
class GeneralWorldSettings:
    seed: int = 0
    n_images: int = 4000
    val_share: float = 0.1      # of stamp identities, per top-level category
    test_share: float = 0.1
    plain_share: float = 0.3    # of images on a plain colour rather than a photo
    captions_per_image: int = 3
    stamp_size: tuple[float, float] = (0.40, 0.75)  # longer side, as a share of the image side


def split_identities(rng: np.random.Generator, stamps: list[Stamp], val_share: float,
                     test_share: float) -> dict[str, str]:
    """identity -> split, drawn within each top-level category so that every kind of object is in train."""
    by_cat: dict[str, list[str]] = {}
    for s in stamps:
        by_cat.setdefault(s.key.split("/", 1)[0], [])
        if s.identity not in by_cat[s.key.split("/", 1)[0]]:
            by_cat[s.key.split("/", 1)[0]].append(s.identity)
    out: dict[str, str] = {}
    for cat in sorted(by_cat):
        units = sorted(set(by_cat[cat]) - set(out))
        order = [units[i] for i in rng.permutation(len(units))]
        n_val, n_test = int(round(val_share * len(order))), int(round(test_share * len(order)))
        if len(order) >= 5:  # small categories stay in train: one held-out stamp would say little
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        else:
            n_val = n_test = 0
        for i, u in enumerate(order):
            out[u] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return out


def _plan_general(s: GeneralWorldSettings, stamps: list[Stamp], sizes: dict[str, tuple[int, int]]) -> list[dict]:
    rng = np.random.default_rng(s.seed)
    split_of = split_identities(rng, stamps, s.val_share, s.test_share)
    photos = sorted(n for n, sc in SCENES.items() if sc.colour is None)
    plains = sorted(n for n, sc in SCENES.items() if sc.colour is not None)
    # Each stamp appears equally often (within one), in seeded order.
    order = []
    while len(order) < s.n_images:
        order += [stamps[i] for i in rng.permutation(len(stamps))]
    plan = []
    for i, stamp in enumerate(order[:s.n_images]):
        plain = rng.random() < s.plain_share
        scene = plains[rng.integers(len(plains))] if plain else photos[rng.integers(len(photos))]
        plan.append({
            "img_filename": f"images/{i:05d}.jpg", "split": split_of[stamp.identity], "stamp": stamp.key,
            "scene": scene, "crop": None if plain else random_crop(rng, sizes[scene]),
            "scene_flip": bool(rng.random() < 0.5), "stamp_flip": bool(rng.random() < 0.5),
            "stamp_size": float(rng.uniform(*s.stamp_size)),
            "stamp_xy": (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.2, 0.95))),
            "captions": make_captions(rng, stamp, scene, s.captions_per_image),
        })
    return plan


def _render_general_chunk(args: tuple[list[dict], str]) -> int:
    items, out_dir = args
    for item in items:
        canvas = render_background(item)
        stamp, xy = render_stamp(item)
        canvas.paste(stamp, xy, stamp)
        canvas.save(Path(out_dir) / item["img_filename"], "JPEG", quality=JPEG_QUALITY)
    return len(items)


def build_general_world(out_dir: str | Path = GENERAL_WORLD, seed: int = 0, force: bool = False, *,
                        n_images: int = 4000, val_share: float = 0.1, test_share: float = 0.1,
                        plain_share: float = 0.3, captions_per_image: int = 3, workers: int | None = None,
                        stamps_dir: str | Path = STAMPS_DIR, scenes_dir: str | Path = paths.SCENE_PHOTOS,
                        verbose: bool = True) -> Path:
    """Build the general caption world into `out_dir` and return it; a no-op when it is already built
    with the same seed, settings and version (unless `force`). About 30 s for 4,000 images on 2 cores."""
    out_dir, scenes_dir = Path(out_dir), Path(scenes_dir)
    settings = GeneralWorldSettings(seed, n_images, val_share, test_share, plain_share, captions_per_image)
    if n_images < 10 or captions_per_image < 1 or not 0 <= plain_share <= 1 or not (
            0 <= val_share and 0 <= test_share and val_share + test_share < 1):
        raise ValueError(f"the general world needs n_images >= 10, captions_per_image >= 1, 0 <= plain_share <= 1 "
                         f"and val_share + test_share < 1; got {settings}")
    as_dict = json.loads(json.dumps(asdict(settings)))  # tuples as lists, as they read back from world.json
    if not force and is_current(out_dir, GENERAL_WORLD_VERSION, as_dict):
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "world.json").exists():
        raise StampWorldError(f"{out_dir} exists and is not a general world; pick an empty or new folder")
    missing = [sc.file for sc in SCENES.values() if sc.colour is None and not (scenes_dir / sc.file).exists()]
    if missing:
        raise StampWorldError(f"{len(missing)} scene photos are missing from {scenes_dir} (e.g. {missing[0]}); "
                              "run `make setup` (or `texplain setup`)")
    t0 = time.time()
    stamps, excluded = stamp_inventory(stamps_dir)
    sizes = scene_sizes(scenes_dir, SCENES)
    plan = _plan_general(settings, stamps, sizes)

    with building(out_dir) as tmp:
        (tmp / "images").mkdir()
        load_sources(scenes_dir, SCENES, {s.key: s.path for s in stamps})
        try:
            run_jobs(_render_general_chunk, plan, tmp, workers)
        finally:
            clear_sources()
        _write_general_tables(plan, stamps, excluded, tmp, as_dict)
    if verbose:
        print(f"[general-world] {len(plan)} images of {len(stamps)} stamps in {time.time() - t0:.1f} s -> {out_dir}",
              flush=True)
    return out_dir


def _write_general_tables(plan: list[dict], stamps: list[Stamp], excluded: dict[str, str], out_dir: Path,
                          settings: dict) -> None:
    by_key = {s.key: s for s in stamps}
    kinds = sorted({s.key.split("/", 1)[0] for s in stamps})  # the class of an image: its stamp's top folder
    meta = pd.DataFrame({
        "img_filename": [it["img_filename"] for it in plan],
        "y": [kinds.index(it["stamp"].split("/", 1)[0]) for it in plan],
        "split": [it["split"] for it in plan],
        "stamp": [it["stamp"] for it in plan],
        "identity": [by_key[it["stamp"]].identity for it in plan],
        "category": [by_key[it["stamp"]].category for it in plan],
        "scene": [it["scene"] for it in plan],
        "crop": ["" if it["crop"] is None else " ".join(map(str, it["crop"])) for it in plan],
    })
    # Waterbirds' metadata.csv format, so `open_dataset` reads the world (classes: the stamp's kind).
    meta.to_csv(out_dir / "metadata.csv", index=False)
    description = {"name": out_dir.name, "classes": kinds}
    (out_dir / "dataset.json").write_text(json.dumps(description, indent=1) + "\n", encoding="utf-8")
    captions = pd.DataFrame([(it["img_filename"], c, it["split"]) for it in plan for c in it["captions"]],
                            columns=["img_filename", "caption", "split"])
    captions.to_csv(out_dir / "captions.csv", index=False)
    reasons: dict[str, int] = {}
    for why in excluded.values():
        why = re.sub(r" \(\d+x\d+ px\)| as .*$", "", why)  # one count per rule, not per size or twin
        reasons[why] = reasons.get(why, 0) + 1
    world = {
        "version": GENERAL_WORLD_VERSION, "seed": settings["seed"], "settings": settings,
        "images": len(meta), "captions": len(captions),
        "counts": {sp: int((meta.split == sp).sum()) for sp in ("train", "val", "test")},
        "stamps": {"usable": len(stamps), "excluded": len(excluded), "excluded_by_reason": reasons,
                   "by_split": {sp: sorted(meta.loc[meta.split == sp, "stamp"].unique()) for sp in
                                ("train", "val", "test")}},
        "excluded_stamps": excluded,
        "scenes": {n: (sc.file or f"plain rgb{sc.colour}") for n, sc in SCENES.items()},
    }
    (out_dir / "world.json").write_text(json.dumps(world, indent=1) + "\n", encoding="utf-8")


def read_general_world(root: str | Path = GENERAL_WORLD) -> pd.DataFrame:
    """Its captions as the caption readers return them: path, caption, split."""
    root = Path(root)
    if not (root / "captions.csv").exists():
        raise StampWorldError(f"{root} holds no general world; build it with `texplain maintain general-world`")
    frame = pd.read_csv(root / "captions.csv")
    frame.insert(0, "path", [str(root / f) for f in frame.pop("img_filename")])
    return frame
