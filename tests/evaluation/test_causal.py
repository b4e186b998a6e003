"""Word maps (core.engine.word_map) and the causal test of a flag (core.evaluation.causal)."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.data import load_rgb, open_dataset
from core.engine.config import ExplainConfig
from core.engine.pipeline import explain_dataset
from core.engine.word_map import Occlusion, WordMap, word_map
from core.engine.words import WordExtractor
from core.evaluation.causal import CausalResult, CausalSettings, fill_region, random_rectangle, verify_flag
from core.models.translator import Translator, TranslatorConfig


def plain_words():
    return WordExtractor(stop_words=(), lemmatize=False, vocabulary=None)  # every word counts; no WordNet


@pytest.fixture
def explained(tmp_path, tiny_lm, tiny_classifier, tiny_waterbirds):
    torch.manual_seed(0)
    tr = Translator(TranslatorConfig(feature_dim=tiny_classifier.feature_dim, hidden_size=tiny_lm.hidden_size,
                                     prefix_length=2, mlp_hidden=16, classifier_identity=tiny_classifier.identity,
                                     classifier_name="tinynet", lm_identity=tiny_lm.identity))
    run = explain_dataset(open_dataset(tiny_waterbirds), tiny_classifier, tr, tiny_lm, tmp_path / "run",
                          ExplainConfig(sentences_per_image=6, max_new_tokens=6, seed=1), extractor=plain_words(),
                          show_progress=False)
    return run, tr


def test_a_word_map_covers_the_input_and_a_missing_word_says_which_are_there(explained, tiny_classifier, tiny_lm):
    run, tr = explained
    row = run.images().iloc[0]
    sents = run.sentences([row.image_id])["text"].tolist()
    word = run.words().query("image_id == @row.image_id").sort_values("sentences").iloc[-1]["word"]
    image = load_rgb(run.image_path(row.path))
    wm = word_map(image, word, tiny_classifier, tr, tiny_lm, sentences=sents, extractor=plain_words())
    assert wm.heatmap.shape == (32, 32) and wm.method == "gradient"  # TinyNet's conv map, averaged, is z
    assert 0 <= wm.heatmap.min() and wm.heatmap.max() <= 1 and wm.occurrences >= 1
    occl = word_map(image, word, tiny_classifier, tr, tiny_lm, sentences=sents, extractor=plain_words(),
                    method="occlusion", occlusion=Occlusion(window=0.25, stride=0.125, fill="mean"))
    assert occl.method == "occlusion" and occl.heatmap.shape == (32, 32) and occl.occlusion["window"] == 0.25
    assert Occlusion(window=0.25, stride=0.125).boxes((32, 32)) == (8, [(i, j) for i in range(0, 25, 4)
                                                                       for j in range(0, 25, 4)])
    assert Occlusion().boxes((224, 224)) == (32, [(i, j) for i in range(0, 193, 32) for j in range(0, 193, 32)])
    with pytest.raises(ValueError, match="fill must be"):
        Occlusion(fill="noise")
    assert wm.top_share(0.25).sum() == 256
    # A flat map points nowhere: no peak, rather than the top-left pixel that argmax would pick.
    flat = WordMap(word, np.zeros((32, 32), np.float32), "occlusion", 0.0, 1, 1)
    assert flat.flat and flat.peak() is None and not wm.flat and wm.peak() is not None
    with pytest.raises(ValueError, match="in none of the image's 6 sentences"):
        word_map(image, "zeppelin", tiny_classifier, tr, tiny_lm, sentences=sents, extractor=plain_words())


def test_an_occlusion_map_has_one_value_per_cell_and_peaks_at_the_cells_centre():
    # A score that reads one 32 px cell only: hiding that cell is the whole drop, hiding any other costs nothing.
    from core.engine.word_map import occlusion_map, to_crop

    x = torch.ones(3, 224, 224)

    def score(xs):
        return xs[:, 0, 64:96, 96:128].mean((1, 2))

    grid = occlusion_map(x, score, 1.0, Occlusion())
    expected = torch.zeros(7, 7)
    expected[2, 3] = 1.0
    assert torch.allclose(grid, expected)
    # Upsampled like a feature map, the peak is inside the cell, away from its top-left corner (64, 96).
    row, col = np.unravel_index(int(np.argmax(to_crop(grid, (224, 224)))), (224, 224))
    assert 64 + 8 <= row < 96 - 8 and 96 + 8 <= col < 128 - 8
    # Overlapping windows: one value per stride cell, highest where the windows that hid the cell cover it.
    fine = occlusion_map(x, score, 1.0, Occlusion(window=2 / 7, stride=1 / 14, fill="mean"))
    assert fine.shape == (14, 14) and fine[4:6, 6:8].min() > fine.max() / 2 and fine[0, 0] == 0


def test_an_insertion_map_scores_a_window_shown_alone_and_both_adds_the_two():
    # A score that needs two cells together (a small object the rest of the scene also implies): hiding either
    # halves it, so deletion sees each; showing one alone on the filled image raises it by half, insertion too.
    # A third cell that adds only with the first in view: deletion sees it, insertion, with the first hidden, not.
    from core.engine.word_map import occlusion_map

    x = torch.ones(3, 224, 224)

    def score(xs):
        a, b, c = xs[:, 0, 0:32, 0:32].mean((1, 2)), xs[:, 0, 192:, 192:].mean((1, 2)), xs[:, 0, 96:128, 96:128]
        return (a + b) / 2 + a * c.mean((1, 2))

    base = float(score(x[None]))
    delete = occlusion_map(x, score, base, Occlusion(mode="delete"))
    insert = occlusion_map(x, score, base, Occlusion(mode="insert"))
    both = occlusion_map(x, score, base, Occlusion(mode="both"))
    assert delete[0, 0] == 1.5 and delete[6, 6] == 0.5 and delete[3, 3] == 1.0
    assert insert[0, 0] == 0.5 and insert[6, 6] == 0.5 and insert[3, 3] == 0.0
    assert torch.allclose(both, delete + insert) and insert.sum() == 1.0
    with pytest.raises(ValueError, match="mode must be one of delete, insert, both"):
        Occlusion(mode="reveal")
    # Stored settings name their Occlusion; older ones, without a mode, deleted; nonsense names none.
    assert Occlusion.read({"window": 1 / 7, "stride": 1 / 7, "fill": "mean"}) == Occlusion()
    assert Occlusion.read({"window": 1 / 7, "stride": 1 / 7, "fill": "mean", "mode": "insert"}) != Occlusion()
    assert Occlusion.read(None) is None and Occlusion.read({"window": 2}) is None
    # ... and only today's settings are current: anything else is redrawn.
    assert Occlusion.is_current({"window": 1 / 7, "stride": 1 / 7, "fill": "mean"})
    assert not Occlusion.is_current({"window": 1 / 7, "stride": 1 / 7, "fill": "blur"})
    assert not Occlusion.is_current(None) and not Occlusion.is_current({"window": 2})


def test_batched_scores_match_one_at_a_time_and_cut_sentences_score_as_whole_ones(explained, tiny_classifier,
                                                                                 tiny_lm):
    # Occlusion scores all patches in batches and drops what follows a word's last token; neither may change
    # a score.
    from core.engine.word_map import token_targets, word_log_prob

    run, tr = explained
    row = run.images().iloc[0]
    sents = run.sentences([row.image_id])["text"].tolist()
    word = run.words().query("image_id == @row.image_id").sort_values("sentences").iloc[-1]["word"]
    ids, attn, hit = token_targets(tiny_lm, sents, word, plain_words())
    x = tiny_classifier.preprocess(load_rgb(run.image_path(row.path)))[None]
    xs = torch.cat([x, x.flip(-1), torch.zeros_like(x)])
    with torch.inference_mode():
        z, _ = tiny_classifier.features_and_logits(xs)
        together = word_log_prob(tr, tiny_lm, z, ids, attn, hit)
        alone = torch.stack([word_log_prob(tr, tiny_lm, z[i:i + 1], ids, attn, hit) for i in range(3)])
        # The same sentences, whole: tokens after the word padded on, their scores unused.
        tail = torch.full((len(ids), 3), int(ids[0, 0]))
        whole = word_log_prob(tr, tiny_lm, z[:1], torch.cat([ids, tail], 1),
                              torch.cat([attn, torch.ones_like(tail, dtype=torch.bool)], 1),
                              torch.cat([hit, torch.zeros_like(tail, dtype=torch.bool)], 1))
    assert together.shape == (3,) and alone.shape == (3,)
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(whole, alone[0], atol=1e-4, rtol=1e-4)
    # The shared-prefix cache, the logits kept only where a word's token is predicted and short and long sentences
    # fed apart change no score: each sentence fed after its own copy of the prefix, every position scored.
    rows = [(ids[r, :n], hit[r, :n]) for r, n in enumerate(attn.sum(1).tolist())]
    rows += [(torch.cat([r, ids[0, :1].repeat(6)]), torch.cat([h, torch.zeros(6, dtype=torch.bool)])) for r, h in rows]
    width = max(len(r) for r, _ in rows)  # each sentence also 6 tokens longer: right-padded rows of two lengths
    mixed = (torch.stack([F.pad(r, (0, width - len(r))) for r, _ in rows]),
             torch.stack([torch.arange(width) < len(r) for r, _ in rows]),
             torch.stack([F.pad(h, (0, width - len(h))) for _, h in rows]))
    with torch.inference_mode():
        prefix = tr(z.float()).to(tiny_lm.model.dtype)
        k = prefix.shape[1]
        for rows_ids, rows_attn, rows_hit in ((ids, attn, hit), mixed):
            fast = word_log_prob(tr, tiny_lm, z, rows_ids, rows_attn, rows_hit)
            for i in range(3):
                x = torch.cat([prefix[i:i + 1].expand(len(rows_ids), -1, -1), tiny_lm.embed(rows_ids)], 1)
                mask = torch.cat([torch.ones(len(rows_ids), k, dtype=torch.long), rows_attn.long()], 1)
                logp = torch.log_softmax(tiny_lm.model(inputs_embeds=x, attention_mask=mask).logits.float(), -1)
                logp = logp[:, k - 1:-1].gather(-1, rows_ids[..., None])[..., 0]
                torch.testing.assert_close(fast[i], (logp * rows_hit).sum(), atol=1e-4, rtol=1e-4)
    last = attn.sum(1) - 1  # every row ends on the word: nothing after it is fed to the LM
    assert hit[torch.arange(len(hit)), last].all()


def test_maps_drawn_at_once_from_several_threads_match_those_drawn_one_by_one(explained, tiny_classifier,
                                                                              tiny_lm):
    # The dashboard's sessions share one cached classifier: a hook set for one map must not capture another's.
    from concurrent.futures import ThreadPoolExecutor

    run, tr = explained
    jobs = []
    for row in run.images().head(4).itertuples():
        sents = run.sentences([row.image_id])["text"].tolist()
        word = run.words().query("image_id == @row.image_id").sort_values("sentences").iloc[-1]["word"]
        jobs.append((load_rgb(run.image_path(row.path)), word, sents))

    def draw(job):
        image, word, sents = job
        return word_map(image, word, tiny_classifier, tr, tiny_lm, sentences=sents, extractor=plain_words()).heatmap

    flags = [p.requires_grad for p in tiny_classifier.parameters()]
    alone = [draw(j) for j in jobs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            together = list(pool.map(draw, jobs * 2))
            for a, b in zip(alone * 2, together):
                np.testing.assert_allclose(a, b, atol=1e-5)
    assert [p.requires_grad for p in tiny_classifier.parameters()] == flags  # restored as they were


def test_fills_touch_only_the_region_and_controls_match_its_area():
    x = torch.randn(3, 40, 40)
    region = np.zeros((40, 40), dtype=bool)
    region[5:15, 5:25] = True
    for fill in ("mean", "blur"):
        y = fill_region(x, region, fill)
        assert torch.equal(y[:, ~torch.from_numpy(region)], x[:, ~torch.from_numpy(region)])
        assert not torch.equal(y[:, torch.from_numpy(region)], x[:, torch.from_numpy(region)])
    rect = random_rectangle(np.random.default_rng(0), (40, 40), 200)
    assert abs(int(rect.sum()) - 200) <= 20


def _rows(changed, control):
    return [{"image_id": str(i), "changed": a, "control_changed": b, "share_before": 0.5, "share_after": 0.1,
             "share_control": 0.5} for i, (a, b) in enumerate(zip(changed, control))]


def test_a_word_whose_region_decides_is_causal_and_a_distractor_is_not():
    """A toy classifier that reads only a known patch: removing the patch flips 18 of 20 predictions, a control
    rectangle 1; removing a distractor's region flips as many as the control does."""
    patch = CausalResult("landbird", "lake", {}, _rows([True] * 18 + [False] * 2, [False] * 19 + [True]))
    s = patch.summary()
    assert patch.verdict == "causal" and s["prediction_changed"]["rate"] == 0.9 and s["ratio_to_control"] == 18
    assert s["difference"]["low"] > 0 and s["word_share_change"]["gap"] == pytest.approx(-0.4)
    distractor = CausalResult("landbird", "sky", {}, _rows([True, False] * 10, [False, True] * 10))
    assert distractor.verdict == "correlational only"
    assert CausalResult("landbird", "lake", {}, _rows([True] * 3, [False] * 3)).verdict == "too few images"


