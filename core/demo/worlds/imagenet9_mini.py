"""A mini ImageNet-9 Backgrounds Challenge, built the way Xiao et al. (2020) built theirs, from the tuxpaint
stamps on scene photos (the benchmark's classes and ImageNet ranges: core.data.imagenet9).

The nine classes and their ImageNet index ranges are those of the Backgrounds Challenge release
(MadryLab/backgrounds_challenge, `in_to_in9.json` and `in9_classes.txt`): each class is a WordNet
synset (dog n02084071, bird n01503061, wheeled vehicle n04576211, reptile n01661091, carnivore
n02075296, insect n02159955, musical instrument n03800933, primate n02469914, fish n02512053) and
takes the ImageNet classes under it; 370 of the 1,000 classes belong to one of the nine, the rest to
none. Their evaluation takes the classifier's top-1 over all 1,000 classes and maps it; a prediction
outside the nine counts as wrong. `predict_in9` does that; `restrict=True` instead takes the argmax
over the 370 only (a softer reading, reported beside it).

How Xiao et al. made the variations, and how this builder follows them (one stamp pasted on one scene
crop is an "original" whose foreground mask and bounding box are known exactly, where theirs came
from GrabCut on ImageNet's boxes):
- original: the object on a scene typical of its class (fish on water, birds on trees and sky, ...);
- only_fg: the object on black;
- only_bg_t: the original with the object's bounding box filled with tiles of the rest of the image;
- mixed_same: the object, at the same place, on the only_bg_t of another image of the same class;
- mixed_rand: the same, on the only_bg_t of an image of a random class.
Folders follow theirs: `<variation>/val/<NN_class>/<image>.JPEG`, one image name across variations,
so an image's variants pair up. `in9_plan.csv` records each image's stamp, scene and partners.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core import paths
from core.data.imagenet9 import IN9_CLASSES, IN9_RANGES, VARIATIONS, in9_folder, in9_superclasses
from core.demo.worlds import general as gw
from core.demo.worlds.render import building, run_jobs
from core.errors import StampWorldError

IMAGENET9_VERSION = 1
IMAGENET9_MINI = paths.ASSETS / "imagenet9-mini"


# --- which stamps are which class ------------------------------------------------------------

# Reviewed: a stamp joins a class when its ImageNet counterpart sits under the class's synset. So the
# dingo and the fox are carnivores (ImageNet's "dingo" and foxes are wild canids, outside "dog"), the
# sea lion, the frog, the lobster and the slug belong to none, and the seahorse is a fish.
IN9_STAMPS: dict[str, tuple[str, ...]] = {
    "dog": ("animals/mammals/dogs/dog",),
    "bird": tuple(f"animals/birds/{b}" for b in (
        "adelaide-rosella", "blackbird", "chicken_profile", "crow", "crowned_crane", "cuckoo", "drake", "duck",
        "gander", "guineafowl", "helmeted_guineafowl", "hen", "heron_greatblue", "heron_greatblue_flying", "lark",
        "little-penguin", "magellanic_penguin", "magpie", "nandou", "ostrich", "owl", "peacock", "pelican",
        "penguin", "pigeon", "pink_flamingo", "quetzal", "rainbow-lorikeet", "rooster", "seagull", "silver-gull",
        "tucan", "turkey", "vulture")),
    "vehicle": ("vehicles/auto/beetle", "vehicles/auto/sedan", "vehicles/auto/sportscar2", "vehicles/auto/truck",
                "vehicles/construction/dumper", "vehicles/cycle/pink_tricycle", "vehicles/emergency/firetruck",
                "vehicles/emergency/sedan_police", "vehicles/garbagetruck", "vehicles/masstransit/green_korean_bus",
                "vehicles/race/indycar", "household/tools/cementmixer", "military/vehicles/bradley",
                "military/vehicles/infantry-stryker", "military/vehicles/ww2_german_gun"),
    "reptile": ("animals/lizards/iguana",),
    "carnivore": ("animals/mammals/cats/lion", "animals/mammals/cats/lion-2", "animals/mammals/cats/tiger",
                  "animals/mammals/cats/tiger_sumatran", "animals/mammals/bears/bear",
                  "animals/mammals/bears/european-bear", "animals/mammals/dogs/dingo", "animals/mammals/dogs/fox",
                  "animals/mammals/aquatic/otter", "animals/mammals/badger", "animals/mammals/ferret"),
    "insect": tuple(f"animals/insects/{i}" for i in ("bee", "fly", "grasshopper", "hornet", "hoverfly", "mantis",
                                                      "xanthia")),
    "instrument": tuple(f"hobbies/music/{i}" for i in (
        "brass/trumpet", "percussion/cymbal_crash", "percussion/drum_tomtom_floor", "percussion/drumkit",
        "string/cello", "string/guitar2", "string/guitar_classical", "string/guitar_electric",
        "string/guitar_electric_bass", "string/violin", "wind/bassoon")),
    "primate": ("animals/mammals/apes/chimp", "animals/mammals/apes/gorilla", "animals/mammals/apes/tamarin_emperor"),
    "fish": tuple(f"animals/fish/{f}" for f in ("bluegroper", "butterflyfish", "clownfish", "coraltrout",
                                                 "dolphinfish", "lionfish", "moonwrasse", "seahorse", "stripedfish")),
}
# Scenes typical of each class (scene names of core.data.general_world.SCENES). The wallpaper packages
# hold no road or street photo, so vehicles stand by buildings, a bridge and mountain tracks.
IN9_SCENES: dict[str, tuple[str, ...]] = {
    "dog": ("seeding", "aitzgorri", "Path", "Wine", "FallenLeaf"),
    "bird": ("Dragonfly", "Kite", "Path", "BytheWater", "EveningGlow", "seeding"),
    "vehicle": ("Grey", "Bridge", "picosdeeuropa", "sunset"),
    "reptile": ("sunset", "FallenLeaf", "OneStandsOut", "picosdeeuropa", "life"),
    "carnivore": ("aitzgorri", "Path", "picosdeeuropa", "seeding", "life"),
    "insect": ("seeding", "OneStandsOut", "FallenLeaf", "Dragonfly"),
    "instrument": ("Wine", "free", "greentock"),
    "primate": ("Path", "life", "Dragonfly"),
    "fish": ("BytheWater", "ColdRipple", "DarkestHour", "EveningGlow", "summer_1am", "life"),
}


def in9_stamps(stamps_dir: str | Path = gw.STAMPS_DIR) -> dict[str, list[gw.Stamp]]:
    """class -> its usable stamps; a listed stamp the inventory leaves out is an error, not a silent drop."""
    usable, excluded = gw.stamp_inventory(stamps_dir)
    by_key = {s.key: s for s in usable}
    out = {}
    for name in IN9_CLASSES:
        missing = [k for k in IN9_STAMPS[name] if k not in by_key]
        if missing:
            why = {k: excluded.get(k, "not in the package") for k in missing}
            raise StampWorldError(f"ImageNet-9 class {name!r} lists stamps the inventory does not offer: {why}")
        out[name] = [by_key[k] for k in IN9_STAMPS[name]]
    return out


# --- planning --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageNet9Settings:
    seed: int = 0
    n_per_class: int = 50
    stamp_size: tuple[float, float] = (0.5, 0.8)  # ImageNet photos are mostly object: larger than the captions world


def _cycle(rng: np.random.Generator, items: list, n: int) -> list:
    out = []
    while len(out) < n:
        out += [items[i] for i in rng.permutation(len(items))]
    return out[:n]


def _plan_in9(s: ImageNet9Settings, stamps: dict[str, list[gw.Stamp]], sizes: dict) -> list[dict]:
    rng = np.random.default_rng(s.seed)
    plan = []
    for label, name in enumerate(IN9_CLASSES):
        for stamp, scene in zip(_cycle(rng, stamps[name], s.n_per_class),
                                _cycle(rng, list(IN9_SCENES[name]), s.n_per_class)):
            plan.append({
                "label": label, "stamp": stamp.key, "scene": scene, "crop": gw.random_crop(rng, sizes[scene]),
                "scene_flip": bool(rng.random() < 0.5), "stamp_flip": bool(rng.random() < 0.5),
                "stamp_size": float(rng.uniform(*s.stamp_size)),
                "stamp_xy": (float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8))),
            })
    for i, item in enumerate(plan):
        item["image"] = f"in9m_{i:05d}"
    by_class = {c: [i for i, it in enumerate(plan) if it["label"] == c] for c in range(len(IN9_CLASSES))}
    for i, item in enumerate(plan):
        same = [j for j in by_class[item["label"]] if j != i]
        item["same_partner"] = int(same[rng.integers(len(same))])
        # Xiao et al.: a random class (which may be the image's own), then a random image of it.
        other = by_class[int(rng.integers(len(IN9_CLASSES)))]
        choices = [j for j in other if j != i]
        item["rand_partner"] = int(choices[rng.integers(len(choices))])
    return plan


# --- rendering -------------------------------------------------------------------------------

def tiled_background(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The image with `box` (x0, y0, x1, y1) filled by tiles of the largest strip of the image beside it
    (above, below, left or right of the box): Xiao et al.'s only_bg_t. All black when the box is the image."""
    out = image.copy()
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    strips = {"above": (y0 * w, image[:y0, :]), "below": ((h - y1) * w, image[y1:, :]),
              "left": (x0 * h, image[:, :x0]), "right": ((w - x1) * h, image[:, x1:])}
    side, (area, strip) = max(strips.items(), key=lambda kv: kv[1][0])
    if area == 0:
        out[y0:y1, x0:x1] = 0
        return out
    if side in ("above", "below"):
        reps = -(-(y1 - y0) // strip.shape[0])
        out[y0:y1, x0:x1] = np.concatenate([strip] * reps, axis=0)[:y1 - y0, x0:x1]
    else:
        reps = -(-(x1 - x0) // strip.shape[1])
        out[y0:y1, x0:x1] = np.concatenate([strip] * reps, axis=1)[y0:y1, :x1 - x0]
    return out


def _compose(item: dict) -> tuple[np.ndarray, Image.Image, tuple[int, int], tuple[int, int, int, int]]:
    """(original as an array, the stamp RGBA, its corner, its bounding box in the image)."""
    canvas = gw.render_background(item)
    stamp, (x, y) = gw.render_stamp(item)
    canvas.paste(stamp, (x, y), stamp)
    bx0, by0, bx1, by1 = stamp.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox() or (0, 0, 1, 1)
    box = (max(0, x + bx0), max(0, y + by0), min(gw.IMAGE_SIZE, x + bx1), min(gw.IMAGE_SIZE, y + by1))
    return np.asarray(canvas), stamp, (x, y), box


_PLAN: list[dict] = []  # the whole plan, for partners' backgrounds (set before the fork)


def _render_in9_chunk(args: tuple[list[dict], str]) -> int:
    items, out_dir = args
    cache: dict[int, np.ndarray] = {}

    def only_bg_t(index: int) -> np.ndarray:
        if index not in cache:
            original, _, _, box = _compose(_PLAN[index])
            cache[index] = tiled_background(original, box)
        return cache[index]

    for item in items:
        original, stamp, xy, box = _compose(item)
        index = int(item["image"].split("_")[1])
        cache[index] = tiled_background(original, box)
        only_fg = Image.new("RGB", (gw.IMAGE_SIZE, gw.IMAGE_SIZE), (0, 0, 0))
        only_fg.paste(stamp, xy, stamp)
        images = {"original": Image.fromarray(original), "only_fg": only_fg,
                  "only_bg_t": Image.fromarray(cache[index])}
        for variation, partner in (("mixed_same", item["same_partner"]), ("mixed_rand", item["rand_partner"])):
            canvas = Image.fromarray(only_bg_t(partner))
            canvas.paste(stamp, xy, stamp)
            images[variation] = canvas
        for variation, im in images.items():
            im.save(Path(out_dir) / variation / "val" / in9_folder(item["label"]) / f"{item['image']}.JPEG",
                    "JPEG", quality=gw.JPEG_QUALITY)
    return len(items)


def build_imagenet9_mini(out_dir: str | Path = IMAGENET9_MINI, seed: int = 0, force: bool = False, *,
                         n_per_class: int = 50, workers: int | None = None,
                         stamps_dir: str | Path = gw.STAMPS_DIR, scenes_dir: str | Path = paths.SCENE_PHOTOS,
                         verbose: bool = True) -> Path:
    """Build the mini Backgrounds Challenge into `out_dir` (five variations of 9 x n_per_class images) and
    return it; a no-op when it is already built with the same seed, settings and version (unless `force`)."""
    out_dir, scenes_dir = Path(out_dir), Path(scenes_dir)
    if n_per_class < 2:
        raise ValueError(f"n_per_class must be at least 2 (mixed_same needs another image of the class); "
                         f"got {n_per_class}")
    settings = ImageNet9Settings(seed, n_per_class)
    as_dict = json.loads(json.dumps(asdict(settings)))
    if not force and gw.is_current(out_dir, IMAGENET9_VERSION, as_dict):
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "world.json").exists():
        raise StampWorldError(f"{out_dir} exists and is not a mini ImageNet-9; pick an empty or new folder")
    scene_names = sorted({s for names in IN9_SCENES.values() for s in names})
    missing = [gw.SCENES[n].file for n in scene_names if not (scenes_dir / gw.SCENES[n].file).exists()]
    if missing:
        raise StampWorldError(f"{len(missing)} scene photos are missing from {scenes_dir} (e.g. {missing[0]}); "
                              "run `make setup` (or `texplain setup`)")
    t0 = time.time()
    stamps = in9_stamps(stamps_dir)
    plan = _plan_in9(settings, stamps, gw.scene_sizes(scenes_dir, scene_names))

    with building(out_dir) as tmp:
        for variation in VARIATIONS:
            for label in range(len(IN9_CLASSES)):
                (tmp / variation / "val" / in9_folder(label)).mkdir(parents=True)
        gw.load_sources(scenes_dir, scene_names, {s.key: s.path for ss in stamps.values() for s in ss})
        _PLAN[:] = plan
        try:
            run_jobs(_render_in9_chunk, plan, tmp, workers)
        finally:
            gw.clear_sources()
            _PLAN.clear()
        _write_in9_tables(plan, stamps, tmp, as_dict)
    if verbose:
        print(f"[imagenet9] {len(plan)} images x {len(VARIATIONS)} variations in {time.time() - t0:.1f} s -> {out_dir}",
              flush=True)
    return out_dir


def _write_in9_tables(plan: list[dict], stamps: dict[str, list[gw.Stamp]], out_dir: Path, settings: dict) -> None:
    # Not named metadata.csv: open_dataset would then read the folder as a metadata table, not as variations.
    frame = pd.DataFrame([{
        "image": it["image"], "label": it["label"], "class_name": IN9_CLASSES[it["label"]], "stamp": it["stamp"],
        "scene": it["scene"], "crop": " ".join(map(str, it["crop"])),
        "mixed_same_background": plan[it["same_partner"]]["image"],
        "mixed_rand_background": plan[it["rand_partner"]]["image"],
        "mixed_rand_background_class": IN9_CLASSES[plan[it["rand_partner"]]["label"]],
    } for it in plan])
    frame.to_csv(out_dir / "in9_plan.csv", index=False)
    world = {
        "version": IMAGENET9_VERSION, "seed": settings["seed"], "settings": settings,
        "variations": list(VARIATIONS), "classes": [in9_folder(i) for i in range(len(IN9_CLASSES))],
        "images_per_variation": len(plan),
        "stamps": {name: [s.key for s in stamps[name]] for name in IN9_CLASSES},
        "scenes": {name: list(IN9_SCENES[name]) for name in IN9_CLASSES},
        "imagenet_ranges": {name: [list(r) for r in IN9_RANGES[name]] for name in IN9_CLASSES},
        "made_like": "Xiao et al. 2020 (arXiv 2006.09994): only_bg_t tiles the foreground's box with the rest of "
                     "the image; mixed_* paste the foreground at its place on another image's only_bg_t",
    }
    (out_dir / "world.json").write_text(json.dumps(world, indent=1) + "\n", encoding="utf-8")


def in9_classifier(base=None, restrict: bool = False):
    """An ImageNet classifier read as ImageNet-9 (default: the unmodified EfficientNet-Lite0): the nine
    classes plus "none of the nine", so its prediction is its top-1 mapped as Xiao et al. do (`restrict`:
    the best of the nine only). Features are the base's: a translator for the base explains it."""
    from core.models.classifier import ClassifierLoadError, load_classifier
    from core.models.superclass import SuperclassClassifier

    base = load_classifier(base or "efficientnet-lite0")
    if len(base.class_names) != 1000:
        raise ClassifierLoadError(f"ImageNet-9 reads a 1000-class ImageNet classifier; {base.name!r} has "
                                  f"{len(base.class_names)} classes")
    return SuperclassClassifier(base, in9_superclasses(), other=None if restrict else "none of the nine",
                                name=f"{base.name} (ImageNet-9{', restricted' if restrict else ''})")


def object_masks(out_dir: str | Path = IMAGENET9_MINI, stamps_dir: str | Path = gw.STAMPS_DIR) -> Path:
    """Where the object is in every image of a built mini ImageNet-9: masks/<image>.png (255 on the stamp),
    re-placed from the world's own plan (its settings and seed), without touching the images. One mask serves
    every variation (only_bg_t has no object: the mask says where it was)."""
    out_dir = Path(out_dir)
    masks = out_dir / "masks"
    if (masks / ".done").exists():
        return masks
    world = json.loads((out_dir / "world.json").read_text())
    settings = ImageNet9Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in world["settings"].items()})
    stamps = in9_stamps(stamps_dir)
    scene_names = sorted({s for names in IN9_SCENES.values() for s in names})
    plan = _plan_in9(settings, stamps, gw.scene_sizes(paths.SCENE_PHOTOS, scene_names))
    masks.mkdir(exist_ok=True)
    gw.load_sources(paths.SCENE_PHOTOS, [], {s.key: s.path for ss in stamps.values() for s in ss})
    try:
        for item in plan:
            stamp, xy = gw.render_stamp(item)
            mask = Image.new("L", (gw.IMAGE_SIZE, gw.IMAGE_SIZE), 0)
            # The threshold _compose uses for the object's box.
            mask.paste(stamp.getchannel("A").point(lambda a: 255 if a > 8 else 0), xy)
            mask.save(masks / f"{item['image']}.png")
    finally:
        gw.clear_sources()
    (masks / ".done").write_text(f"{len(plan)}\n")
    return masks
