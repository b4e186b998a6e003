"""Where in the image a word comes from: the part of the classifier's features that makes the LM say it.

For an image and a word of its sentences, the word's log-probability is summed over every occurrence in the
image's sampled sentences, teacher-forced (the sentences stay as sampled: nothing new is drawn), and
differentiated with respect to the classifier's last spatial feature map A (K, h, w), whose spatial mean is
the feature vector z the translator reads. Combined as Grad-CAM combines a class score's gradient:

    map = ReLU( sum_k mean_hw(d logp(word) / dA_k) * A_k )          (h, w), upsampled to the input

A classifier with no spatial map (a ViT's class token, a scripted model) gets occlusion instead, and any classifier
may ask for it: a square window (by default 1/7 of the input's side, a cell of a 7 x 7 feature map) is moved over the
input (by default a whole cell: 49 places), its pixels replaced by the preprocessing's mean (or a strong blur of the
image), and each stride-sized cell's value is the mean drop of the word's log-probability over the windows that hid
it, upsampled as a feature map is. Larger, overlapping, blurred windows were measured and point worse at small
objects (docs/experiments/notebook.md). Occlusion(mode="insert") turns it round: the whole input filled, one
window shown, the rise of the word's log-probability; "both" adds deletion's drop and insertion's rise. On the
Waterbirds birds both point worse than deletion (45% and 55% of bird words on the bird, against 78%).

    wm = word_map(image, "lake", classifier, translator, lm, sentences=run_sentences)
    wm.heatmap  # (H, W) in [0, 1], at the classifier's input crop
"""
from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from core.models.gradcam import forward_hooks, no_param_grads


@dataclass
class WordMap:
    word: str
    heatmap: np.ndarray  # (H, W) float32 in [0, 1], over the classifier's input crop
    method: str          # "gradient" or "occlusion"
    log_prob: float      # the word's summed log-probability over its occurrences
    occurrences: int     # tokens of the word scored, over all sentences
    sentences: int       # sentences that use the word
    occlusion: dict | None = None  # how an occlusion map hid the input (Occlusion's fields); None for a gradient map

    @property
    def flat(self) -> bool:
        """No part of the image makes the word any likelier (occlusion: hiding any patch leaves it as likely or
        likelier; gradient: no positive evidence): the map points nowhere."""
        return not float(self.heatmap.max()) > float(self.heatmap.min())

    def peak(self) -> tuple[int, int] | None:
        """(row, column) of the map's maximum, at the input crop's resolution; None for a flat map."""
        if self.flat:
            return None
        return tuple(int(i) for i in np.unravel_index(int(np.argmax(self.heatmap)), self.heatmap.shape))

    def top_share(self, share: float = 0.2) -> np.ndarray:
        """A boolean mask of the map's `share` highest pixels (ties broken by position): the word's region."""
        return top_share(self.heatmap, share)


def top_share(heat: np.ndarray, share: float) -> np.ndarray:
    """A boolean mask of `heat`'s `share` highest pixels (at least one; ties broken by position)."""
    k = max(1, int(round(share * heat.size)))
    keep = np.zeros(heat.size, dtype=bool)
    keep[np.argsort(-heat.ravel(), kind="stable")[:k]] = True
    return keep.reshape(heat.shape)


