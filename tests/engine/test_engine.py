"""The TExplain engine end to end on tiny local models: adapters, translator, training, sampling, run store."""
import hashlib
import json
from dataclasses import asdict, replace

import pandas as pd
import pytest
import torch

from core.data import open_dataset
from core.engine.config import ExplainConfig, TrainConfig
from core.engine.pipeline import explain_dataset
from core.engine.sampling import sample_sentences
from core.engine.train import train_translator
from core.errors import TrainStateError
from core.models.classifier import ClassifierLoadError, load_classifier, torchvision_classifier
from core.models.translator import Translator, TranslatorConfig, TranslatorMismatchError
from core.store import Run
from tests.conftest import CAPTIONS


def two_clusters(n=64, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    centers = torch.randn(2, dim, generator=g) * 3
    z = centers[labels] + 0.3 * torch.randn(n, dim, generator=g)
    return z, labels


def test_lm_from_local_folder_generates_from_embeddings(tiny_lm):
    prefix = torch.randn(2, 3, tiny_lm.hidden_size)
    out = sample_sentences(tiny_lm, prefix, 4, ExplainConfig(max_new_tokens=8))
    assert len(out) == 2 and all(len(s) == 4 for s in out)
    assert all(isinstance(t, str) for s in out for t in s)
    assert any(t for s in out for t in s), "the LM produced only empty sentences"


def test_translator_training_lowers_loss_and_learns_a_planted_word(tmp_path, tiny_lm, tiny_classifier):
    z, labels = two_clusters(dim=tiny_classifier.feature_dim)
    captions = [CAPTIONS[int(y)] for y in labels]
    cfg = TrainConfig(epochs=30, batch_size=16, lr=3e-3, warmup_steps=5, prefix_length=3, mlp_hidden=64)
    tr = train_translator(tiny_classifier, tiny_lm, z, captions, tmp_path / "tr", z[:16], captions[:16], cfg,
                          show_progress=False)
    hist = tr.config.training["history"]
    assert hist[-1]["val_loss"] < 0.5 * hist[0]["val_loss"], hist
    # Sampling + counting end to end: cluster 0 talks about water, cluster 1 about the forest.
    with torch.no_grad():
        sents = sample_sentences(tiny_lm, tr(z[:2]), 16, ExplainConfig(max_new_tokens=12, seed=1))
    water = [sum("water" in s for s in group) / 16 for group in sents]
    forest = [sum("forest" in s for s in group) / 16 for group in sents]
    first, second = int(labels[0]), int(labels[1])
    assert (first, second) == (0, 1)
    assert water[0] > 0.8 and forest[0] < 0.2, sents[0]
    assert forest[1] > 0.8 and water[1] < 0.2, sents[1]


def test_training_resumes_from_its_state(tmp_path, tiny_lm, tiny_classifier):
    z, labels = two_clusters(dim=tiny_classifier.feature_dim)
    caps = [CAPTIONS[int(y)] for y in labels]
    base = dict(epochs=3, batch_size=16, warmup_steps=2, prefix_length=2, mlp_hidden=32, save_every=3)
    straight = train_translator(tiny_classifier, tiny_lm, z, caps, tmp_path / "a", cfg=TrainConfig(**base),
                                show_progress=False)

    def crash(info):  # killed mid-epoch 2, after the state of step 6 was saved
        if info["step"] == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_translator(tiny_classifier, tiny_lm, z, caps, tmp_path / "b", cfg=TrainConfig(**base), progress=crash,
                         show_progress=False)
    assert torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)["step"] == 6
    resumed = train_translator(tiny_classifier, tiny_lm, z, caps, tmp_path / "b", cfg=TrainConfig(**base),
                               show_progress=False)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), k
    # A state left by another run (here: other captions) is refused, not silently continued, and kept.
    other = [CAPTIONS[1 - int(y)] for y in labels]
    with pytest.raises(ValueError, match="different training run"):
        train_translator(tiny_classifier, tiny_lm, z, other, tmp_path / "b", cfg=TrainConfig(**base),
                         show_progress=False)
    assert (tmp_path / "b" / "train_state.pt").exists()


