"""The demo world: a mini-Waterbirds made the way Waterbirds was made, birds pasted on scene photos.

Sagawa et al. (2020) cut CUB birds out with their segmentation masks and pasted them on Places
photos: seabirds and waterfowl are waterbirds (y=1), the rest landbirds; ocean and lake scenes are
water (place=1), forests land. In training 95% of each class sits on its matching background, so a
classifier can score well by looking at the background alone; validation and test are balanced over
the four groups, which exposes it. Here the birds are the 34 tuxpaint photo cut-outs and the scenes
11 real landscape photos from Debian wallpaper packages (`texplain setup` fetches both).

What is kept apart between splits, so that test images show unseen birds on unseen pixels:
- birds by identity: about 2/3 of each class's cut-outs for train, the rest split between val and
  test, so that a model refit on val (last-layer retraining, DFR) meets new birds on test;
- scenes by crop region: with 5 water photos there are too few to hold whole photos out, so every
  photo is cut in two halves along its long side: train crops come from the left half, val and test
  crops from the right half.

The output is Waterbirds' own format, so `read_waterbirds` reads it: `metadata.csv` (img_id,
img_filename, y, split, place, place_filename, plus bird and crop for provenance), the images under
`images/<bird>/<img_id>.jpg`, `captions.csv` (img_filename, caption, split; several rows per image)
and `world.json` (seed, version, settings, counts). Everything follows from the seed.
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
from core.demo.worlds.render import building, run_jobs
from core.errors import DemoWorldError  # noqa: F401  (re-exported: callers catch it from here)

DEMO_VERSION = 4  # bump when the output changes for the same seed and settings, so old worlds rebuild
IMAGE_SIZE = 256
JPEG_QUALITY = 90

# --- birds -----------------------------------------------------------------------------------

# Seabirds and waterfowl, as in Waterbirds; herons and the flamingo are wading birds of the water's edge.
WATER_BIRDS = frozenset({"drake", "duck", "gander", "little-penguin", "magellanic_penguin", "penguin", "pelican",
                         "seagull", "silver-gull", "heron_greatblue", "heron_greatblue_flying", "pink_flamingo"})
LAND_BIRDS = frozenset({"adelaide-rosella", "blackbird", "chicken_profile", "crow", "crowned_crane", "cuckoo",
                        "guineafowl", "helmeted_guineafowl", "hen", "lark", "magpie", "nandou", "ostrich", "owl",
                        "peacock", "pigeon", "quetzal", "rainbow-lorikeet", "rooster", "tucan", "turkey", "vulture"})
# Left out: its cut-out keeps a patch of grass under the bird, a land cue that would travel with it.
EXCLUDED_BIRDS = {"albino_peahen": "the cut-out includes a patch of grass"}
# Cut-outs of one bird (two poses of one heron) count as one identity and go to the same split.
SAME_BIRD = {"heron_greatblue_flying": "heron_greatblue"}
TRAIN_BIRD_SHARE = 2 / 3  # of each class's identities; the rest alternate between val and test

# How captions name each bird: the stamp's own caption first, then plainer variants. None of them
# uses a scene word ("water bird", "seabird"), so that scene words in explanations come from scenes.
BIRD_NAMES = {
    "adelaide-rosella": ("an Adelaide rosella", "a rosella", "a small parrot"),
    "blackbird": ("a blackbird", "a black songbird"),
    "chicken_profile": ("a chicken", "a grey chicken", "a hen"),
    "crow": ("a crow", "a black crow"),
    "crowned_crane": ("a crowned crane", "a crane"),
    "cuckoo": ("a cuckoo", "a grey cuckoo"),
    "drake": ("a drake", "a mallard drake", "a duck"),
    "duck": ("a duck", "a mallard", "a mallard duck"),
    "gander": ("a gander", "a goose", "a grey goose"),
    "guineafowl": ("a guinea fowl", "a small guinea fowl"),
    "helmeted_guineafowl": ("a helmeted guinea fowl", "a guinea fowl"),
    "hen": ("a brown hen", "a hen", "a chicken"),
    "heron_greatblue": ("a great blue heron", "a heron", "a blue heron"),
    "heron_greatblue_flying": ("a great blue heron", "a flying heron", "a heron"),
    "lark": ("a lark", "a horned lark", "a small brown songbird"),
    "little-penguin": ("a little penguin", "a small penguin", "a penguin"),
    "magellanic_penguin": ("a Magellanic penguin", "a penguin"),
    "magpie": ("a magpie", "a black and white magpie"),
    "nandou": ("a rhea", "a large flightless bird"),
    "ostrich": ("an ostrich", "a pale ostrich"),
    "owl": ("an owl", "a snowy owl", "a white owl"),
    "peacock": ("a peacock", "a peafowl"),
    "pelican": ("a pelican", "a white pelican"),
    "penguin": ("a penguin", "a large penguin"),
    "pigeon": ("a pigeon", "a grey pigeon"),
    "pink_flamingo": ("a pink flamingo", "a flamingo"),
    "quetzal": ("a quetzal", "a green quetzal"),
    "rainbow-lorikeet": ("a rainbow lorikeet", "a lorikeet", "a colorful parrot"),
    "rooster": ("a colorful rooster", "a rooster", "a cockerel"),
    "seagull": ("a seagull", "a gull", "a flying gull"),
    "silver-gull": ("a silver gull", "a gull", "a seagull"),
    "tucan": ("a toucan", "a flying toucan"),
    "turkey": ("a turkey", "a wild turkey"),
    "vulture": ("a vulture", "a brown vulture"),
}
FLYING = frozenset({"heron_greatblue_flying", "seagull", "pelican", "tucan"})  # cut-outs with spread wings

# --- scenes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    file: str                      # in paths.SCENE_PHOTOS
    place: int                     # 1 water, 0 land
    descriptions: tuple[str, ...]  # true of both halves of the photo
    across: tuple[float, float] = (0.0, 1.0)  # where crops may sit across the short side (landscape: 0 top)
    more: tuple[str, ...] = ()     # further descriptions, used by the extra captions (world v3)

    @property
    def all_descriptions(self) -> tuple[str, ...]:
        return self.descriptions + self.more


# Only real photos a person would name at a glance ("a lake", "a forest"); the abstract wallpapers are left out.
# Photos whose water lies low in the frame keep their crops low (`across`), so no crop is all sky.
SCENES = {
    # water: plasma-workspace-wallpapers
    "BytheWater": Scene("BytheWater.jpg", 1, (
        "a wooden dock by a lake", "old planks of a pier over the water",
        "a lake seen from a wooden jetty", "a sunlit lake beyond a wooden pier"),
        more=("weathered boards of a dock above calm water", "a quiet lake with a wooden pier in the sun",
              "the end of a jetty and open water", "blue water beside an old wooden dock")),
    "ColdRipple": Scene("ColdRipple.jpg", 1, (
        "a wooden pier on a foggy lake", "a jetty over still grey water",
        "a misty lake with an old pier", "a grey lake in thick fog"),
        more=("a long pier fading into fog over the water", "calm grey water and a foggy shore",
              "an empty jetty on a cold misty lake", "still water with a pier in the mist")),
    "DarkestHour": Scene("DarkestHour.jpg", 1, (
        "a dark blue lake at dusk", "still water under a misty night sky",
        "a calm lake with a faint far shore", "a misty lake at nightfall"), across=(0.4, 1.0),
        more=("deep blue water in the evening", "a dark lake reflecting the sky",
              "calm water fading into a misty horizon", "the surface of a lake at dusk")),
    "EveningGlow": Scene("EveningGlow.jpg", 1, (
        "rowing boats on a lake shore at sunset", "wooden boats on a lakeside beach",
        "a lake under an orange evening sky", "boats pulled up on a lake shore"),
        more=("small boats on a sandy lake beach", "a shore with rowing boats at dusk",
              "golden light over a lake and its beach", "boats resting at the edge of the water")),
    "summer_1am": Scene("summer_1am.jpg", 1, (
        "a calm lake at dawn", "still pink water under a purple sky",
        "reeds in a quiet lake at twilight", "a lake shore at first light"), across=(0.6, 1.0),
        more=("pink and purple light on calm water", "a glassy lake with reeds at dawn",
              "soft morning colours over the water", "a still lake under a violet sky")),
    # land: plasma-workspace-wallpapers
    "Path": Scene("Path.jpg", 0, (
        "a path through a pine forest", "a dark green forest of tall trees",
        "a forest trail among pines", "ferns under tall pine trees"),
        more=("tall pine trunks along a forest path", "a shady trail in a dense forest",
              "green ferns beside a forest path", "evergreen trees over a dirt trail")),
    "FallenLeaf": Scene("FallenLeaf.jpg", 0, (
        "autumn leaves on the forest floor", "a brown maple leaf on the ground",
        "fallen leaves in warm autumn light", "dry leaves on the ground in a forest"),
        more=("a single orange leaf on the ground", "brown autumn leaves on a forest floor",
              "a close view of a fallen maple leaf", "leaves lying on dry ground in autumn")),
    "OneStandsOut": Scene("OneStandsOut.jpg", 0, (
        "green moss on the forest floor", "a carpet of small green plants",
        "a mossy forest floor seen from above", "star-shaped moss on the ground"),
        more=("bright green moss covering the ground", "tiny green plants on a forest floor",
              "a soft bed of moss in a forest", "dense moss on the ground seen up close")),
    # land: lomiri-wallpapers-16.04
    "aitzgorri": Scene("aitzgorri_by_Aitzol_Berasategi.jpg", 0, (
        "a green meadow below a rocky mountain", "autumn trees on a hillside under a mountain",
        "a grassy field with a forest and mountains", "a mountain pasture in autumn"),
        more=("a rocky mountain peak above autumn trees", "green grass on a hillside below a mountain",
              "a meadow at the foot of a mountain", "autumn forest on a mountainside")),
    "picosdeeuropa": Scene("picosdeeuropa_by_Aitzol_Berasategi.jpg", 0, (
        "a dirt path across a mountain meadow", "rocky mountains above green grass",
        "a trail on a grassy mountainside", "a mountain valley with patches of snow"),
        more=("a dirt trail winding through mountain grass", "grey rocky peaks above a meadow",
              "a high mountain meadow with a path", "green grass and rocks on a mountainside")),
    "seeding": Scene("seeding_by_Clements_Engelhardt.jpg", 0, (
        "dandelions in a grassy field", "a meadow of dandelion seed heads",
        "tall grass and dandelions in the sun", "a field of wild flowers gone to seed"),
        more=("white dandelion clocks in a field", "a sunny meadow full of seed heads",
              "green grass with fluffy dandelions", "a summer field of tall grass")),
}
# Every water description holds a water word and no land word, and the other way round (tests check it).
SCENE_WORDS = {
    1: ("water", "lake", "sea", "shore", "beach", "waves", "river", "pier", "jetty", "dock", "boats", "reeds"),
    0: ("forest", "trees", "grass", "grassy", "field", "path", "trail", "leaves", "leaf", "mountain", "mountains",
        "mountainside", "meadow", "moss", "mossy", "plants", "hillside", "ground", "pines", "pine", "dandelions"),
}
TRAIN_REGION, EVAL_REGION = (0.0, 0.5), (0.5, 1.0)  # of the photo's long side
WORKING_CROP = 320  # px a side of the smallest crop, before it is resized to IMAGE_SIZE
CROP_SIDE = (0.75, 1.0)  # of the largest square that fits in a half: large, so a lake still reads as a lake

# --- captions --------------------------------------------------------------------------------

TEMPLATES = (
    "A photo of {bird} {pose} {prep} {scene}.",
    "{Bird} {prep} {scene}.",
    "{Scene}, with {bird} in the foreground.",
    "There is {bird} {prep} {scene}.",
    "A picture of {bird} with {scene} behind it.",
    "{Bird} {pose} {prep} {scene}.",
    "A close-up of {bird} against {scene}.",
    "{stamp} Behind it, {scene}.",
)
# World v3's extra captions: more phrasings, none naming the class or pairing a bird with a scene by
# wording (no "swimming", no "perched"), so the scene words in an explanation can only come from the scene.
MORE_TEMPLATES = (
    "{Bird} seen {prep} {scene}.",
    "In this photo, {bird} is {pose} {prep} {scene}.",
    "An image of {scene} with {bird} in it.",
    "{Bird} with {scene} in the background.",
    "The background shows {scene}, and in front of it is {bird}.",
    "A snapshot of {bird} {pose} {prep} {scene}.",
    "{Scene}, and {bird} {pose} in front.",
    "A bird photo: {bird} {prep} {scene}.",
    "{Bird} in the picture, behind it {scene}.",
    "A colour photo of {bird} against {scene}.",
)
LEGACY_CAPTIONS = 3  # drawn inside the plan's random stream, as in world v2 (the shipped classifiers' images)
PREPOSITIONS = ("in front of", "near", "by", "beside")
MAX_CAPTION_WORDS = 20

PLACE_NAMES = {0: "land", 1: "water"}
BIRD_SIZE = (0.40, 0.65)  # the bird's longer side, as a share of the image side


def demo_class_names() -> list[str]:
    return ["landbird", "waterbird"]


@dataclass(frozen=True)
class DemoSettings:
    seed: int = 0
    n_train: int = 1200
    n_val: int = 120
    n_test: int = 200
    match: float = 0.95                # share of each training class on its matching background
    train_waterbird_share: float = 0.5  # Waterbirds has ~0.23; balanced classes keep the story to backgrounds
    captions_per_image: int = 8  # >= 6 since world v3: the translators need varied captions per image


# --- planning: every random choice, made up front from the seed ----------------------------

def _bird_split(rng: np.random.Generator) -> dict[str, str]:
    """bird -> "train", "val" or "test", keeping SAME_BIRD poses together.

    Val and test get disjoint birds (session 1 shared them: a head refit on val then scored ~100% on
    test by recognising the very same birds).
    """
    out = {}
    for birds in (WATER_BIRDS, LAND_BIRDS):
        units = sorted({SAME_BIRD.get(b, b) for b in birds})
        order = [units[i] for i in rng.permutation(len(units))]
        n_train = int(round(TRAIN_BIRD_SHARE * len(units)))
        split = {u: "train" for u in order[:n_train]}
        split |= {u: ("test", "val")[i % 2] for i, u in enumerate(order[n_train:])}  # test gets the odd one
        for b in sorted(birds):
            out[b] = split[SAME_BIRD.get(b, b)]
    return out


def _cycle(rng: np.random.Generator, items: list[str], n: int) -> list[str]:
    """n items, each used equally often (up to one), in seeded random order."""
    if not items:
        raise DemoWorldError("no birds or scenes to draw from; check WATER_BIRDS, LAND_BIRDS and SCENES")
    out = []
    while len(out) < n:
        out += [items[i] for i in rng.permutation(len(items))]
    return out[:n]


def _group_counts(s: DemoSettings) -> dict[str, dict[tuple[int, int], int]]:
    """split -> {(y, place): n}."""
    n_water = int(round(s.n_train * s.train_waterbird_share))
    train = {}
    for y, n in ((1, n_water), (0, s.n_train - n_water)):
        matching = int(round(n * s.match))
        train[(y, y)] = matching
        train[(y, 1 - y)] = n - matching
    counts = {"train": train}
    for split, n in (("val", s.n_val), ("test", s.n_test)):
        groups = [(0, 0), (0, 1), (1, 0), (1, 1)]
        counts[split] = {g: n // 4 + (1 if i < n % 4 else 0) for i, g in enumerate(groups)}
    return counts


def _captions(rng: np.random.Generator, bird: str, scene: str, stamp: str, k: int,
              more: bool = False, out: list[str] | None = None) -> list[str]:
    """k new captions (not in `out`); `more` draws from world v3's wider templates and descriptions."""
    names = BIRD_NAMES[bird]
    descriptions = SCENES[scene].all_descriptions if more else SCENES[scene].descriptions
    templates = TEMPLATES + MORE_TEMPLATES if more else TEMPLATES
    out = list(out or [])
    want = len(out) + k
    for _ in range(20 * k):
        if len(out) == want:
            break
        name = names[rng.integers(len(names))]
        where = descriptions[rng.integers(len(descriptions))]
        text = templates[rng.integers(len(templates))].format(
            bird=name, Bird=name[0].upper() + name[1:], scene=where, Scene=where[0].upper() + where[1:],
            prep=PREPOSITIONS[rng.integers(len(PREPOSITIONS))], pose="flying" if bird in FLYING else "standing",
            stamp=stamp or name[0].upper() + name[1:] + ".")
        if text not in out and len(text.split()) <= MAX_CAPTION_WORDS:
            out.append(text)
    return out


