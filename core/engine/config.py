"""Every knob of the engine in one place: explaining, training a translator, fine-tuning a classifier.

Plain dataclasses with no torch import, so the command line reads its options' defaults from here
without loading a model (`texplain explain --help` stays instant) and a run's manifest records them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

ProgressFn = Callable[[int, int, dict], None]  # (images done, images in all, details) after each shard


@dataclass
class ExplainConfig:
    # N samples per image, or "auto": sample in rounds and stop each image once its words have settled
    # (core.engine.adaptive: min_sentences, then round_sentences more at a time, up to max_sentences)
    sentences_per_image: int | str = 32
    min_sentences: int = 8  # auto: the first round, what every image gets
    max_sentences: int = 32  # auto: the most an image gets
    round_sentences: int = 4  # auto: sentences added per later round
    # auto: the stopping rule's tolerance on word shares (core.engine.adaptive.RULE); 0.125 stops every image by
    # 20 sentences, most at 12-16 (bench.bench_adaptive)
    tolerance: float = 0.125
    top_p: float = 0.9  # nucleus sampling: varied but grammatical sentences
    temperature: float = 0.9
    max_new_tokens: int = 20  # captions are one short sentence
    # sequences per sampler call (images x samples); None: 512 on CPU, what free GPU memory holds on CUDA
    batch_rows: int | None = None
    shard_size: int = 64  # images per store shard: the unit of resumption only, never the sampler's batch
    keep_sentences: int | None = None  # sentences stored per image (None = all: sentence-level stats can be redone)
    image_batch: int | None = None  # images per classifier forward pass; None: 32 on CPU, 256 on CUDA
    num_workers: int | None = None  # image-decoding processes; None: 0 on CPU (no gain on 2 cores), up to 8 on CUDA
    nucleus: str = "auto"  # "tiers" (top-k tiers, CPU default), "pivot" (threshold search, CUDA default): same choices
    # "dynamic" (grown by concatenation, CPU default) or "preallocated" (CUDA default): same numbers
    kv_cache: str = "auto"
    seed: int = 0
    # Where the translator has a scene gate (core.models.gate), draw again the sentences that name a scene kind the
    # classifier's features rule out; no effect on a translator without one
    scene_gate: bool = True
    device: str = "auto"
    dtype: str | None = None  # None: bf16 on CUDA, float32 on CPU

    def __post_init__(self):
        spi = self.sentences_per_image
        bad = f"sentences_per_image must be a number >= 1 or 'auto', got {spi!r}"
        if isinstance(spi, str):  # "auto", or a number read from a manifest or a form
            if spi.strip().lower() != "auto" and not spi.strip().isdigit():
                raise ValueError(bad)
            self.sentences_per_image = "auto" if spi.strip().lower() == "auto" else int(spi)
        elif isinstance(spi, bool) or not isinstance(spi, int):
            raise ValueError(bad)
        for name in ("sentences_per_image", "max_new_tokens", "shard_size", "min_sentences", "max_sentences",
                     "round_sentences"):
            if name == "sentences_per_image" and self.adaptive:
                continue
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_sentences > self.max_sentences:
            raise ValueError(f"min_sentences ({self.min_sentences}) must be <= max_sentences ({self.max_sentences})")
        if not self.tolerance > 0:
            raise ValueError(f"tolerance must be > 0 (a share, e.g. 0.1), got {self.tolerance}")
        for name in ("batch_rows", "image_batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or None for the device's default), got {getattr(self, name)}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (or None for the device's default), got {self.num_workers}")
        if self.nucleus not in ("auto", "tiers", "pivot"):
            raise ValueError(f"nucleus must be 'auto', 'tiers' or 'pivot', got {self.nucleus!r}")
        if self.kv_cache not in ("auto", "dynamic", "preallocated"):
            raise ValueError(f"kv_cache must be 'auto', 'dynamic' or 'preallocated', got {self.kv_cache!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @property
    def adaptive(self) -> bool:
        """Whether each image gets as many sentences as its words need (sentences_per_image="auto")."""
        return self.sentences_per_image == "auto"

    @property
    def first_round(self) -> int:
        """Sentences every image gets in its first sampler call: N, or min_sentences with auto."""
        return self.min_sentences if self.adaptive else self.sentences_per_image

    @property
    def most_sentences(self) -> int:
        """The most sentences one image can get: N, or max_sentences with auto."""
        return self.max_sentences if self.adaptive else self.sentences_per_image

    def sampling_settings(self) -> dict:
        """The settings that determine the output (recorded in the manifest, checked on resume)."""
        d = asdict(self)
        # scene_gate: the manifest's models record the gate itself (or None), which is what changes the output
        d.pop("scene_gate")
        for speed_only in ("device", "image_batch", "batch_rows", "num_workers", "nucleus", "kv_cache"):
            # never change the random numbers drawn, so a run may resume with other values
            d.pop(speed_only)
        if not self.adaptive:  # a fixed-N run records what it always did (and resumes runs made before auto)
            for auto_only in ("min_sentences", "max_sentences", "round_sentences", "tolerance"):
                d.pop(auto_only)
        return d


def active_gate(translator, cfg: ExplainConfig):
    """The scene gate that screens a translator's sentences under `cfg` (core.models.gate), or None."""
    return getattr(translator, "gate", None) if cfg.scene_gate else None