def test_training_on_feature_views_resumes_to_the_same_weights(tmp_path, tiny_lm, tiny_classifier):
    """(pairs, views, D) features: each step draws one view per pair from (seed, step), so a resumed run
    sees the same views as a straight one; a view other than the identity does change the training."""
    z, labels = two_clusters(dim=tiny_classifier.feature_dim)
    views = torch.stack([z, z.flip(-1), z + 0.5], dim=1)
    caps = [CAPTIONS[int(y)] for y in labels]
    base = dict(epochs=2, batch_size=16, warmup_steps=2, prefix_length=2, mlp_hidden=32, save_every=3)
    straight = train_translator(tiny_classifier, tiny_lm, views, caps, tmp_path / "a", cfg=TrainConfig(**base),
                                show_progress=False)

    def crash(info):
        if info["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_translator(tiny_classifier, tiny_lm, views, caps, tmp_path / "b", cfg=TrainConfig(**base),
                         progress=crash, show_progress=False)
    resumed = train_translator(tiny_classifier, tiny_lm, views, caps, tmp_path / "b", cfg=TrainConfig(**base),
                               show_progress=False)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), k
    plain = train_translator(tiny_classifier, tiny_lm, z, caps, tmp_path / "c", cfg=TrainConfig(**base),
                             show_progress=False)
    assert not torch.allclose(plain.state_dict()["mapper.net.0.weight"], straight.state_dict()["mapper.net.0.weight"])
    with pytest.raises(ValueError, match=r"\(N, D\) or \(N, views, D\)"):
        train_translator(tiny_classifier, tiny_lm, views[None], caps, tmp_path / "d", cfg=TrainConfig(**base),
                         show_progress=False)


def test_emphasis_weights_the_span_tokens_and_changes_training(tmp_path, tiny_lm, tiny_classifier):
    """emphasis_weights marks exactly the tokens of each caption's span; with weight 1 the weighted loss is the
    plain mean, with more it is another loss (and another training run, not a resumable one)."""
    from core.engine.train import caption_loss, emphasis_weights, tokenize_captions

    caps = ["a small bird on the water", "a bird in the forest"]
    spans = [(caps[0].index("the water"), len(caps[0])), None]
    w = emphasis_weights(tiny_lm, caps, spans, 4.0, 24)
    ids, mask = tokenize_captions(tiny_lm, caps, 24)
    assert w.shape == ids.shape
    assert w[0, :len(caps[0].split()) + 1].tolist() == [1, 1, 1, 1, 4, 4, 1]  # "the water" weighed, then EOS
    assert (w[1] == 1).all()
    z, labels = two_clusters(dim=tiny_classifier.feature_dim)
    tr = Translator(TranslatorConfig(feature_dim=tiny_classifier.feature_dim, hidden_size=tiny_lm.hidden_size,
                                     prefix_length=2, mlp_hidden=16))
    with torch.no_grad():
        plain = caption_loss(tr, tiny_lm, z[:2], ids, mask)
        same = caption_loss(tr, tiny_lm, z[:2], ids, mask, emphasis_weights(tiny_lm, caps, spans, 1.0, 24))
        weighted = caption_loss(tr, tiny_lm, z[:2], ids, mask, w)
    assert torch.allclose(plain, same) and not torch.allclose(plain, weighted)
    with pytest.raises(ValueError, match="1 emphasis spans for 2 captions"):
        emphasis_weights(tiny_lm, caps, spans[:1], 4.0, 24)
    train_caps = [CAPTIONS[int(y)] for y in labels]
    train_spans = [(0, len(c.split()[0])) for c in train_caps]
    base = dict(epochs=1, max_steps=2, batch_size=16, warmup_steps=1, prefix_length=2, mlp_hidden=16)
    a = train_translator(tiny_classifier, tiny_lm, z, train_caps, tmp_path / "a", cfg=TrainConfig(**base),
                         show_progress=False, train_emphasis=train_spans)  # weight 1: spans unused
    b = train_translator(tiny_classifier, tiny_lm, z, train_caps, tmp_path / "b",
                         cfg=TrainConfig(**base, emphasis_weight=5.0), show_progress=False, train_emphasis=train_spans)
    assert not torch.allclose(a.state_dict()["mapper.net.0.weight"], b.state_dict()["mapper.net.0.weight"])
    with pytest.raises(TrainStateError, match="different training run"):  # b's saved state is not a's
        train_translator(tiny_classifier, tiny_lm, z, train_caps, tmp_path / "b",
                         cfg=TrainConfig(**{**base, "max_steps": 3}, emphasis_weight=5.0), show_progress=False,
                         train_emphasis=[None] * len(train_caps))