def toy_classifier(net: torch.nn.Module, name: str):
    """A landbird/waterbird classifier of 32 px images around a toy network."""
    from core.models.classifier import Preprocessing, from_module

    return from_module(net, ["landbird", "waterbird"], preprocessing=Preprocessing(resize=32, crop=32), name=name)


def toy_run(clf, feature_dim: int, tiny_lm, data, out):
    """The toy classifier's run over a tiny Waterbirds folder, with a random translator: (run, translator)."""
    tr = Translator(TranslatorConfig(feature_dim=feature_dim, hidden_size=tiny_lm.hidden_size, prefix_length=2,
                                     mlp_hidden=8, classifier_identity=clf.identity, classifier_name=clf.name,
                                     lm_identity=tiny_lm.identity))
    run = explain_dataset(open_dataset(data), clf, tr, tiny_lm, out,
                          ExplainConfig(sentences_per_image=3, max_new_tokens=4, seed=1), extractor=plain_words(),
                          show_progress=False)
    return run, tr


def word_used_by_about_half(run, ids) -> str:
    """A word that at least 3 of the images `ids` use, but not all: the one nearest half of them."""
    words = run.words()
    counts = words[words["image_id"].isin(ids)].groupby("word")["image_id"].nunique()
    return (counts[(counts >= 3) & (counts < len(ids))] - len(ids) / 2).abs().idxmin()