def _crop(rng: np.random.Generator, scene: str, size: tuple[int, int], region: tuple[float, float]
          ) -> tuple[int, int, int, int]:
    """A square crop of the scene photo inside `region` of its long side (three draws from `rng`)."""
    w, h = size
    long_, short = max(w, h), min(w, h)
    half = (region[1] - region[0]) * long_
    side = rng.uniform(*CROP_SIDE) * min(short, half)
    a = region[0] * long_ + rng.uniform(0, half - side)  # along the long side
    b = rng.uniform(*SCENES[scene].across) * (short - side)
    x0, y0 = (a, b) if w >= h else (b, a)
    return int(x0), int(y0), int(x0 + side), int(y0 + side)


def _plan(s: DemoSettings, photo_sizes: dict[str, tuple[int, int]], stamps: dict[str, str],
          bird_size: tuple[float, float] = BIRD_SIZE) -> list[dict]:
    rng = np.random.default_rng(s.seed)
    bird_split = _bird_split(rng)
    by_place = {p: sorted(n for n, sc in SCENES.items() if sc.place == p) for p in (0, 1)}
    plan = []
    for split, groups in _group_counts(s).items():
        region = TRAIN_REGION if split == "train" else EVAL_REGION
        for (y, place), n in groups.items():
            birds = sorted(b for b in (WATER_BIRDS if y else LAND_BIRDS) if bird_split[b] == split)
            for bird, scene in zip(_cycle(rng, birds, n), _cycle(rng, by_place[place], n)):
                plan.append({
                    "split": split, "y": y, "place": place, "bird": bird, "scene": scene,
                    "crop": _crop(rng, scene, photo_sizes[scene], region),
                    "scene_flip": bool(rng.random() < 0.5), "bird_flip": bool(rng.random() < 0.5),
                    "bird_size": float(rng.uniform(*bird_size)),
                    "bird_xy": (float(rng.random()), float(rng.uniform(0.3, 1.0))),  # lower part, mostly
                    "captions": _captions(rng, bird, scene, stamps.get(bird, ""),
                                          min(s.captions_per_image, LEGACY_CAPTIONS)),
                })
    # Waterbirds' ids do not reveal split or group; neither do these.
    for img_id, i in enumerate(rng.permutation(len(plan)), start=1):
        plan[i]["img_id"] = img_id
        plan[i]["img_filename"] = f"images/{plan[i]['bird']}/{img_id:05d}.jpg"
    # Captions beyond the first three come from a stream of their own per image: adding them leaves every
    # draw above, hence every pixel of world v2 (which the shipped classifiers were trained on), unchanged.
    extra = s.captions_per_image - LEGACY_CAPTIONS
    if extra > 0:
        for item in plan:
            item["captions"] = _captions(np.random.default_rng([s.seed, 3, item["img_id"]]), item["bird"],
                                         item["scene"], stamps.get(item["bird"], ""), extra, more=True,
                                         out=item["captions"])
    return plan