def to_crop(heat: torch.Tensor, size) -> np.ndarray:
    """A coarse map (h, w) upsampled (bilinear) to `size` (H, W), the input crop, and scaled to [0, 1] (float32;
    all zeros where it is flat)."""
    heat = F.interpolate(heat[None, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
    heat = (heat - heat.min()).cpu()
    return (heat / heat.max() if heat.max() > 0 else heat).numpy().astype(np.float32)


_WORD = re.compile(r"\w+")


def word_spans(sentence: str, word: str, extractor) -> list[tuple[int, int]]:
    """Character spans of the tokens of `sentence` whose lemma (the extractor's) is `word`."""
    spans = []
    for m in _WORD.finditer(sentence):
        lemmas = extractor.words(m.group(0))
        if lemmas and lemmas[0] == word:
            spans.append(m.span())
    return spans


def token_targets(lm, sentences: Sequence[str], word: str, extractor):
    """Token ids (N, T), attention mask (N, T) and a mask (N, T) of the tokens inside the word's spans."""
    tok = lm.tokenizer
    rows, targets = [], []
    for s in sentences:
        spans = word_spans(s, word, extractor)
        if not spans:
            continue
        enc = tok(s, add_special_tokens=False, return_offsets_mapping=True)
        hit = [any(a < e and b > st for st, e in spans) for a, b in enc["offset_mapping"]]
        if any(hit):
            # A causal LM's scores up to the word's last token do not depend on what follows: cut it off.
            end = max(i for i, h in enumerate(hit) if h) + 1
            rows.append(enc["input_ids"][:end])
            targets.append(hit[:end])
    if not rows:
        return None
    T = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else lm.eos_token_id
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    attn = torch.zeros((len(rows), T), dtype=torch.bool)
    hit = torch.zeros((len(rows), T), dtype=torch.bool)
    for i, (r, h) in enumerate(zip(rows, targets)):
        ids[i, :len(r)], attn[i, :len(r)], hit[i, :len(h)] = torch.tensor(r), True, torch.tensor(h)
    return ids, attn, hit


def word_log_prob(translator, lm, z: torch.Tensor, ids: torch.Tensor, attn: torch.Tensor,
                  hit: torch.Tensor) -> torch.Tensor:
    """The summed log-probability of the `hit` tokens of the sentences `ids`, each after the prefix T(z);
    z: (1, D), shared by every sentence, gives a scalar (differentiable with respect to z); z: (B, D) gives
    (B,), one sum per feature vector, scored in one batch."""
    prefix = translator(z.float()).to(lm.model.get_input_embeddings().weight.dtype)  # (B, k, d)
    ids, attn, hit = ids.to(lm.device), attn.to(lm.device), hit.to(lm.device)
    lengths = attn.sum(1)
    # Sentences are cut after the word, so their lengths differ: short and long ones are fed apart, each group padded
    # to its own longest, when that saves more tokens than the group's own prefix costs.
    groups = [torch.arange(len(ids), device=lm.device)]
    order = torch.argsort(lengths, stable=True)
    n, ls = len(order), lengths[order].tolist()
    if n > 1:
        cost, i = min((i * ls[i - 1] + (n - i) * ls[-1], i) for i in range(1, n))
        if n * ls[-1] - cost > prefix.shape[1]:
            groups = [order[:i], order[i:]]
    sums = 0
    for rows in groups:
        T = int(lengths[rows].max())
        sums = sums + _rows_log_prob(lm, prefix, ids[rows, :T], attn[rows, :T], hit[rows, :T])
    return sums[0] if len(z) == 1 else sums


def _rows_log_prob(lm, prefix, ids, attn, hit):
    (B, k, _), (N, T) = prefix.shape, ids.shape
    # The N sentences of a feature vector share its prefix: it runs once, and its cache is repeated for them (an
    # occlusion map scores about 3 times fewer tokens). Token t is predicted at the position before it: the
    # prefix's last for t = 0.
    first = lm.model(inputs_embeds=prefix, use_cache=True, logits_to_keep=1)
    sums = (torch.log_softmax(first.logits[:, -1].float(), -1)[:, ids[:, 0]] * hit[:, 0]).sum(1)  # (B,)
    # Only the positions that predict a word's token get logits (a word is 1 to 3 tokens of about 15).
    keep = hit[:, 1:].any(0).nonzero().reshape(-1)
    if len(keep):
        cache = first.past_key_values
        cache.batch_repeat_interleave(N)
        mask = torch.cat([torch.ones(B * N, k, dtype=torch.long, device=lm.device),
                          attn[:, :T - 1].long().repeat(B, 1)], 1)
        logits = lm.model(inputs_embeds=lm.embed(ids[:, :T - 1]).repeat(B, 1, 1), attention_mask=mask,
                          past_key_values=cache, logits_to_keep=keep).logits  # (B*N, len(keep), V)
        logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, keep + 1].repeat(B, 1)[..., None])[..., 0]
        sums = sums + (logp * hit[:, keep + 1].repeat(B, 1)).reshape(B, -1).sum(1)
    return sums


