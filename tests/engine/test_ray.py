"""Scale-out on Ray Data (core.engine.ray), on a local Ray with 2 CPUs and the tiny models: the same
tables as one process, a killed worker retried by Ray, a killed driver resumed, clear errors, and no Ray
import for anyone who does not ask for it."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from core import cli
from core.data import open_dataset
from core.engine.config import ExplainConfig
from core.engine.pipeline import explain_dataset
from tests import tiny

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
KEYS = {"images": ["image_id"], "words": ["image_id", "word"], "sentences": ["image_id", "idx"]}
# Small enough for 2 busy cores; shards of 3 images make several shards and a last, short one.
CFG = ExplainConfig(sentences_per_image=4, max_new_tokens=5, shard_size=3, batch_rows=8, image_batch=2, seed=3,
                    device="cpu")


class DiesOnce(torch.nn.Module):
    """TinyNet that kills its own process (a real worker death, no exception for Ray to see) the first
    time any process runs it while `armed` exists; the rename lets exactly one process win."""

    def __init__(self, net: torch.nn.Module, armed: Path):
        super().__init__()
        self.body, self.fc, self.armed = net.body, net.fc, str(armed)

    def forward(self, x):
        try:
            os.rename(self.armed, self.armed + ".fired")
        except OSError:
            pass
        else:
            os._exit(1)
        return self.fc(self.body(x))


def tiny_models(lm_dir: Path, armed: Path | None = None):
    """The tiny classifier, LM and a translator for them, the same every call (also in a subprocess)."""
    from core.models.classifier import Preprocessing, from_module
    from core.models.lm import load_language_model
    from core.models.translator import Translator, TranslatorConfig

    lm = load_language_model(lm_dir)
    torch.manual_seed(0)
    net = tiny.TinyNet()
    clf = from_module(net if armed is None else DiesOnce(net, armed), ["landbird", "waterbird"],
                      preprocessing=Preprocessing(resize=32, crop=32), name="tinynet")
    clf.feature_dim  # noqa: B018  (measured now, before anything is armed)
    cfg = TranslatorConfig(feature_dim=clf.feature_dim, hidden_size=lm.hidden_size, prefix_length=2,
                           classifier_identity=clf.identity, lm_identity=lm.identity)
    torch.manual_seed(0)
    return clf, Translator(cfg).eval(), lm


def words():
    # Every word counts, no WordNet: each Ray worker process would spend seconds loading it.
    from core.engine.words import WordExtractor

    return WordExtractor(stop_words=(), lemmatize=False, vocabulary=None)


def tables(run) -> dict[str, pd.DataFrame]:
    return {t: run.table(t).sort_values(k).reset_index(drop=True) for t, k in KEYS.items()}


def assert_same_tables(a, b) -> None:
    # Floats to 1e-6: a float32 sum can differ in its last bit with the memory layout of its batch.
    for t in KEYS:
        pd.testing.assert_frame_equal(a[t], b[t], check_exact=False, rtol=1e-6)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_lm_dir):
    """A dataset with one unreadable image, the tiny LM on disk, and the single-process run's tables."""
    root = tmp_path_factory.mktemp("ray_world")
    lm_dir = tiny_lm_dir
    ds = open_dataset(tiny.make_waterbirds(root / "wb", n_per_group=2))
    ds.split("test").records[1].path.write_bytes(b"\x89PNG broken")
    clf, tr, lm = tiny_models(lm_dir)
    single = explain_dataset(ds, clf, tr, lm, root / "single", CFG, split="test", show_progress=False,
                             extractor=words())
    assert single.status == "complete"
    return {"root": root, "lm_dir": lm_dir, "dataset": ds, "tables": tables(single)}


def ray_options(**kw):
    from core.engine.ray import RayPlacement

    # Two CPU actors on 2 CPUs: half a CPU each leaves one for decoding and word counting.
    return RayPlacement(**{"workers": 2, "cpus_per_worker": 0.5, **kw})