# --- rendering -------------------------------------------------------------------------------

_PHOTOS: dict[str, tuple[Image.Image, float]] = {}  # scene -> (photo at working size, scale from full size)
_BIRDS: dict[str, Image.Image] = {}


def _load_photos(birds_dir: str, scenes_dir: str) -> None:
    """Each scene once, at the size where the smallest crop has WORKING_CROP px a side: resizing a
    crop then costs a third of what it would at full size, with no visible loss at 256 px."""
    for name, sc in SCENES.items():
        with Image.open(Path(scenes_dir) / sc.file) as im:
            w, h = im.size
            smallest_crop = CROP_SIDE[0] * min(min(w, h), max(w, h) / 2)
            size = (round(w * WORKING_CROP / smallest_crop), round(h * WORKING_CROP / smallest_crop))
            im.draft("RGB", size)  # JPEG decodes at 1/2, 1/4, 1/8 scale for free
            photo = im.convert("RGB")
        if photo.size[0] > size[0]:
            photo = photo.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        _PHOTOS[name] = (photo, photo.size[0] / w)
    for bird in sorted(WATER_BIRDS | LAND_BIRDS):
        with Image.open(Path(birds_dir) / f"{bird}.png") as im:
            rgba = im.convert("RGBA")
        _BIRDS[bird] = rgba.crop(rgba.getbbox())


