"""Quick runs: a sample of a dataset stratified by group, progress that moves per block, and how long a run
should take before it starts (core.engine.pipeline, core.jobs, `texplain explain --max-images`)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch

from core import cli, jobs
from core.data import open_dataset
from core.engine.config import ExplainConfig
from core.engine.pipeline import explain_dataset
from core.errors import RunMismatchError
from core.models.translator import Translator, TranslatorConfig
from core.store import Run
from tests import tiny

CFG = ExplainConfig(sentences_per_image=2, max_new_tokens=3, shard_size=4, batch_rows=4, image_batch=2, seed=5,
                    device="cpu")


def _translator(clf, lm):
    cfg = TranslatorConfig(feature_dim=clf.feature_dim, hidden_size=lm.hidden_size, prefix_length=2,
                           classifier_identity=clf.identity, lm_identity=lm.identity)
    torch.manual_seed(0)
    return Translator(cfg).eval()


def test_a_sample_keeps_every_group_its_share_and_is_the_same_for_the_same_seed(tmp_path):
    ds = open_dataset(tiny.make_waterbirds(tmp_path / "wb", n_per_group=6)).split("test")  # 4 groups of 6
    sample = ds.sample(9, seed=1)
    counts = Counter(r.group for r in sample.records)
    assert len(sample) == 9 and set(counts) == {0, 1, 2, 3} and max(counts.values()) - min(counts.values()) <= 1
    order = [ds.records.index(r) for r in sample.records]
    assert order == sorted(order)  # the dataset's order: shards cut the same way on resume
    assert [r.image_id for r in ds.sample(9, seed=1)] == [r.image_id for r in sample]
    assert [r.image_id for r in ds.sample(9, seed=2)] != [r.image_id for r in sample]
    assert ds.sample(100, seed=1) is ds  # no more images than asked: all of them
    # A small group keeps one image even where its share rounds to none; without groups, classes are the strata.
    skewed = ds.sample(3, seed=0)
    assert len(skewed) == 3
    for r in ds.records:
        r.group = None
    assert Counter(r.label for r in ds.sample(4, seed=0)) == {0: 2, 1: 2}
    with pytest.raises(ValueError, match="max_images must be >= 1"):
        ds.sample(0)


def test_a_sampled_run_records_its_sample_resumes_it_and_refuses_another(tmp_path, tiny_lm, tiny_classifier,
                                                                           tiny_waterbirds):
    ds, tr = open_dataset(tiny_waterbirds), _translator(tiny_classifier, tiny_lm)
    part = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "r", CFG, split="test", max_images=6,
                           max_shards=1, show_progress=False)
    sample = part.manifest["dataset"]["sample"]
    assert sample == {"max_images": 6, "of": 16, "seed": 5, "stratified_by": "group"}
    assert part.manifest["progress"]["total_images"] == 6 and part.status == "partial"
    run = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "r", CFG, split="test", max_images=6,
                          show_progress=False)
    images = run.images()
    assert run.status == "complete" and len(images) == 6 and set(images["group"]) == {0, 1, 2, 3}
    expected = {r.image_id for r in ds.split("test").sample(6, seed=5)}
    assert set(images["image_id"]) == expected
    for other in (5, None):  # another sample, or every image, in the same folder: other data
        with pytest.raises(RunMismatchError, match="holds a run of a sample of 6 of 16 images"):
            explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "r", CFG, split="test", max_images=other,
                            show_progress=False)
    # As many images as the split has, or more: the whole split, recorded as no sample.
    full = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "all", CFG, split="test", max_images=99,
                           show_progress=False)
    assert "sample" not in full.manifest["dataset"] and len(full.images()) == 16


def test_progress_moves_per_block_between_shards_and_at_most_once_a_second(tmp_path, tiny_lm, tiny_classifier,
                                                                           tiny_waterbirds, monkeypatch):
    from core.engine import pipeline

    ds, tr = open_dataset(tiny_waterbirds), _translator(tiny_classifier, tiny_lm)
    cfg = ExplainConfig(**{**CFG.__dict__, "shard_size": 8})  # blocks of 2 images, shards of 8
    written: list[tuple[float, int]] = []
    update = Run.update_manifest

    def spy(self, **fields):
        if set(fields) == {"progress", "rate_images_per_s"}:  # the writer's progress notes
            written.append((time.time(), fields["progress"]["explained_images"]))
        return update(self, **fields)

    monkeypatch.setattr(Run, "update_manifest", spy)
    monkeypatch.setattr(pipeline._ShardWriter, "PROGRESS_EVERY_S", 0.0)
    run = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "every", cfg, split="test",
                          show_progress=False)
    seen = [n for _, n in written]
    assert any(n % 8 for n in seen), f"progress moved only per shard: {seen}"  # 2, 4, 6 before the first shard
    assert seen == sorted(seen) and seen[-1] == 16 and run.manifest["progress"]["explained_images"] == 16

    written.clear()
    monkeypatch.setattr(pipeline._ShardWriter, "PROGRESS_EVERY_S", 1.0)
    t0 = time.time()
    explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "throttled", cfg, split="test", show_progress=False)
    during = [t for t, _ in written[:-1]]  # the last is the final count, written when the stream ends
    assert len(during) <= time.time() - t0 + 1
    assert all(b - a >= 0.99 for a, b in zip(during, during[1:]))


@pytest.fixture
def sleeper():
    """A live process whose command line reads like an explain job's (what job_status checks)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "core", "explain"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_running_jobs_status_counts_the_images_explained_between_shards(tmp_path, sleeper):
    out = tmp_path / "run"
    out.mkdir()
    (out / "job.json").write_text(json.dumps({"pid": sleeper.pid, "pgid": sleeper.pid, "started": "2024-01-01",
                                              "command": [sys.executable, "-m", "core", "explain"]}))
    (out / "manifest.json").write_text(json.dumps({
        "status": "running", "rate_images_per_s": 2.0,
        "progress": {"done_images": 0, "explained_images": 10, "total_images": 40, "done_shards": []}}))
    status = jobs.job_status(out)
    assert status.state == "running" and status.done_images == 10 and status.eta_seconds == 15.0
    assert status.message == "Explaining: 10 of 40 images."