def test_dropout_regularises_training_and_keeps_old_fingerprints(tmp_path, tiny_lm, tiny_classifier):
    """TrainConfig.dropout: the mapper drops units while training (another run, not resumable as one without),
    never at inference, and runs without it keep the fingerprint they had before the setting existed."""
    from core.engine.train import training_fingerprint

    z, labels = two_clusters(dim=tiny_classifier.feature_dim)
    caps = [CAPTIONS[int(y)] for y in labels]
    base = dict(epochs=1, max_steps=2, batch_size=16, warmup_steps=1, prefix_length=2, mlp_hidden=16)
    a = train_translator(tiny_classifier, tiny_lm, z, caps, tmp_path / "a", cfg=TrainConfig(**base),
                         show_progress=False)
    b = train_translator(tiny_classifier, tiny_lm, z, caps, tmp_path / "b", cfg=TrainConfig(**base, dropout=0.5),
                         show_progress=False)
    assert b.config.dropout == 0.5 and a.config.dropout == 0.0
    assert not torch.allclose(a.state_dict()["mapper.net.0.weight"], b.state_dict()["mapper.net.0.weight"])
    b.eval()
    with torch.no_grad():
        assert torch.equal(b.mapper(z[:4]), b.mapper(z[:4]))  # no dropout at inference
    with pytest.raises(TrainStateError, match="different training run"):
        train_translator(tiny_classifier, tiny_lm, z, caps, tmp_path / "b", cfg=TrainConfig(**{**base, "max_steps": 3}),
                         show_progress=False)
    cfg = TrainConfig(**base)
    old = {k: v for k, v in asdict(cfg).items() if k not in ("save_every", "device", "max_steps", "emphasis_weight",
                                                              "dropout", "unlikely_weight")}
    h = hashlib.sha256(json.dumps({"classifier": tiny_classifier.identity, "lm": tiny_lm.identity, "config": old},
                                  sort_keys=True).encode())
    h.update("\n".join(caps).encode() + b"\0")
    assert training_fingerprint(tiny_classifier, tiny_lm, cfg, (), [caps]) == h.hexdigest()[:16]