def _placed_bird(item: dict) -> tuple[Image.Image, tuple[int, int]]:
    """The bird as pasted: (RGBA at its size in the image, its top-left corner)."""
    bird = _BIRDS[item["bird"]]
    f = item["bird_size"] * IMAGE_SIZE / max(bird.size)
    bird = bird.resize((max(1, round(bird.size[0] * f)), max(1, round(bird.size[1] * f))), Image.Resampling.BICUBIC)
    if item["bird_flip"]:
        bird = bird.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    fx, fy = item["bird_xy"]
    return bird, (int(fx * (IMAGE_SIZE - bird.size[0])), int(fy * (IMAGE_SIZE - bird.size[1])))


def _render(item: dict, out_dir: str) -> None:
    photo, k = _PHOTOS[item["scene"]]
    box = tuple(c * k for c in item["crop"])
    canvas = photo.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC, box=box)
    if item["scene_flip"]:
        canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    bird, xy = _placed_bird(item)
    canvas.paste(bird, xy, bird)
    path = Path(out_dir) / item["img_filename"]
    canvas.save(path, "JPEG", quality=JPEG_QUALITY)


def _render_chunk(args: tuple[list[dict], str]) -> int:
    items, out_dir = args
    for item in items:
        _render(item, out_dir)
    return len(items)