class PatchFeatures(torch.nn.Module):
    def forward(self, x):  # the "bird" square's mean colour of tiny.make_waterbirds, and the image's mean
        return torch.cat([x[:, :, 10:16, 10:16].mean((2, 3)), x.mean((1, 2, 3))[:, None]], 1)


class PatchNet(torch.nn.Module):
    """Decides by the brightness of the "bird" square alone: bright is waterbird, and 0 (the mean fill) land."""

    def __init__(self):
        super().__init__()
        self.body = PatchFeatures()
        self.fc = torch.nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-10 / 3] * 3 + [0.0], [10 / 3] * 3 + [0.0]]))
            self.fc.bias.copy_(torch.tensor([5.0, -5.0]))

    def forward(self, x):
        return self.fc(self.body(x))


def test_removing_the_region_a_toy_classifier_decides_by_is_causal_and_elsewhere_is_not(tmp_path, tiny_lm):
    """The patch's region flips the toy's waterbirds; a distractor's region (the far corner) flips no more than
    random rectangles of the same area do."""
    from tests.tiny import make_waterbirds

    torch.manual_seed(0)
    clf = toy_classifier(PatchNet(), "patchnet")
    run, tr = toy_run(clf, 4, tiny_lm, make_waterbirds(tmp_path / "wb", n_per_group=3), tmp_path / "run")
    images = run.images()
    assert (images["prediction"] == images["label"]).all()  # the toy reads its patch right
    ids = set(images.loc[images["label"] == 1, "image_id"])
    words = run.words()
    word = words[words["image_id"].isin(ids)].groupby("word").size().idxmax()
    patch, corner = np.zeros((32, 32), bool), np.zeros((32, 32), bool)
    patch[10:16, 10:16] = True
    corner[26:32, 26:32] = True
    settings = CausalSettings(fill="mean")
    causal = verify_flag(run, "waterbird", word, clf, tr, tiny_lm, settings, extractor=plain_words(),
                         region_for=lambda image, sents: patch, region_name="patch")
    s = causal.summary()
    assert causal.verdict == "causal" and s["prediction_changed"]["rate"] == 1.0
    assert s["control_prediction_changed"]["rate"] < 0.5 and s["right_after"]["rate"] == 0.0
    distractor = verify_flag(run, "waterbird", word, clf, tr, tiny_lm, settings, extractor=plain_words(),
                             region_for=lambda image, sents: corner, region_name="corner")
    assert distractor.verdict == "correlational only"
    assert distractor.summary()["prediction_changed"]["rate"] == 0.0
    assert len(json.loads((run.path / "causal.json").read_text())) == 2  # stored apart, not over each other