def test_a_ray_run_writes_the_single_process_tables(local_ray, world, tmp_path):
    clf, tr, lm = tiny_models(world["lm_dir"])
    seen = []
    run = explain_dataset(world["dataset"], clf, tr, lm, tmp_path / "ray", CFG, split="test", show_progress=False,
                          extractor=words(), placement=ray_options(),
                          progress=lambda done, total, info: seen.append((done, total)))
    assert run.status == "complete" and run.health().ok
    assert_same_tables(world["tables"], tables(run))
    assert run.images()["error"].notna().sum() == 1  # the unreadable image, recorded as in one process
    m = run.manifest
    # The same run folder as one process: settings match (a run may resume in either placement), plus where it ran.
    assert m["settings"] == {**CFG.sampling_settings(), "dtype": "float32"}
    assert m["placement"]["workers"] == 2 and m["placement"]["ray"] == local_ray
    assert m["progress"]["done_images"] == m["progress"]["total_images"] == 8
    assert m["progress"]["done_shards"] == [0, 1, 2]
    assert seen[-1] == (8, 8) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert m["rate_images_per_s"] > 0 and m["throughput"]["ray_workers"] == 2


def test_a_killed_worker_is_retried_and_the_tables_are_complete(local_ray, world, tmp_path):
    armed = tmp_path / "armed"
    clf, tr, lm = tiny_models(world["lm_dir"], armed=armed)
    armed.touch()
    run = explain_dataset(world["dataset"], clf, tr, lm, tmp_path / "ray", CFG, split="test", show_progress=False,
                          extractor=words(), placement=ray_options())
    assert not armed.exists() and Path(f"{armed}.fired").exists(), "no worker died: the test proved nothing"
    assert run.status == "complete"
    assert_same_tables(world["tables"], tables(run))


DRIVER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
import core
from core.data import open_dataset
from core.engine.pipeline import explain_dataset
from tests.engine.test_ray import CFG, ray_options, tiny_models, words

clf, tr, lm = tiny_models(Path({lm!r}))
ds = open_dataset({data!r})

def stall(done, total, info):
    print("shard", info["shard"], flush=True)
    time.sleep(120)  # the window in which the test kills this driver

explain_dataset(ds, clf, tr, lm, {out!r}, CFG, split="test", show_progress=False, extractor=words(),
                placement=ray_options(address={address!r}), progress=stall)