# --- the builder -----------------------------------------------------------------------------

def missing_photos(birds_dir: Path, scenes_dir: Path) -> list[str]:
    need = [birds_dir / f"{b}.png" for b in sorted(WATER_BIRDS | LAND_BIRDS)]
    need += [scenes_dir / sc.file for sc in SCENES.values()]
    return [str(p) for p in need if not p.exists()]


def _is_current(out_dir: Path, settings: DemoSettings, bird_size: list[float] | None = None) -> bool:
    try:
        world = json.loads((out_dir / "world.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (world.get("version") == DEMO_VERSION and world.get("settings") == asdict(settings)
            and world.get("bird_size") == bird_size
            and (out_dir / "metadata.csv").exists() and (out_dir / "captions.csv").exists())


def build_demo_world(out_dir: str | Path = paths.DEMO_DATA, seed: int = 0, force: bool = False, *,
                     n_train: int = 1200, n_val: int = 120, n_test: int = 200, match: float = 0.95,
                     train_waterbird_share: float = 0.5, captions_per_image: int = 8,
                     workers: int | None = None, birds_dir: str | Path = paths.BIRD_PHOTOS,
                     scenes_dir: str | Path = paths.SCENE_PHOTOS, verbose: bool = True,
                     bird_size: tuple[float, float] | None = None) -> Path:
    """Build the mini-Waterbirds into `out_dir` and return it; a no-op when it is already built with
    the same seed, settings and version (unless `force`). Takes 10-20 s on 2 busy cores.

    `bird_size` (the bird's longer side as a share of the image side, drawn in this range; default BIRD_SIZE)
    changes nothing but the birds' size: the same draws, so the same birds on the same crops at the same places
    (an experiment's world: the shipped classifiers were trained on the default)."""
    out_dir, birds_dir, scenes_dir = Path(out_dir), Path(birds_dir), Path(scenes_dir)
    settings = DemoSettings(seed, n_train, n_val, n_test, match, train_waterbird_share, captions_per_image)
    if not 0.5 <= match <= 1:
        raise ValueError(f"match is the share of training images on their class's background: 0.5..1, got {match}")
    if not 0 < train_waterbird_share < 1 or min(n_train, n_val, n_test) < 4 or captions_per_image < 1:
        raise ValueError(f"sizes need n_train, n_val, n_test >= 4, 0 < train_waterbird_share < 1 and "
                         f"captions_per_image >= 1; got {settings}")
    size = [float(v) for v in bird_size] if bird_size is not None else None
    if size is not None and not (len(size) == 2 and 0 < size[0] <= size[1] <= 1):
        raise ValueError(f"bird_size is a range (low, high) of shares of the image side in (0, 1], got {bird_size}")
    if not force and _is_current(out_dir, settings, size):
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "world.json").exists():
        raise DemoWorldError(f"{out_dir} exists and is not a demo world; pick an empty or new folder")
    missing = missing_photos(birds_dir, scenes_dir)
    if missing:
        raise DemoWorldError(f"{len(missing)} photos the demo world needs are missing (e.g. {missing[0]}); "
                             "run `make setup` (or `texplain setup`) to fetch them")

    t0 = time.time()
    plan = _plan(settings, _photo_sizes(scenes_dir), _stamps(birds_dir), tuple(size) if size else BIRD_SIZE)

    with building(out_dir) as tmp:
        for bird in {item["bird"] for item in plan}:
            (tmp / "images" / bird).mkdir(parents=True)
        _load_photos(str(birds_dir), str(scenes_dir))  # once, before forking: workers share it
        try:
            run_jobs(_render_chunk, plan, tmp, workers)
        finally:
            _PHOTOS.clear()
            _BIRDS.clear()
        _write_tables(plan, tmp, settings, name=out_dir.name, bird_size=size)  # built in a temporary folder
    if verbose:
        print(f"[demo] built the demo world ({len(plan)} images) in {time.time() - t0:.1f} s -> {out_dir}", flush=True)
    return out_dir