def test_single_token_words_keep_only_words_whose_first_token_is_theirs():
    """On SmolLM2's tokenizer (the one the unlikelihood term is trained with): " apple" and " apples" are one token
    each, " zebra" is one but " zebras" starts with " ze", " stapler" starts with " sta"."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from core import paths
    from core.engine.train import single_token_words

    lm = SimpleNamespace(tokenizer=AutoTokenizer.from_pretrained(paths.LM_DIR))
    assert single_token_words(lm, ["apple", "dog", "guitar", "zebra", "stapler", "heron"]) == {"apple", "dog",
                                                                                                 "guitar"}


def test_unlikelihood_keeps_the_translator_from_saying_absent_words(tmp_path, tiny_lm, tiny_classifier):
    """unlikely_tokens: the in-sentence first token of each word and its plural, never a token of the caption
    itself; caption_loss adds weight * sum -log(1 - p) over them, averaged over the real positions; training with
    it lowers the probability of the penalised word where plain training leaves it; plain runs keep their
    fingerprint, and a run with the term is another run."""
    from core.engine.train import caption_loss, tokenize_captions, training_fingerprint, unlikely_tokens

    tok = tiny_lm.tokenizer
    first = tok(" water", add_special_tokens=False).input_ids[0]
    caps = ["a bird in the forest", "a bird on the water"]
    u = unlikely_tokens(tiny_lm, caps, [{"water", "lake"}, {"water"}], 24)
    assert first in u[0].tolist() and tok(" lake", add_special_tokens=False).input_ids[0] in u[0].tolist()
    assert first not in u[1].tolist()  # the caption says it: never penalised
    assert (u[1] == -1).sum() >= 1 and u.shape[0] == 2
    with pytest.raises(ValueError, match="1 sets of unlikely words for 2 captions"):
        unlikely_tokens(tiny_lm, caps, [{"water"}], 24)

    z, labels = two_clusters(dim=tiny_classifier.feature_dim)
    tr = Translator(TranslatorConfig(feature_dim=tiny_classifier.feature_dim, hidden_size=tiny_lm.hidden_size,
                                     prefix_length=2, mlp_hidden=16))
    ids, mask = tokenize_captions(tiny_lm, caps, 24)
    with torch.no_grad():
        plain = caption_loss(tr, tiny_lm, z[:2], ids, mask)
        assert torch.equal(caption_loss(tr, tiny_lm, z[:2], ids, mask, unlikely=u, unlikely_weight=0.0), plain)
        both = caption_loss(tr, tiny_lm, z[:2], ids, mask, unlikely=u, unlikely_weight=2.0)
        # the reference: every position's full distribution, the penalised tokens picked by hand
        prefix = tr(z[:2])
        x = torch.cat([prefix, tiny_lm.embed(ids)], dim=1)
        attn = torch.cat([torch.ones(2, 2, dtype=torch.long), mask.long()], dim=1)
        p = tiny_lm.model(inputs_embeds=x, attention_mask=attn).logits[:, 1:-1].float().softmax(-1)
        ul = sum(-torch.log1p(-p[i, t, int(k)]) for i in range(2) for t in range(ids.shape[1]) if mask[i, t]
                 for k in u[i] if k >= 0) / mask.sum()
    assert torch.allclose(both, plain + 2.0 * ul, rtol=1e-4)

    train_caps = ["a bird on the grass"] * len(z)
    words = [{"water"}] * len(z)
    base = dict(epochs=1, max_steps=12, batch_size=16, warmup_steps=1, prefix_length=2, mlp_hidden=16, lr=3e-3)
    a = train_translator(tiny_classifier, tiny_lm, z, train_caps, tmp_path / "a", cfg=TrainConfig(**base),
                         show_progress=False, train_unlikely=words)  # weight 0: words unused
    b = train_translator(tiny_classifier, tiny_lm, z, train_caps, tmp_path / "b",
                         cfg=TrainConfig(**base, unlikely_weight=100.0), show_progress=False, train_unlikely=words)
    t_ids, t_mask = tokenize_captions(tiny_lm, train_caps[:8], 24)

    def p_water(t):
        x = torch.cat([t(z[:8]), tiny_lm.embed(t_ids)], dim=1)
        attn = torch.cat([torch.ones(8, 2, dtype=torch.long), t_mask.long()], dim=1)
        with torch.no_grad():
            return tiny_lm.model(inputs_embeds=x, attention_mask=attn).logits[:, 1:-1].softmax(-1)[..., first].mean()

    assert p_water(b) < 0.5 * p_water(a)  # 0.0022 against 0.0064
    cfg = TrainConfig(**base)
    assert (training_fingerprint(tiny_classifier, tiny_lm, cfg, (), [train_caps])
            == training_fingerprint(tiny_classifier, tiny_lm, cfg, (), [train_caps], unlikely=u))
    assert (training_fingerprint(tiny_classifier, tiny_lm, replace(cfg, unlikely_weight=5.0), (), [train_caps],
                                 unlikely=u)
            != training_fingerprint(tiny_classifier, tiny_lm, cfg, (), [train_caps]))


def test_warm_start_continues_from_a_saved_translator(tmp_path, tiny_lm, tiny_classifier):
    """init_from: a second stage starts from the saved weights and feature statistics (not fresh ones), and a
    translator of another shape is refused before any step."""
    from core.engine.train import caption_loss, tokenize_captions

    z, labels = two_clusters(dim=tiny_classifier.feature_dim)
    caps = [CAPTIONS[int(y)] for y in labels]
    base = dict(batch_size=16, warmup_steps=2, prefix_length=2, mlp_hidden=32, lr=3e-3)
    first = train_translator(tiny_classifier, tiny_lm, z, caps, tmp_path / "a", z[:16], caps[:16],
                             TrainConfig(epochs=4, **base), show_progress=False)
    ids, mask = tokenize_captions(tiny_lm, caps[:16], 24)
    with torch.no_grad():
        saved_loss = caption_loss(first, tiny_lm, z[:16], ids, mask).item()
    starts = []
    cold = TrainConfig(epochs=1, max_steps=1, **base)
    warm = TrainConfig(epochs=1, max_steps=1, init_from=str(tmp_path / "a" / "best"), **base)
    for name, cfg in (("cold", cold), ("warm", warm)):
        train_translator(tiny_classifier, tiny_lm, z + 1.0, caps, tmp_path / name, cfg=cfg, show_progress=False,
                         progress=lambda info: starts.append(info["loss"]))
    warm_tr = Translator.from_pretrained(tmp_path / "warm" / "best", tiny_classifier, tiny_lm)
    # Warm: the statistics are the first stage's (z), not the shifted features of the second stage.
    assert torch.allclose(warm_tr.feature_mean, first.feature_mean)
    # ...and the first stage's training stays on record under the second's.
    assert warm_tr.config.training["started_from"]["history"] == first.config.training["history"]
    assert warm_tr.config.training["settings"]["init_from"] == str(tmp_path / "a" / "best")
    assert starts[1] < 0.5 * starts[0], starts  # the first step's loss is the trained one's, not a fresh one's
    assert saved_loss < 0.5 * starts[0]
    with pytest.raises(ValueError, match="another shape"):
        train_translator(tiny_classifier, tiny_lm, z, caps, tmp_path / "b",
                         cfg=TrainConfig(epochs=1, max_steps=1, init_from=str(tmp_path / "a" / "best"),
                                         **{**base, "prefix_length": 3}), show_progress=False)


def test_augmented_views_are_deterministic_and_distinct():
    from PIL import Image

    from core.engine.train import augment_image

    rng = torch.Generator().manual_seed(0)
    image = Image.fromarray((torch.rand(64, 96, 3, generator=rng) * 255).byte().numpy())
    assert augment_image(image, "identity", "a.jpg") is image
    flip = augment_image(image, "flip", "a.jpg")
    assert flip.tobytes() == image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()
    crop = augment_image(image, "crop-1", "a.jpg")
    assert crop.size == image.size and crop.tobytes() == augment_image(image, "crop-1", "a.jpg").tobytes()
    assert crop.tobytes() != augment_image(image, "crop-2", "a.jpg").tobytes()
    assert crop.tobytes() != augment_image(image, "crop-1", "b.jpg").tobytes()
    with pytest.raises(ValueError, match="unknown view"):
        augment_image(image, "rotate", "a.jpg")


def test_translator_checkpoint_round_trip_and_mismatch_errors(tmp_path, tiny_lm, tiny_classifier):
    cfg = TranslatorConfig(feature_dim=tiny_classifier.feature_dim, hidden_size=tiny_lm.hidden_size, prefix_length=2,
                           classifier_identity=tiny_classifier.identity, classifier_name="tinynet",
                           lm_identity=tiny_lm.identity, lm_name=tiny_lm.name)
    tr = Translator(cfg)
    tr.save_pretrained(tmp_path / "t")
    back = Translator.from_pretrained(tmp_path / "t", tiny_classifier, tiny_lm)
    z = torch.randn(3, tiny_classifier.feature_dim)
    assert torch.allclose(tr(z), back(z), atol=1e-6)

    other = load_classifier(tiny_classifier.module.__class__(), class_names=["a", "b"], name="other")
    with pytest.raises(TranslatorMismatchError) as err:
        Translator.from_pretrained(tmp_path / "t", other, tiny_lm)
    assert tiny_classifier.identity in str(err.value) and other.identity in str(err.value)


def test_transformer_mapper_shapes():
    cfg = TranslatorConfig(feature_dim=16, hidden_size=32, prefix_length=4, mapper="transformer", num_layers=1,
                           num_heads=4)
    assert Translator(cfg)(torch.randn(5, 16)).shape == (5, 4, 32)
    with pytest.raises(ValueError, match="features has shape"):
        Translator(cfg)(torch.randn(5, 17))


def test_torchvision_checkpoint_with_replaced_head_and_wrong_architecture(tmp_path):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Linear(512, 2)  # a Waterbirds-style checkpoint: 2 classes
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "wb.pt")
    clf = torchvision_classifier("resnet18", checkpoint=tmp_path / "wb.pt", class_names=["landbird", "waterbird"])
    x = torch.randn(2, 3, 64, 64)
    z, logits = clf.features_and_logits(x)
    assert z.shape == (2, 512) and logits.shape == (2, 2)
    assert torch.allclose(clf.head(z), logits, atol=1e-5)
    with pytest.raises(ClassifierLoadError, match="does not fit resnet34"):
        torchvision_classifier("resnet34", checkpoint=tmp_path / "wb.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ClassifierLoadError, match="weights-only"):
        torchvision_classifier("resnet18", checkpoint=tmp_path / "junk.pt")


def _explainer(tmp_path, tiny_lm, tiny_classifier):
    cfg = TranslatorConfig(feature_dim=tiny_classifier.feature_dim, hidden_size=tiny_lm.hidden_size, prefix_length=2,
                           classifier_identity=tiny_classifier.identity, lm_identity=tiny_lm.identity)
    torch.manual_seed(0)
    return Translator(cfg).eval()


def test_explain_run_resumes_to_the_same_result(tmp_path, tiny_lm, tiny_classifier, tiny_waterbirds):
    ds = open_dataset(tiny_waterbirds)
    tr = _explainer(tmp_path, tiny_lm, tiny_classifier)
    cfg = ExplainConfig(sentences_per_image=6, max_new_tokens=6, shard_size=5, batch_rows=7, seed=3, device="cpu")
    full = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "full", cfg, split="test", show_progress=False)
    part = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "part", cfg, split="test", max_shards=1,
                           show_progress=False)
    assert part.manifest["status"] == "partial" and part.manifest["progress"]["done_images"] == 5
    resumed = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "part", cfg, split="test",
                              show_progress=False)
    assert resumed.manifest["status"] == "complete" and full.manifest["status"] == "complete"
    for table, keys in (("images", ["image_id"]), ("words", ["image_id", "word"]), ("sentences", ["image_id", "idx"])):
        a = full.table(table).sort_values(keys).reset_index(drop=True)
        b = resumed.table(table).sort_values(keys).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b)
    images = full.images()
    assert len(images) == 16 and images["image_id"].is_unique
    assert set(images["group"]) == {0, 1, 2, 3}


def test_explain_tables_do_not_depend_on_batching_shards_or_workers(tmp_path, tiny_lm, tiny_classifier,
                                                                      tiny_waterbirds):
    # Counter-based sampling: the sampler's batch (across shard and image-batch boundaries), the
    # shard size, the classifier's batch, decoding workers, the KV cache and the nucleus search are
    # all invisible in the tables. An unreadable image is recorded the same way in every layout.
    ds = open_dataset(tiny_waterbirds)
    ds.split("test").records[2].path.write_bytes(b"\x89PNG broken")
    tr = _explainer(tmp_path, tiny_lm, tiny_classifier)
    base = dict(sentences_per_image=6, max_new_tokens=6, seed=3, device="cpu")
    layouts = [dict(shard_size=5, batch_rows=7, image_batch=32),  # the sampler sees one image at a time
               dict(shard_size=3, batch_rows=60, image_batch=2, nucleus="pivot", kv_cache="preallocated"),
               dict(shard_size=16, batch_rows=512, image_batch=5, num_workers=2),
               dict(shard_size=7, batch_rows=30, image_batch=4, kv_cache="preallocated")]
    tables = []
    for i, layout in enumerate(layouts):
        run = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / f"r{i}", ExplainConfig(**base, **layout),
                              split="test", show_progress=False)
        assert run.status == "complete"
        tables.append({t: run.table(t).sort_values(k).reset_index(drop=True) for t, k in
                       (("images", ["image_id"]), ("words", ["image_id", "word"]), ("sentences", ["image_id", "idx"]))})
        tp = run.manifest["throughput"]
        assert tp["images_per_s"] > 0 and tp["sentences_per_s"] > 0
        # Sequences per sampler call: whole images, filled across shards (the last call may be partial).
        per_call = max(1, layout["batch_rows"] // 6)
        calls = -(-15 // per_call)  # 15 readable images
        assert tp["mean_rows_per_batch"] == round(15 * 6 / calls, 1)
        # Where the time went, per stage (the sampler's share is what a starved GPU shows as low).
        sec = tp["seconds"]
        assert {"total", "wait_for_images", "classify_translate", "sample", "count_words", "write_shard"} <= set(sec)
        assert 0 < sec["sample"] <= sec["total"] and all(v >= 0 for v in sec.values())
    for other in tables[1:]:
        # Floats to 1e-6: a float32 sum can differ in its last bit with the memory layout of its batch.
        for t in ("images", "words", "sentences"):
            pd.testing.assert_frame_equal(tables[0][t], other[t], check_exact=False, rtol=1e-6)
    assert tables[0]["images"]["error"].notna().sum() == 1


def test_explain_can_stop_between_batches_and_resume(tmp_path, tiny_lm, tiny_classifier, tiny_waterbirds):
    ds = open_dataset(tiny_waterbirds)
    tr = _explainer(tmp_path, tiny_lm, tiny_classifier)
    cfg = ExplainConfig(sentences_per_image=3, max_new_tokens=4, shard_size=4, batch_rows=6, image_batch=4,
                        device="cpu")
    calls = []

    def stop_after_two():
        calls.append(1)
        return len(calls) > 2

    run = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "r", cfg, split="test", show_progress=False,
                          should_stop=stop_after_two)
    assert run.status == "stopped" and 0 < len(run.done_shards()) < 4
    done = run.done_shards()
    resumed = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "r", cfg, split="test", show_progress=False)
    assert resumed.status == "complete" and done < resumed.done_shards()
    full = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "full", cfg, split="test", show_progress=False)
    pd.testing.assert_frame_equal(full.words().sort_values(["image_id", "word"]).reset_index(drop=True),
                                  resumed.words().sort_values(["image_id", "word"]).reset_index(drop=True))


def test_gpu_batch_rows_sizing_arithmetic():
    from types import SimpleNamespace

    from core.engine.sampling import batch_rows_that_fit, sampler_bytes_per_row

    smollm2 = SimpleNamespace(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576,
                              intermediate_size=1536, vocab_size=49152)
    per_row = sampler_bytes_per_row(smollm2, prefix_length=10, max_new_tokens=20, dtype_bytes=2)
    kv = 30 * 2 * 3 * 64 * 30 * 2 * 2  # layers x (k, v) x kv heads x head dim x positions x bf16, cache + gather copy
    assert per_row == kv + 49152 * 42 + (4 * 576 + 3 * 1536) * 4
    # An H200 with ~130 GiB free holds tens of thousands of rows (the issue measured 20,480 rows in 23 GB,
    # and 32,768 rows with random weights, whose flat rows all take the full-sort fallback).
    rows = batch_rows_that_fit(130 * 2**30, per_row, 64)
    assert 28_000 < rows < 40_000 and rows % 256 == 0 and rows % 64 == 0
    assert rows * per_row <= 130 * 2**30 * 0.85
    assert batch_rows_that_fit(per_row * 100, per_row, 64) == 64  # whole images only
    assert batch_rows_that_fit(per_row * 10, per_row, 64) == 0  # not one image fits
    assert batch_rows_that_fit(per_row * 1000, per_row, 48) % 48 == 0


def test_batch_rows_that_cannot_fit_on_the_gpu_is_refused_up_front(monkeypatch, tiny_lm):
    from core.engine import sampling

    class FakeCuda:  # this machine has no GPU: stand in for the two memory queries only
        @staticmethod
        def mem_get_info(device):
            return 3 * 2**20, 80 * 2**30

        memory_reserved = memory_allocated = staticmethod(lambda device: 0)

    lm = type("LM", (), {"device": torch.device("cuda", 0), "model": tiny_lm.model})()
    monkeypatch.setattr(sampling.torch, "cuda", FakeCuda)
    per_row = sampling.sampler_bytes_per_row(tiny_lm.model.config, 2, 6, 4)
    fit = sampling.resolve_batch_rows(lm, 2, 6, 4)
    assert fit == sampling.batch_rows_that_fit(3 * 2**20, per_row, 4) and fit >= 4
    with pytest.raises(ValueError, match=rf"batch_rows=100000 needs about .* at most {fit} rows fit"):
        sampling.resolve_batch_rows(lm, 2, 6, 4, batch_rows=100_000)
    with pytest.raises(ValueError, match="sampling one image's 100000 sentences"):
        sampling.resolve_batch_rows(lm, 2, 6, 100_000)


def test_explain_records_corrupt_images_and_refuses_empty_or_changed_runs(tmp_path, tiny_lm, tiny_classifier,
                                                                          tiny_waterbirds):
    ds = open_dataset(tiny_waterbirds)
    test = ds.split("test")
    test.records[0].path.write_bytes(b"\x89PNG broken")
    tr = _explainer(tmp_path, tiny_lm, tiny_classifier)
    cfg = ExplainConfig(sentences_per_image=2, max_new_tokens=4, device="cpu")
    run = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "r", cfg, split="test", show_progress=False)
    images = run.images()
    bad = images[images["image_id"] == test.records[0].image_id].iloc[0]
    assert "cannot read image" in bad["error"] and bad["n_sentences"] == 0
    assert images["error"].isna().sum() == len(images) - 1
    with pytest.raises(ValueError, match="no images"):
        explain_dataset(ds.__class__(ds.name, ds.kind, ds.root, [], ds.class_names), tiny_classifier, tr, tiny_lm,
                        tmp_path / "empty", cfg)
    from core.store import RunStoreError

    with pytest.raises(RunStoreError, match="different settings"):
        explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "r", ExplainConfig(sentences_per_image=3,
                        device="cpu"), split="test", show_progress=False)


def test_store_reads_only_complete_shards(tmp_path):
    run = Run.create(tmp_path / "run", {"name": "x"})
    img = pd.DataFrame([{"image_id": "a", "path": "p", "split": "test", "label": 0, "label_name": "l", "prediction": 0,
                         "prediction_name": "l", "confidence": 0.9, "group": 0, "place": 0, "n_sentences": 2,
                         "error": None}])
    words = pd.DataFrame([{"image_id": "a", "word": "water", "count": 3, "sentences": 2}])
    sents = pd.DataFrame([{"image_id": "a", "idx": 0, "text": "water water"}])
    run.write_shard(0, img, words, sents)
    # A shard whose files exist but that the manifest never recorded (a crash mid-write) is invisible.
    img.assign(image_id="b").to_parquet(tmp_path / "run" / "images" / "shard-00001.parquet")
    assert list(Run.open(tmp_path / "run").images()["image_id"]) == ["a"]
    assert Run.open(tmp_path / "run").query("SELECT sum(count) AS n FROM words")["n"][0] == 3


def test_an_images_sentences_do_not_depend_on_its_batch(tiny_lm):
    from core.engine.sampling import image_key

    torch.manual_seed(0)
    prefix = torch.randn(3, 2, tiny_lm.hidden_size)
    keys = [image_key(i, 7) for i in ("a", "b", "c")]
    together = sample_sentences(tiny_lm, prefix, 5, ExplainConfig(max_new_tokens=8, batch_rows=15), keys)
    alone = sample_sentences(tiny_lm, prefix[1:2], 5, ExplainConfig(max_new_tokens=8, batch_rows=4), keys[1:2])
    assert alone[0] == together[1]
    other_seed = sample_sentences(tiny_lm, prefix[1:2], 5, ExplainConfig(max_new_tokens=8),
                                  [image_key("b", 8)])
    assert other_seed[0] != together[1]


def test_counter_based_uniforms_are_uniform():
    from core.engine.sampling import row_uniforms

    u = row_uniforms(torch.arange(200_000), 3)
    assert 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    hist = torch.histc(u.float(), bins=10, min=0, max=1) / len(u)
    assert float((hist - 0.1).abs().max()) < 0.005


def _full_sort_reference(logits, rows, top_p, temperature, u):
    from core.engine.sampling import inverse_cdf

    # The reference: every state's whole vocabulary sorted, equal probabilities in token-id order (stable).
    probs = torch.softmax(logits[rows] / temperature, -1)
    return inverse_cdf(*probs.sort(dim=-1, descending=True, stable=True), top_p, u, torch.arange(len(rows)))


@pytest.mark.parametrize("method", ["tiers", "pivot"])
def test_nucleus_search_chooses_what_a_full_sort_would(method):
    from core.engine.sampling import row_uniforms, sample_top_p

    g = torch.Generator().manual_seed(0)
    V = 5000
    # Sharp rows (nucleus in the top 64), medium (top 1024) and flat ones (full sort), mixed in one batch,
    # and rows of whole-number logits where many tokens tie, inside and at the edge of the nucleus.
    scales = torch.tensor([12.0] * 40 + [3.0] * 40 + [0.05] * 40)
    logits = torch.cat([torch.randn(len(scales), V, generator=g) * scales[:, None],
                        torch.randint(-6, 3, (20, V), generator=g).float(),
                        torch.randint(-60, 1, (20, V), generator=g).float() / 4])
    # Several sequences may share a state (the same history): 400 draws from the 160 distributions.
    rows = torch.randint(0, len(logits), (400,), generator=g)
    for top_p, temperature in ((0.9, 0.9), (0.5, 1.0), (0.999, 1.0), (1.0, 1.0)):
        for step in range(5):
            u = row_uniforms(torch.arange(len(rows)), step)
            full = _full_sort_reference(logits, rows, top_p, temperature, u)
            assert torch.equal(sample_top_p(logits, top_p, temperature, u, rows, method=method), full)
            assert torch.equal(sample_top_p(logits[rows], top_p, temperature, u, method=method), full)
    # And the draws follow the nucleus distribution: a two-token nucleus of 0.6 / 0.4.
    two = torch.full((1, V), -30.0)
    two[0, 7], two[0, 9] = 0.0, float(torch.log(torch.tensor(0.4 / 0.6)))
    draws = sample_top_p(two.expand(20_000, V), 0.99, 1.0, row_uniforms(torch.arange(20_000), 0), method=method)
    assert set(draws.tolist()) == {7, 9} and abs(float((draws == 7).float().mean()) - 0.6) < 0.015


def test_pivot_threshold_holds_the_nucleus_and_little_else():
    from core.engine.sampling import nucleus_threshold

    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(32, 32768, generator=g) * torch.linspace(1, 10, 32)[:, None], -1)
    thr = nucleus_threshold(probs, 0.9)
    sorted_p = probs.sort(dim=-1, descending=True, stable=True).values
    nucleus = ((sorted_p.cumsum(-1) - sorted_p) <= 0.9).sum(-1)  # tokens in each row's nucleus
    candidates = (probs >= thr[:, None]).sum(-1)
    assert bool((thr > 0).all()) and bool((candidates >= nucleus).all())
    # A search, not a sort: the candidate set is the nucleus plus a thin band below its edge.
    assert bool((candidates <= nucleus * 1.5 + 8).all()), (candidates - nucleus).max()
    assert float(nucleus_threshold(probs, 1.0).max()) == 0.0  # no nucleus: the whole row


def test_feature_cache_notices_an_image_rewritten_in_place(tmp_path, tiny_classifier):
    import os

    from PIL import Image

    from core.data import load_rgb
    from core.engine.train import compute_features

    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for i, p in enumerate(paths):
        Image.new("RGB", (32, 32), (40 * i, 200, 10)).save(p)
    cache = tmp_path / "cache"
    first = compute_features(tiny_classifier, paths, load_rgb, cache_dir=cache, show_progress=False)
    assert torch.equal(compute_features(tiny_classifier, paths, load_rgb, cache_dir=cache, show_progress=False), first)
    # The same path with new pixels (a dataset rebuilt in place) must be recomputed, not read from the cache.
    Image.new("RGB", (32, 32), (255, 0, 255)).save(paths[1])
    os.utime(paths[1], ns=(os.stat(paths[1]).st_atime_ns, os.stat(paths[1]).st_mtime_ns + 10**9))
    again = compute_features(tiny_classifier, paths, load_rgb, cache_dir=cache, show_progress=False)
    assert torch.equal(again[0], first[0]) and not torch.equal(again[1], first[1])
    assert len(list(cache.iterdir())) == 2


def test_sentences_stop_at_any_special_token(tiny_lm):
    # EOS and the tokenizer's other special tokens (a chat model's turn markers) end a sentence.
    assert tiny_lm.stop_token_ids == sorted({tiny_lm.eos_token_id, *tiny_lm.tokenizer.all_special_ids})
    assert tiny_lm.tokenizer.unk_token_id in tiny_lm.stop_token_ids