def test_start_explain_passes_a_sample_size_to_the_command(monkeypatch):
    started = {}
    monkeypatch.setattr(jobs, "start", lambda out, command, **kw: started.setdefault("command", command))
    jobs.start_explain("runs/quick", "data/wb", "clf", "tr", split="test", max_images=200)
    args = cli.build_parser().parse_args(started["command"][3:])  # after "python -m core"
    assert args.max_images == 200 and args.split == "test"
    assert "--max-images" not in jobs.explain_command("data", "clf", "tr", "out")


def _manifest(folder, device: str, rate: float, sentences: int, updated: str) -> None:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({
        "device": device, "rate_images_per_s": rate, "updated": updated,
        "settings": {"sentences_per_image": sentences}}))


def test_the_time_a_run_takes_comes_from_earlier_runs_rates_else_a_measured_default(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXPLAIN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TEXPLAIN_SHIPPED_RUNS", str(tmp_path / "shipped"))
    _manifest(tmp_path / "runs" / "a", "CPU (2 threads), float32", 1.0, 16, "2024-01-02")  # 16 sentences/s
    _manifest(tmp_path / "runs" / "b", "CPU (2 threads), float32", 0.25, 32, "2024-01-03")  # 8 sentences/s
    _manifest(tmp_path / "shipped" / "c", "Ray: 2 CPU actor(s)", 0.75, 32, "2024-01-01")  # 24 sentences/s
    _manifest(tmp_path / "runs" / "gpu", "CUDA (NVIDIA H200), bfloat16", 50.0, 64, "2024-01-04")
    assert jobs.estimate_seconds(100, 32, "cpu") == pytest.approx(100 * 32 / 16)  # the median of 8, 16, 24
    guess = jobs.estimate(100, 32, "cpu")
    assert sorted(guess.runs) == ["a", "b", "c"] and "median of 3 earlier run(s) on cpu" in guess.basis
    assert jobs.estimate_seconds(10, 64, "cuda:0") == pytest.approx(10 / 50)
    (tmp_path / "runs" / "gpu" / "manifest.json").unlink()
    default = jobs.estimate(10, 64, "cuda")
    assert default.runs == [] and default.seconds == pytest.approx(640 / jobs.DEFAULT_SENTENCES_PER_S["cuda"])
    assert "measured default" in default.basis


def test_explain_max_images_prints_an_estimate_and_runs_the_sample(tmp_path, capsys, monkeypatch):
    from tests.dashboard_fixtures import make_dataset, make_tiny_models

    monkeypatch.setenv("TEXPLAIN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TEXPLAIN_SHIPPED_RUNS", str(tmp_path / "shipped"))
    models = make_tiny_models(tmp_path / "models")
    data = make_dataset(tmp_path / "wb", per_group=3, size=16)
    argv = ["explain", "--dataset", str(data), "--classifier", models["classifier"], "--translator",
            models["translator"], "--lm", models["lm"], "--sentences", "2", "--max-new-tokens", "3", "--device",
            "cpu", "--out", str(tmp_path / "runs" / "quick"), "--max-images", "5"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "estimate: about 1 s for 5 images x 2 sentences" in out and "measured default" in out
    assert "complete, 5/5 images" in out
    assert Run.open(tmp_path / "runs" / "quick").manifest["dataset"]["sample"]["of"] == 12
    assert cli.main([*argv[:-1], "0"]) == 2 and "--max-images must be >= 1" in capsys.readouterr().err