def _write_tables(plan: list[dict], out_dir: Path, settings: DemoSettings, name: str | None = None,
                  bird_size: list[float] | None = None) -> None:
    plan = sorted(plan, key=lambda item: item["img_id"])
    split_code = {"train": 0, "val": 1, "test": 2}
    meta = pd.DataFrame({
        "img_id": [it["img_id"] for it in plan],
        "img_filename": [it["img_filename"] for it in plan],
        "y": [it["y"] for it in plan],
        "split": [split_code[it["split"]] for it in plan],
        "place": [it["place"] for it in plan],
        "place_filename": [SCENES[it["scene"]].file for it in plan],
        "bird": [it["bird"] for it in plan],
        "crop": [" ".join(map(str, it["crop"])) + (" flipped" if it["scene_flip"] else "") for it in plan],
    })
    meta.to_csv(out_dir / "metadata.csv", index=False)
    captions = pd.DataFrame([(it["img_filename"], c, it["split"]) for it in plan for c in it["captions"]],
                            columns=["img_filename", "caption", "split"])
    captions.to_csv(out_dir / "captions.csv", index=False)
    counts = {split: {f"{demo_class_names()[y]} on {PLACE_NAMES[p]}": int(n)
                      for (y, p), n in meta[meta.split == code].groupby(["y", "place"]).size().items()}
              for split, code in split_code.items()}
    birds = {split: sorted(meta.loc[meta.split == code, "bird"].unique()) for split, code in split_code.items()}
    world = {
        "version": DEMO_VERSION, "seed": settings.seed, "settings": asdict(settings),
        "counts": counts, "images": len(meta), "captions": len(captions), "birds": birds,
        "scenes": {n: {"file": sc.file, "place": PLACE_NAMES[sc.place]} for n, sc in SCENES.items()},
        "scene_split": "by crop region: train crops from the left half of each photo, val/test from the right half",
        "excluded_birds": EXCLUDED_BIRDS,
        **({"bird_size": bird_size} if bird_size is not None else {}),  # absent: BIRD_SIZE (the shipped worlds)
    }
    (out_dir / "world.json").write_text(json.dumps(world, indent=1) + "\n", encoding="utf-8")
    # What the labels mean, for any reader of the folder (see core.data.description).
    description = {"name": name or out_dir.name, "classes": demo_class_names(), "group_by": "place",
                   "attributes": {"place": {"name": "background",
                                            "values": {str(p): n for p, n in PLACE_NAMES.items()}}}}
    (out_dir / "dataset.json").write_text(json.dumps(description, indent=1) + "\n", encoding="utf-8")