def test_the_test_runs_on_a_run_stores_its_rows_and_resumes(explained, tiny_classifier, tiny_lm):
    run, tr = explained
    images = run.images()
    cls = run.manifest["dataset"]["class_names"][0]
    ids = set(images.loc[images["label"] == 0, "image_id"])
    counts = run.words()
    counts = counts[counts["image_id"].isin(ids)].groupby("word").size().sort_values()
    word = counts.index[-1]  # the word most of the class's images use
    calls = []
    result = verify_flag(run, cls, word, tiny_classifier, tr, tiny_lm, CausalSettings(share=0.25),
                         extractor=plain_words(), progress=lambda i, n, s: calls.append(i))
    assert len(result.rows) == counts.iloc[-1] and calls
    stored = json.loads((run.path / "causal.json").read_text())
    (key,) = stored
    assert stored[key]["summary"]["images"] == len(result.rows) and key.startswith(f"{cls}|{word}|")
    again = verify_flag(run, cls, word, tiny_classifier, tr, tiny_lm, CausalSettings(share=0.25),
                        extractor=plain_words(), progress=lambda i, n, s: pytest.fail("nothing is left to do"))
    assert again.rows == result.rows
    with pytest.raises(ValueError, match="is not a class of run"):
        verify_flag(run, "zebra", word, tiny_classifier, tr, tiny_lm)
    # Mapped by occlusion instead: another test, stored under its own key, each row saying how it was mapped.
    occl = verify_flag(run, cls, word, tiny_classifier, tr, tiny_lm, CausalSettings(share=0.25, map_method="occlusion",
                                                                                   max_images=2),
                       extractor=plain_words())
    assert {r["map"] for r in occl.rows} == {"occlusion"} and {r["map"] for r in result.rows} == {"gradient"}
    assert len(json.loads((run.path / "causal.json").read_text())) == 2
    with pytest.raises(ValueError, match="map_method must be one of"):
        CausalSettings(map_method="lime")