def spatial_layer(classifier):
    """The module whose 4-D output (1, K, h, w), averaged over h and w, is the classifier's feature vector z
    (the last such in the forward pass), found on a probe image; None when there is none."""
    net = getattr(classifier, "module", None)
    if net is None or getattr(classifier, "feature_layer", None) is not None:
        return None
    p = next(classifier.parameters())
    crop = classifier.preprocessing.crop
    x = torch.randn(1, 3, crop, crop, generator=torch.Generator().manual_seed(0)).to(p.device, p.dtype)
    seen = []

    def see(mod, args, out):
        if isinstance(out, torch.Tensor) and out.ndim == 4:
            seen.append((mod, out))

    with forward_hooks(*((m, see) for m in net.modules() if m is not net)), torch.no_grad():
        z, _ = classifier.features_and_logits(x)
    for mod, out in reversed(seen):  # the last map of more than one position (a pooling's 1x1 is not a map)
        if out.shape[1] == z.shape[1] and out.shape[2] * out.shape[3] > 1 \
                and torch.allclose(out.float().mean((2, 3)), z.float(), atol=1e-4, rtol=1e-3):
            return mod
    return None


def _sentences_for(image, classifier, translator, lm, sentences, image_id, cfg):
    if sentences is not None:
        return list(sentences)
    from core.engine.explainer import Explainer

    return Explainer(classifier, translator, lm, cfg).explain([image], [image_id or 0])[0].sentences