"""


def test_a_killed_driver_leaves_a_run_that_resumes_to_the_same_tables(local_ray, world, tmp_path):
    out = tmp_path / "ray"
    script = DRIVER.format(root=str(ROOT), lm=str(world["lm_dir"]), data=str(world["dataset"].root), out=str(out),
                           address=local_ray)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env, start_new_session=True)
    try:
        line = ""
        deadline = time.time() + 120
        while not line.startswith("shard") and time.time() < deadline and driver.poll() is None:
            line = driver.stdout.readline()
        assert line.startswith("shard"), f"the driver wrote no shard: {driver.stdout.read() if driver.poll() else ''}"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running" and len(manifest["progress"]["done_shards"]) == 1
    first = manifest["progress"]["done_shards"][0]
    written = (out / "words" / f"shard-{first:05d}.parquet").stat().st_mtime_ns

    clf, tr, lm = tiny_models(world["lm_dir"])
    resumed = explain_dataset(world["dataset"], clf, tr, lm, out, CFG, split="test", show_progress=False,
                              extractor=words(), placement=ray_options())
    assert resumed.status == "complete"
    assert (out / "words" / f"shard-{first:05d}.parquet").stat().st_mtime_ns == written, "a done shard was redone"
    assert_same_tables(world["tables"], tables(resumed))


def _as_in_a_terminal():
    # A child inherits ignored and blocked signals. In a full suite the pytest process had SIGINT ignored or
    # blocked by the time this test ran (the driver sat out Ctrl-C; alone it stopped at once), which a user's
    # shell never does: give the driver the terminal's SIGINT, so Python turns it into KeyboardInterrupt.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_the_driver_shuts_ray_down_and_leaves_a_resumable_run(local_ray, world, tmp_path):
    out = tmp_path / "ray"
    script = DRIVER.format(root=str(ROOT), lm=str(world["lm_dir"]), data=str(world["dataset"].root), out=str(out),
                           address=local_ray)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env, start_new_session=True, preexec_fn=_as_in_a_terminal)
    try:
        line = ""
        deadline = time.time() + 120
        while not line.startswith("shard") and time.time() < deadline and driver.poll() is None:
            line = driver.stdout.readline()
        assert line.startswith("shard"), f"the driver wrote no shard: {driver.stdout.read() if driver.poll() else ''}"
        driver.send_signal(signal.SIGINT)  # what Ctrl-C sends
        t0 = time.time()
        rest, _ = driver.communicate(timeout=60)
        assert time.time() - t0 < 60
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert "interrupted: shutting Ray down" in rest, rest[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and not (out / "run.lock").exists()
    assert manifest["progress"]["explained_images"] == manifest["progress"]["done_images"]
    clf, tr, lm = tiny_models(world["lm_dir"])
    resumed = explain_dataset(world["dataset"], clf, tr, lm, out, CFG, split="test", show_progress=False,
                              extractor=words(), placement=ray_options())
    assert resumed.status == "complete"
    assert_same_tables(world["tables"], tables(resumed))


def test_the_cli_on_ray_loads_the_models_in_each_actor_and_matches_one_process(local_ray, world, tmp_path, capsys):
    from tests.dashboard_fixtures import make_tiny_models

    models = make_tiny_models(tmp_path / "models")  # checkpoint folders: what each actor loads itself
    argv = ["explain", "--dataset", str(world["dataset"].root), "--split", "test", "--classifier",
            models["classifier"], "--translator", models["translator"], "--lm", models["lm"], "--sentences", "4",
            "--max-new-tokens", "5", "--shard-size", "3", "--seed", "3", "--device", "cpu"]
    assert cli.main([*argv, "--out", str(tmp_path / "one")]) == 0
    assert cli.main([*argv, "--out", str(tmp_path / "ray"), "--ray", local_ray, "--workers", "2",
                     "--cpus-per-worker", "0.5"]) == 0
    assert "complete, 7 of 8 images explained, 1 unreadable" in capsys.readouterr().out  # the broken image
    from core.store import Run

    assert_same_tables(tables(Run.open(tmp_path / "one")), tables(Run.open(tmp_path / "ray")))


def test_an_unreachable_ray_address_is_one_clear_line_and_exit_2(capsys, tmp_path):
    code = cli.main(["explain", "--dataset", str(tmp_path), "--classifier", "x", "--translator", "y",
                     "--out", str(tmp_path / "run"), "--ray", "127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == cli.USER_ERROR_EXIT
    assert err.startswith("error: cannot reach a Ray cluster at 127.0.0.1:9") and "ray start --head" in err
    assert cli.main(["explain", "--dataset", "d", "--classifier", "x", "--translator", "y", "--out", "o",
                     "--ray", "head:port"]) == cli.USER_ERROR_EXIT
    assert "is not a Ray address" in capsys.readouterr().err


def test_more_actors_than_the_cluster_has_cpus_for_is_refused(local_ray, world, tmp_path):
    from core.errors import RayClusterError

    clf, tr, lm = tiny_models(world["lm_dir"])
    with pytest.raises(RayClusterError, match="leaving none for decoding"):
        explain_dataset(world["dataset"], clf, tr, lm, tmp_path / "r", CFG, split="test", show_progress=False,
                        placement=ray_options(workers=2, cpus_per_worker=1))


def test_core_and_the_dashboard_start_without_importing_ray():
    # Ray is a runtime dependency for `--ray` only: importing it costs seconds the dashboard should not pay.
    code = """
import sys
sys.path.insert(0, {root!r})
import core.cli, core.engine.pipeline, core.jobs, dashboard.backend, core.engine.ray, core.cli.commands.explain
core.cli.build_parser()
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({page!r}, default_timeout=120).run()
assert not at.exception, at.exception
loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
assert not loaded, loaded
print("ok")
""".format(root=str(ROOT), page=str(next((ROOT / "dashboard" / "pages").glob("*_New_run.py"))))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_a_dashboard_job_runs_the_same_command_with_ray():
    from core import jobs

    cmd = jobs.explain_command("data", "clf", "tr", "out", ray="auto", workers=3)
    args = cli.build_parser().parse_args(cmd[3:])  # after "python -m core"
    assert (args.ray, args.workers) == ("auto", 3)
    args = cli.build_parser().parse_args(jobs.explain_command("data", "clf", "tr", "out", ray="local")[3:])
    assert args.ray == "local" and args.workers is None  # a Ray started for the run, actors sized to it
    assert cli.build_parser().parse_args(jobs.explain_command("data", "clf", "tr", "out")[3:]).ray is None