def test_an_image_whose_word_map_is_flat_has_nothing_removed(explained, tiny_classifier, tiny_lm, monkeypatch):
    # No part of such an image makes the word likelier: its region is empty, in both arms, and the row says why.
    import core.engine.word_map as wmod

    run, tr = explained
    real = wmod.word_map

    def flat_map(*args, **kwargs):
        wm = real(*args, **kwargs)
        return WordMap(wm.word, np.zeros_like(wm.heatmap), wm.method, wm.log_prob, wm.occurrences, wm.sentences)

    monkeypatch.setattr(wmod, "word_map", flat_map)
    from core.engine.explainer import Explainer

    explained_batches = []
    real_batch = Explainer.explain_batch
    monkeypatch.setattr(Explainer, "explain_batch", lambda self, *a, **k: explained_batches.append(1) or
                        real_batch(self, *a, **k))
    cls = run.manifest["dataset"]["class_names"][0]
    word = run.words().groupby("word").size().sort_values().index[-1]
    result = verify_flag(run, cls, word, tiny_classifier, tr, tiny_lm, CausalSettings(share=0.25, max_images=2),
                         extractor=plain_words(), store=False)
    assert result.rows and all(r["map"] == "flat" and r["region_share"] == 0 for r in result.rows)
    assert not any(r["changed"] or r["control_changed"] for r in result.rows)  # nothing removed: nothing changes
    assert not explained_batches  # the unchanged image is not explained again