def _stamps(birds_dir: str | Path) -> dict[str, str]:
    """The bird cut-outs' Tux Paint descriptions (captions.json beside them), where the set-up fetched them."""
    f = Path(birds_dir) / "captions.json"
    return json.loads(f.read_text(encoding="utf-8")) if f.exists() else {}


def _photo_sizes(scenes_dir: str | Path) -> dict[str, tuple[int, int]]:
    sizes = {}
    for name, sc in SCENES.items():
        with Image.open(Path(scenes_dir) / sc.file) as im:
            sizes[name] = im.size
    return sizes


def _built_plan(world: dict, birds_dir: str | Path, scenes_dir: str | Path, sizes=None) -> list[dict]:
    """The plan a built world was drawn from (its world.json: settings, seed, bird size), drawn again."""
    return _plan(DemoSettings(**world["settings"]), sizes or _photo_sizes(scenes_dir), _stamps(birds_dir),
                 tuple(world.get("bird_size") or BIRD_SIZE))


def object_masks(out_dir: str | Path = paths.DEMO_DATA, birds_dir: str | Path = paths.BIRD_PHOTOS,
                 scenes_dir: str | Path = paths.SCENE_PHOTOS) -> Path:
    """Where the bird is in every image of a built demo world: masks/<image path>.png (255 on the bird), written
    once beside the images from the world's own plan (its settings and seed), without touching the images."""
    out_dir = Path(out_dir)
    world = json.loads((out_dir / "world.json").read_text())
    masks = out_dir / "masks"
    if (masks / ".done").exists():
        return masks
    plan = _built_plan(world, birds_dir, scenes_dir)
    for bird in sorted(WATER_BIRDS | LAND_BIRDS):
        with Image.open(Path(birds_dir) / f"{bird}.png") as im:
            rgba = im.convert("RGBA")
        _BIRDS[bird] = rgba.crop(rgba.getbbox())
    try:
        for item in plan:
            bird, xy = _placed_bird(item)
            mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
            mask.paste(bird.getchannel("A").point(lambda a: 255 if a >= 128 else 0), xy)
            path = (masks / item["img_filename"]).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            mask.save(path)
    finally:
        _BIRDS.clear()
    (masks / ".done").write_text(str(world["version"]))
    return masks