_MASK53 = (1 << 53) - 1


@dataclass
class TrainConfig:
    epochs: int = 6  # 6-8 worked in the prototype
    batch_size: int = 16
    lr: float = 8e-4  # a starting point for a few epochs (the demo translators: 5e-4, batch 4, 2,000 steps)
    weight_decay: float = 0.01
    warmup_steps: int = 16  # short warm-up, then cosine to zero
    grad_clip: float = 1.0
    max_caption_tokens: int = 24
    prefix_length: int = 10
    mapper: str = "mlp"
    mlp_hidden: int = 1536
    normalize_features: bool = True
    autocast_bf16: bool | None = None  # bf16 autocast; None: on for CUDA, off on CPU (slow without bf16 units)
    max_steps: int | None = None  # stop early (tests, smoke runs)
    save_every: int = 25  # steps between resumable states (also saved at each epoch's end)
    seed: int = 0
    device: str = "auto"
    # Warm start: a saved translator folder for the same classifier and LM (its weights and feature
    # statistics), e.g. a second, low learning-rate stage after a first run stopped at its best epoch.
    init_from: str | None = None
    # Loss weight of the caption tokens inside each caption's emphasised span (train_translator's
    # `train_emphasis`; 1: a plain mean). A word the translator must get right can be one token of
    # twenty: the colour in "a fox against a plain white background" weighs little in a plain mean.
    emphasis_weight: float = 1.0
    # Dropout inside the mapper while training (0: none). Templated captions are easy to memorise: the
    # general refinement ends at a training loss of 0.24 against a validation loss of 1.78.
    dropout: float = 0.0
    # Weight of the unlikelihood term (Welleck et al., 2019; train_translator's `train_unlikely`): at every caption
    # position, -log(1 - p) of each token the image must not make the LM say (a scene word of a kind it does not
    # show). 0: plain maximum likelihood. A translator trained on likelihood alone hedges: "water" in one of 16
    # sentences on half of the unseen scene photos that show none.
    unlikely_weight: float = 0.0


LITE_BLOCKS = 16  # EfficientNet-Lite0's MBConv blocks (the network FinetuneConfig fine-tunes)


@dataclass
class FinetuneConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    # EfficientNet-Lite0 has 16 MBConv blocks; those before this index stay frozen. 16 trains the 1x1 head
    # convolution (320 -> 1280 channels, i.e. the features z) and the classifier: depthwise-convolution
    # backward passes are ~20x slower than forward on CPUs, so the MBConv blocks stay frozen by default.
    train_from_block: int = 16
    sampling: str = "erm"  # "erm": plain; "group_balanced": each group drawn equally often
    select: str = "last"  # "last" epoch, or "worst_group": best validation worst-group accuracy
    flips: bool = True
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.train_from_block <= LITE_BLOCKS:
            raise ValueError(f"train_from_block must be 0..{LITE_BLOCKS} (EfficientNet-Lite0 has {LITE_BLOCKS} blocks; "
                             f"{LITE_BLOCKS} trains only the head convolution and the classifier), got "
                             f"{self.train_from_block}")
        if self.sampling not in ("erm", "group_balanced"):
            raise ValueError(f"sampling must be 'erm' or 'group_balanced', got {self.sampling!r}")
        if self.select not in ("last", "worst_group"):
            raise ValueError(f"select must be 'last' or 'worst_group', got {self.select!r}")