class SceneNet(torch.nn.Module):
    """Decides by the scene alone: a blue image is a waterbird, a green one a landbird (tiny.make_waterbirds)."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(3, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.0, 5.0, -5.0], [0.0, -5.0, 5.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.body(x).flatten(1))


def test_a_swap_takes_the_region_from_an_image_without_the_word_and_the_control_from_one_with_it(tmp_path, tiny_lm):
    """With the whole scene swapped, a toy that reads only the scene must read each image as its donor's scene: the
    swap moves the pixels it says it moves, from the images it says it takes them from."""
    from core.evaluation.causal import donor_pools
    from tests.tiny import make_waterbirds

    torch.manual_seed(0)
    clf = toy_classifier(SceneNet(), "scenenet")
    run, tr = toy_run(clf, 3, tiny_lm, make_waterbirds(tmp_path / "wb", n_per_group=4), tmp_path / "run")
    images = run.images()
    assert (images["prediction"] == images["place"]).all()  # the toy reads the scene, not the bird
    land = images[images["label"] == 0]
    words = run.words()
    word = word_used_by_about_half(run, set(land["image_id"]))
    scene = np.ones((32, 32), bool)
    scene[10:16, 10:16] = False  # everything but the bird
    result = verify_flag(run, "landbird", word, clf, tr, tiny_lm, CausalSettings(fill="swap"),
                         extractor=plain_words(), region_for=lambda image, sents: scene, region_name="scene")
    used = set(words.loc[words["word"] == word, "image_id"])
    place = dict(zip(images["image_id"], images["place"]))
    assert len(result.rows) == len(used & set(land["image_id"]))
    for r in result.rows:
        assert r["donor"] not in used and r["control_donor"] in used and r["control_donor"] != r["image_id"]
        assert r["after"] == place[r["donor"]]
        assert r["control_after"] == place[r["control_donor"]]
        assert r["changed"] == (place[r["donor"]] != place[r["image_id"]])
    assert result.summary()["fill"] == "swap"
    with pytest.raises(ValueError, match="lack 'x'.*0 lack it"):
        donor_pools(land, set(land["image_id"]), "landbird", "x")


class SceneConvNet(SceneNet):
    """SceneNet with a spatial feature map (an identity 1x1 convolution) to take a Grad-CAM of."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3)[:, :, None, None])
            self.conv.bias.zero_()

    def forward(self, x):
        return self.fc(self.body(self.conv(x)).flatten(1))


def test_a_scene_swap_takes_each_scene_from_its_donor_with_or_without_a_spatial_map(tmp_path, tiny_lm):
    from core.evaluation.causal import object_region
    from tests.tiny import make_waterbirds

    with pytest.raises(ValueError, match="needs fill 'swap'"):
        CausalSettings(region="scene")
    torch.manual_seed(0)
    clf = toy_classifier(SceneConvNet(), "conv")
    run, tr = toy_run(clf, 3, tiny_lm, make_waterbirds(tmp_path / "wb", n_per_group=4), tmp_path / "conv")
    images = run.images()
    x = clf.preprocess(load_rgb(run.image_path(images["path"].iloc[0])))
    assert object_region(clf, x, 0.15).sum() == round(0.15 * 32 * 32)
    land = images[images["label"] == 0]
    word = word_used_by_about_half(run, set(land["image_id"]))
    settings = CausalSettings(fill="swap", region="scene")
    result = verify_flag(run, "landbird", word, clf, tr, tiny_lm, settings, extractor=plain_words())
    place = dict(zip(images["image_id"], images["place"]))
    assert result.rows and all(r["map"] == "scene" and 0.8 < r["region_share"] < 0.9 for r in result.rows)
    # Most of each scene is the donor's: the toy, which reads only the scene, reads the donor's.
    assert all(r["after"] == place[r["donor"]] and r["control_after"] == place[r["control_donor"]]
               for r in result.rows)
    assert "|scene=0.15" in next(iter(json.loads((run.path / "causal.json").read_text())))
    # Without a spatial map the object is where hiding a patch costs the prediction most: a region all the same.
    assert object_region(toy_classifier(SceneNet(), "flat"), x, 0.15).sum() == round(0.15 * 32 * 32)