def build_place_swapped(world: str | Path, out_dir: str | Path, images: list[str] | None = None,
                        birds_dir: str | Path = paths.BIRD_PHOTOS, scenes_dir: str | Path = paths.SCENE_PHOTOS
                        ) -> Path:
    """Each image of a built demo world (or only `images`, as img_filename) again with its background swapped for
    the other place: the same bird at the same size, side and place, on a crop of a scene of the other kind (land
    for water, water for land) from the same region of the photos as its split's. The counterfactual that says
    whether a background decided a prediction. Written to `out_dir` under the same relative paths; the images
    already there are kept."""
    out_dir = Path(out_dir)
    doc = json.loads((Path(world) / "world.json").read_text())
    seed, sizes = doc["settings"]["seed"], _photo_sizes(scenes_dir)
    plan = _built_plan(doc, birds_dir, scenes_dir, sizes)
    if images is not None:
        keep = set(images)
        plan = [it for it in plan if it["img_filename"] in keep]
    by_place = {p: sorted(n for n, sc in SCENES.items() if sc.place == p) for p in (0, 1)}
    swapped = []
    for it in plan:
        rng = np.random.default_rng([seed, 7, it["img_id"]])  # a stream of its own per image
        other = by_place[1 - it["place"]]
        scene = other[int(rng.integers(len(other)))]
        region = TRAIN_REGION if it["split"] == "train" else EVAL_REGION
        swapped.append({**it, "place": 1 - it["place"], "scene": scene,
                        "crop": _crop(rng, scene, sizes[scene], region)})
    todo = [it for it in swapped if not (out_dir / it["img_filename"]).exists()]
    for it in todo:
        (out_dir / it["img_filename"]).parent.mkdir(parents=True, exist_ok=True)
    _load_photos(str(birds_dir), str(scenes_dir))
    try:
        for it in todo:
            _render(it, str(out_dir))
    finally:
        _PHOTOS.clear()
        _BIRDS.clear()
    return out_dir


def caption_words(caption: str) -> set[str]:
    """Lower-case words of a caption, for checking which bird and scene words it uses."""
    return set(re.findall(r"[a-z]+(?:-[a-z]+)?", caption.lower()))