def word_map(image, word: str, classifier, translator, lm, sentences: Sequence[str] | None = None,
             image_id=None, cfg=None, extractor=None, method: str = "auto",
             occlusion: Occlusion | None = None, rows_per_batch: int = 256) -> WordMap:
    """The map of `word` over `image` (see the module docstring). `sentences`: the image's sampled sentences (a
    run's, so the map explains what the run says); None samples them (`cfg`, `image_id` fix the stream).
    `method`: "gradient" (needs a spatial feature map), "occlusion", or "auto" (gradient where it can);
    `occlusion`: its window, stride and fill (default Occlusion()); occluded inputs are scored `rows_per_batch`
    sentences at a time (one forward per window is several times slower on a CPU, where most of a map is the LM)."""
    if extractor is None:
        from core.engine.words import WordExtractor

        extractor = WordExtractor()
    word = word.strip().lower()
    sents = _sentences_for(image, classifier, translator, lm, sentences, image_id, cfg)
    targets = token_targets(lm, sents, word, extractor)
    if targets is None:
        top = sorted(extractor.count(sents).items(), key=lambda kv: -kv[1][1])[:8]
        raise ValueError(f"the word {word!r} is in none of the image's {len(sents)} sentences, so it comes from "
                         f"nowhere in the image; its words are {', '.join(w for w, _ in top) or 'none'}")
    ids, attn, hit = targets
    layer = spatial_layer(classifier) if method in ("auto", "gradient") else None
    if method == "gradient" and layer is None:
        raise ValueError(f"{classifier.name} has no spatial feature map to differentiate; use method='occlusion'")
    x = classifier.preprocess(image)[None].to(next(classifier.parameters()).device)
    x = x.to(next(classifier.parameters()).dtype)
    if layer is not None:
        heat, total = _gradient_map(classifier, translator, lm, layer, x, ids, attn, hit)
        how = "gradient"
    else:
        with torch.inference_mode():
            total = word_log_prob(translator, lm, classifier.features_and_logits(x)[0], ids, attn, hit).item()
        score = functools.partial(_word_scores, classifier, translator, lm, ids=ids, attn=attn, hit=hit)
        heat = occlusion_map(x[0], score, total, occlusion or Occlusion(), rows_per_batch // len(ids)).clamp_min(0)
        how = "occlusion"
    return WordMap(word, to_crop(heat, x.shape[-2:]), how, float(total), int(hit.sum()), len(ids),
                   asdict(occlusion or Occlusion()) if how == "occlusion" else None)


def _gradient_map(classifier, translator, lm, layer, x, ids, attn, hit):
    captured = {}

    def hook(module, args, out):
        out = out.detach().requires_grad_(True)
        captured["a"] = out
        return out

    with forward_hooks((layer, hook)), no_param_grads(classifier), no_param_grads(translator), \
            no_param_grads(lm.model), torch.enable_grad():
        z, _ = classifier.features_and_logits(x)
        total = word_log_prob(translator, lm, z, ids, attn, hit)
        grad, = torch.autograd.grad(total, captured["a"])
    a = captured["a"].detach()[0].float()  # (K, h, w)
    weights = grad[0].float().mean((1, 2))  # (K,)
    return F.relu((weights[:, None, None] * a).sum(0)).cpu(), total.item()


MODES = ("delete", "insert", "both")


@dataclass(frozen=True)
class Occlusion:
    """How an occlusion map hides the input: a square `window` (a share of the input's side) moved by `stride` (a
    share too), its pixels filled by "blur" (a strong Gaussian blur of the image: the object melts into what is
    around it) or "mean" (the preprocessing's mean colour: a grey square). `mode`: "delete" hides one window of the
    image and scores the drop; "insert" fills the whole image and shows one window of it, scoring the rise over the
    filled image (a small object that the rest of the scene also implies, hidden alone, barely moves the word; shown
    alone, it does); "both" adds the two (twice the forwards)."""
    window: float = 1 / 7
    stride: float = 1 / 7
    fill: str = "mean"
    mode: str = "delete"

    def __post_init__(self):
        if not (0 < self.window <= 1 and 0 < self.stride <= 1):
            raise ValueError(f"occlusion window and stride are shares of the input side in (0, 1], got "
                             f"{self.window} and {self.stride}")
        if self.fill not in ("blur", "mean"):
            raise ValueError(f"occlusion fill must be 'blur' or 'mean', got {self.fill!r}")
        if self.mode not in MODES:
            raise ValueError(f"occlusion mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    @classmethod
    def read(cls, settings) -> Occlusion | None:
        """The Occlusion a stored map's settings (asdict of one) name; older ones, without a mode, deleted; None for
        settings that name none."""
        try:
            return cls(**settings)
        except (TypeError, ValueError):
            return None

    @classmethod
    def is_current(cls, settings) -> bool:
        """Whether a stored map's settings are how occlusion maps are drawn now (an older window, fill or mode, or
        settings that name none, are not: such maps are redrawn)."""
        return cls.read(settings) == cls()

    def pixels(self, size) -> tuple[int, int]:
        """The window's side and the stride, in pixels of an input of `size` (H, W)."""
        return max(1, round(self.window * min(size))), max(1, round(self.stride * min(size)))

    def boxes(self, size) -> tuple[int, list[tuple[int, int]]]:
        """The window's side in pixels and the (top, left) of each of its places over an input of `size` (H, W):
        every `stride`, the last flush with the far edge."""
        H, W = size
        side, step = self.pixels(size)

        def starts(n):
            return sorted(set(range(0, n - side + 1, step)) | {n - side})

        return side, [(i, j) for i in starts(H) for j in starts(W)]

    def filler(self, x: torch.Tensor) -> torch.Tensor:
        """What hidden pixels of x (3, H, W), preprocessed, become."""
        if self.fill == "mean":
            return torch.zeros_like(x)  # 0 after normalisation is the preprocessing's mean colour
        return blurred(x)


def blurred(x: torch.Tensor) -> torch.Tensor:
    """x (3, H, W), preprocessed, under a strong Gaussian blur (σ 10 px): objects melt into what surrounds them."""
    from torchvision.transforms.functional import gaussian_blur

    return gaussian_blur(x[None].float(), kernel_size=[31, 31], sigma=[10.0, 10.0])[0].to(x.dtype)


def occluded(x: torch.Tensor, places, side: int, fill: torch.Tensor) -> torch.Tensor:
    """One copy of x (3, H, W) per (top, left) of `places`, with that `side` x `side` square taken from `fill`."""
    xo = x[None].repeat(len(places), 1, 1, 1)
    for n, (i, j) in enumerate(places):
        xo[n, :, i:i + side, j:j + side] = fill[:, i:i + side, j:j + side]
    return xo


@torch.inference_mode()
def occlusion_map(x: torch.Tensor, score, base: float, occlusion: Occlusion, per_batch: int = 64) -> torch.Tensor:
    """(h, w), one value per stride-sized cell of x (3, H, W, preprocessed): the mean evidence of the windows over
    the cell, where a window's evidence is, by `occlusion.mode`, the drop of `score` (a batch of inputs -> one score
    each) from `base` (the score of x) when the window is hidden, the rise over the fully filled image's score when
    only the window is shown, or their sum (negative where hiding the cell made the score likelier). Coarse, like a
    feature map, so that to_crop upsamples it alike: a peak at a cell's centre, not its corner (the default grid
    gives the 7 x 7 map of one window per cell)."""
    side, places = occlusion.boxes(x.shape[-2:])
    fill, per_batch = occlusion.filler(x), max(1, per_batch)

    def scores(img, patch):  # the score of img with each window taken from patch
        return torch.cat([score(occluded(img, places[c:c + per_batch], side, patch)).reshape(-1).float().cpu()
                          for c in range(0, len(places), per_batch)])

    drops = torch.zeros(len(places))
    if occlusion.mode in ("delete", "both"):
        drops += base - scores(x, fill)
    if occlusion.mode in ("insert", "both"):
        drops += scores(fill, x) - score(fill[None]).reshape(-1).float().cpu()
    total, count = torch.zeros(x.shape[-2:]), torch.zeros(x.shape[-2:])
    for d, (i, j) in zip(drops.tolist(), places):
        total[i:i + side, j:j + side] += d
        count[i:i + side, j:j + side] += 1
    step = occlusion.pixels(x.shape[-2:])[1]
    cells = tuple(-(-n // step) for n in x.shape[-2:])
    return F.adaptive_avg_pool2d((total / count)[None, None], cells)[0, 0]


def _word_scores(classifier, translator, lm, xs, ids, attn, hit):
    return word_log_prob(translator, lm, classifier.features_and_logits(xs)[0], ids, attn, hit)


def class_map(image, classifier, class_index: int | None = None) -> np.ndarray | None:
    """Grad-CAM of `class_index` (None: the predicted class) over the classifier's input crop, (H, W) in [0, 1], at
    the same layer a word map differentiates; None when the classifier has no spatial feature map. `image`: a PIL
    image, or a preprocessed (3, H, W) tensor."""
    from core.models.gradcam import gradcam

    layer = spatial_layer(getattr(classifier, "base", classifier))
    if layer is None:
        return None

    class Logits(torch.nn.Module):  # the classifier's own logits (a wrapper's classes too), for gradcam
        def __init__(self, clf):
            super().__init__()
            self.clf = clf

        def forward(self, x):
            return self.clf.features_and_logits(x)[1]

    p = next(classifier.parameters())
    x = (image if isinstance(image, torch.Tensor) else classifier.preprocess(image))[None].to(p.device, p.dtype)
    # gradcam puts the wrapper back in the mode it found, a new module's training mode, and with it every module of
    # the classifier: put each back as it was, or a cached classifier's batch norms learn from every later image.
    modes = [(m, m.training) for m in classifier.modules()]
    try:
        cams, _ = gradcam(Logits(classifier), layer, x, class_index)  # (1, h, w)
    finally:
        for m, training in modes:
            m.training = training
    return to_crop(cams[0], x.shape[-2:])
