"""Background jobs: start `texplain explain` (or `mitigate`) detached, read its progress, stop and resume it.

An explain job lives in its run folder, beside the run store it writes:

    job.json       the command, its process id and group, when it started (and stopped)
    explain.log    what the command printed (appended to on every start)
    manifest.json  written by the run itself: status and progress.done_images (in written shards),
                   progress.explained_images (moves per block, at most once a second) / total_images

A mitigate job lives where its results go (the test run's folder, or for a shipped run the user's overlay,
see core.store.user_file): mitigate-job.json, mitigate.log and the mitigation.json it writes when done.
A verify job (`texplain verify`, the causal test of a flag) lives where its causal.json goes, the same way:
verify-job.json and verify.log, whose "i/n images" lines are its progress.

The process is started in a session of its own (`start_new_session=True`), so it survives the page, the
browser and the dashboard that started it; a Stop sends SIGTERM to its whole process group. Shards are
written atomically, so a stopped job loses at most the shard in flight, and starting the same command
again resumes it (`resume`).

    job = start_explain(out="runs/my-run", dataset="data/wb", classifier="checkpoints/classifiers/erm",
                        translator="checkpoints/translators/erm", split="test", sentences=32)
    job_status("runs/my-run").state        # "starting", "running", "complete", "stopped", "failed", ...
    stop("runs/my-run"); resume("runs/my-run")
    estimate_seconds(200, 32, "cpu")       # before starting: from the rates earlier runs recorded
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from core import paths
from core.errors import JobError
from core.store import MANIFEST, MITIGATION_FILE, SHIPPED_OVERLAY, process_alive, user_file

JOB_FILE = "job.json"
LOG_FILE = "explain.log"
KINDS = {"explain": (JOB_FILE, LOG_FILE), "mitigate": ("mitigate-job.json", "mitigate.log"),
         "verify": ("verify-job.json", "verify.log")}  # kind -> files
# The states a job can be in, as `job_status` reports them.
STATES = ("starting", "running", "stopping", "complete", "damaged", "partial", "stopped", "failed", "unknown")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None
    return data if isinstance(data, dict) else None


def explain_command(dataset: str | Path, classifier: str | Path, translator: str | Path | None, out: str | Path,
                    split: str | None = None, sentences: int | str | None = None, lm: str | None = None,
                    name: str | None = None, python: str | None = None, extra: list[str] | None = None,
                    ray: str | None = None, workers: int | None = None, variation: str | None = None,
                    max_images: int | None = None) -> list[str]:
    """The argv of `texplain explain ...` for these settings.

    `ray` runs it on Ray Data: "local" (a Ray started for the run), "auto" or a cluster's HOST:PORT;
    `workers` is its number of explainer actors (None: one per GPU, or per spare CPU). `variation`: the
    Backgrounds Challenge folder to explain. `max_images`: a sample of at most that many images, stratified
    by group (`texplain explain --max-images`).
    """
    # No translator: explain finds one made for the classifier, or builds one by the fast path first.
    cmd = [python or sys.executable, "-m", "core", "explain", "--dataset", str(dataset), "--classifier",
           str(classifier), *(["--translator", str(translator)] if translator else []), "--out", str(out)]
    if variation:
        cmd += ["--variation", str(variation)]
    if split:
        cmd += ["--split", str(split)]
    if sentences is not None:
        cmd += ["--sentences", "auto" if str(sentences).lower() == "auto" else str(int(sentences))]
    if lm:
        cmd += ["--lm", str(lm)]
    if name:
        cmd += ["--name", str(name)]
    if max_images is not None:
        cmd += ["--max-images", str(int(max_images))]
    if ray:
        cmd += ["--ray"] + ([] if ray == "local" else [str(ray)])
        if workers:
            cmd += ["--workers", str(int(workers))]
    return cmd + list(extra or [])


# --- processes ---------------------------------------------------------------------------------------

def _alive(pid: int | None) -> bool:
    """Whether process `pid` exists and is not a zombie (reaping it when it is our finished child)."""
    if not pid:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # our own child that exited: reap it, it is gone
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child (started by an earlier dashboard process): ask the kernel below
    except OSError:
        return False

    return process_alive(pid)


def _same_process(job: dict) -> bool:
    """The recorded pid still runs the recorded command (and not another process that reused the pid)."""
    pid = job.get("pid")
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (not Linux): trust the pid
    if not any(cmdline):
        return True  # just forked, not yet exec'd (an empty cmdline): it is ours
    wanted = [a.encode() for a in job.get("command", [])[1:4]]  # "-m", "core", "explain"
    return all(w in cmdline for w in wanted)


@dataclass
class JobStatus:
    """What a job folder says about its job, read fresh from disk."""

    out: Path
    state: str  # one of STATES
    running: bool  # the process is alive
    pid: int | None = None
    command: list[str] = field(default_factory=list)
    done_images: int = 0
    total_images: int | None = None
    rate_images_per_s: float | None = None
    manifest_status: str | None = None
    started: str | None = None
    log_tail: str = ""
    message: str = ""  # a plain-English line about the state
    kind: str = "explain"  # one of KINDS

    @property
    def fraction(self) -> float:
        if not self.total_images:
            return 0.0
        return min(1.0, self.done_images / self.total_images)

    @property
    def eta_seconds(self) -> float | None:
        if not self.running or not self.rate_images_per_s or not self.total_images:
            return None
        return max(0.0, (self.total_images - self.done_images) / self.rate_images_per_s)

    @property
    def resumable(self) -> bool:
        return not self.running and self.state in ("damaged", "partial", "stopped", "failed") and bool(self.command)


def log_path(out: str | Path, kind: str = "explain") -> Path:
    """Where the `kind` job of folder `out` writes what its command prints."""
    return Path(out) / _files(kind)[1]


def log_tail(out: str | Path, lines: int = 15, kind: str = "explain") -> str:
    """The last `lines` lines of a job's log, with progress-bar carriage returns resolved."""
    path = log_path(out, kind)
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    rows = [row.rsplit("\r", 1)[-1] for row in text.splitlines()]
    return "\n".join(r for r in rows[-lines:])


def _files(kind: str) -> tuple[str, str]:
    if kind not in KINDS:
        raise JobError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    return KINDS[kind]


def _mitigation_manifest(out: Path, job: dict) -> dict:
    """A mitigate job's outcome in the shape of a run manifest: complete once it wrote its results."""
    try:
        written = _dt.datetime.fromtimestamp((out / MITIGATION_FILE).stat().st_mtime, _dt.timezone.utc)
    except OSError:
        return {}
    started = job.get("started")
    if started and written < _dt.datetime.fromisoformat(started):
        return {}  # results from an earlier job
    return {"status": "complete", "progress": {}}


def job_status(out: str | Path, kind: str = "explain") -> JobStatus:
    """The state of the `kind` job in folder `out` (works for folders without a job too: "unknown")."""
    out = Path(out)
    job_file, _ = _files(kind)
    job = _read_json(out / job_file) or {}
    manifest = (_read_json(out / MANIFEST) or {}) if kind == "explain" else \
        _verify_manifest(out) if kind == "verify" else _mitigation_manifest(out, job)
    progress = manifest.get("progress") or {}
    running = bool(job) and _same_process(job)
    mstatus = manifest.get("status")
    if running:
        state = "stopping" if job.get("stop_requested") else \
            ("running" if manifest or kind == "mitigate" else "starting")
    elif mstatus == "complete":
        state = "complete"
    elif job.get("stopped"):
        state = "stopped"
    elif mstatus in ("stopped", "partial"):
        state = mstatus
    elif job:
        state = "failed"  # the process is gone and the run did not say it finished
    else:
        state = mstatus if mstatus in STATES else "unknown"
    problem = None
    if state == "complete" and kind == "explain":  # finished once, but are its shards still all there?
        from core.store import Run, RunStoreError

        try:
            health = Run(out).health()
        except RunStoreError:
            health = None
        if health is not None and health.status == "damaged":
            state, problem = "damaged", health.describe()
    tail = log_tail(out, kind=kind)
    done, total = int(progress.get("done_images") or 0), progress.get("total_images")
    unreadable = int(progress.get("unreadable_images") or 0)
    if running:  # between shards: the images explained so far (those not yet in a shard are redone on resume)
        done = max(done, int(progress.get("explained_images") or 0))
    if kind == "verify":
        message = {"starting": "Loading the models…", "running": f"Testing: {done} of {total or '?'} images.",
                   "stopping": "Stopping…", "complete": "Finished: the result is shown on this page.",
                   "stopped": "Stopped by you; start it again to resume (finished images are kept).",
                   "failed": "The process ended without a result; see the log below."}.get(state, state)
    elif kind == "mitigate":
        message = {"starting": "Fitting: see the log for each step.", "running": "Fitting: see the log for each step.",
                   "complete": "Finished: the results are shown on this page.",
                   "failed": "The process ended without results; see the log below."}.get(state, state)
    else:
        message = {
            "starting": "Loading the models; progress appears once the first images are explained.",
            "running": f"Explaining: {done} of {total or '?'} images.",
            "stopping": "Stopping…",
            "complete": (f"Finished: {done - unreadable} images explained, {unreadable} unreadable (skipped)."
                         if unreadable else f"Finished: {done} images explained."),
            "damaged": f"Finished, then damaged: {problem}",
            "partial": f"Stopped part-way ({done} of {total or '?'} images); resume to finish.",
            "stopped": f"Stopped by you ({done} of {total or '?'} images); resume to finish.",
            "failed": "The process ended before the run finished; see the log below. Resume retries it.",
            "unknown": "No job was started from the dashboard for this folder.",
        }[state]
    return JobStatus(out=out, state=state, running=running, pid=job.get("pid"), command=list(job.get("command", [])),
                     done_images=done, total_images=total, rate_images_per_s=manifest.get("rate_images_per_s"),
                     manifest_status=mstatus, started=job.get("started"), log_tail=tail, message=message, kind=kind)


def start(out: str | Path, command: list[str], cwd: str | Path | None = None, env: dict | None = None,
          kind: str = "explain") -> JobStatus:
    """Run `command` detached, logging into `out`; refuses to start a second process for the same folder."""
    out = Path(out)
    job_file, log_file = _files(kind)
    if not command:
        raise JobError("command is empty")
    out.mkdir(parents=True, exist_ok=True)
    old = _read_json(out / job_file)
    if old and _same_process(old):
        raise JobError(f"a job is already running for {out} (process {old.get('pid')}); stop it first")
    environment = dict(os.environ if env is None else env)
    # `python -m core` must find this package wherever the dashboard was started from.
    environment["PYTHONPATH"] = os.pathsep.join([str(paths.ROOT), *filter(None, [environment.get("PYTHONPATH")])])
    environment.setdefault("PYTHONUNBUFFERED", "1")
    with open(out / log_file, "ab") as log:
        log.write(f"\n--- {_now()} started: {' '.join(command)}\n".encode())
        log.flush()
        proc = subprocess.Popen(command, cwd=str(cwd or paths.ROOT), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=environment, start_new_session=True)
    _write_json(out / job_file, {"pid": proc.pid, "pgid": proc.pid, "command": list(command),
                                 "cwd": str(cwd or paths.ROOT), "started": _now()})
    return job_status(out, kind)


def start_explain(out: str | Path, dataset: str | Path, classifier: str | Path, translator: str | Path | None,
                  split: str | None = None, sentences: int | str | None = None, lm: str | None = None,
                  name: str | None = None, extra: list[str] | None = None, ray: str | None = None,
                  workers: int | None = None, variation: str | None = None,
                  max_images: int | None = None) -> JobStatus:
    """Start `texplain explain` for these settings in the background (see the module docstring); `max_images`
    explains a sample of at most that many images, stratified by group."""
    command = explain_command(dataset, classifier, translator, Path(out).resolve(), split=split,
                              sentences=sentences, lm=lm, name=name, extra=extra, ray=ray, workers=workers,
                              variation=variation, max_images=max_images)
    return start(out, command)


def start_mitigate(run_val: str | Path, run_test: str | Path | None = None, method: str = "dfr",
                   groups: str = "all") -> JobStatus:
    """Start `texplain mitigate` in the background; its job lives where its results go (see above)."""
    argv = ["mitigate", str(Path(run_val).resolve())]
    if run_test:
        argv += ["--test-run", str(Path(run_test).resolve())]
    out = user_file(run_test or run_val, MITIGATION_FILE).parent
    return start(out, [sys.executable, "-m", "core", *argv, "--method", method, "--groups", groups],
                 kind="mitigate")


_VERIFY_PROGRESS = re.compile(r"(\d+)/(\d+) images")
_VERIFY_DONE = re.compile(r": [A-Z][A-Z ]+ on \d+ images\.|: nothing to test")


def _verify_manifest(out: Path) -> dict:
    """A verify job's progress and outcome in the shape of a run manifest, from its log since it last started: the
    CLI's "i/n images" progress and, when done, its verdict line."""
    try:
        with open(log_path(out, "verify"), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return {}
    text = text.rsplit("\n--- ", 1)[-1]  # this start's output only
    steps = _VERIFY_PROGRESS.findall(text)
    progress = {"done_images": int(steps[-1][0]), "total_images": int(steps[-1][1])} if steps else {}
    if _VERIFY_DONE.search(text):
        return {"status": "complete", "progress": progress}
    return {"progress": progress} if progress else {}


def start_verify(run: str | Path, class_name: str, word: str, predicted: str | None = None,
                 max_images: int | None = None) -> JobStatus:
    """Start `texplain verify` (the causal test of the flag `word` under `class_name`) in the background; its job
    lives where the run's causal.json goes (see above). One test at a time per run. A scene word (water, forest,
    ...) is tested as a scene swap (--fill swap --region scene): removing part of a scene says little."""
    from core.evaluation.causal import RESULT_FILE
    from core.evaluation.openworld import is_scene_word

    argv = ["verify", str(Path(run).resolve()), "--class", str(class_name), "--word", str(word)]
    if is_scene_word(str(word)):
        argv += ["--fill", "swap", "--region", "scene"]
    if predicted:
        argv += ["--predicted", str(predicted)]
    if max_images is not None:
        argv += ["--max-images", str(int(max_images))]
    return start(user_file(run, RESULT_FILE).parent, [sys.executable, "-m", "core", *argv], kind="verify")


def verify_target(status: JobStatus) -> dict:
    """{class, word, predicted, max_images} that a verify job tests, read from its command."""
    cmd, out = list(status.command), {"class": None, "word": None, "predicted": None, "max_images": None}
    for flag, key in (("--class", "class"), ("--word", "word"), ("--predicted", "predicted"),
                      ("--max-images", "max_images")):
        if flag in cmd[:-1]:
            out[key] = cmd[cmd.index(flag) + 1]
    if out["max_images"] is not None:
        out["max_images"] = int(out["max_images"])
    return out


def resume(out: str | Path) -> JobStatus:
    """Start the recorded command of `out` again; the run picks up at its first missing shard."""
    job = _read_json(Path(out) / JOB_FILE)
    if not job or not job.get("command"):
        raise JobError(f"{out} has no {JOB_FILE} with a command to resume; start it from the New run page "
                       "or run `texplain explain ... --out` with the same settings")
    return start(out, job["command"], cwd=job.get("cwd"))


def stop(out: str | Path, timeout: float = 10.0, kind: str = "explain") -> JobStatus:
    """SIGTERM the job's process group, then SIGKILL it after `timeout` seconds; the run stays resumable."""
    out = Path(out)
    job_file, _ = _files(kind)
    job = _read_json(out / job_file)
    if not job:
        raise JobError(f"{out} has no {job_file}: there is no job to stop")
    if _same_process(job):
        _write_json(out / job_file, {**job, "stop_requested": _now()})
        pgid = job.get("pgid") or job["pid"]
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + timeout
        while time.time() < deadline and _alive(job["pid"]):
            time.sleep(0.1)
        if _alive(job["pid"]):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = time.time() + 5
            while time.time() < deadline and _alive(job["pid"]):
                time.sleep(0.1)
    job = {k: v for k, v in (_read_json(out / job_file) or job).items() if k != "stop_requested"}
    job["stopped"] = _now()
    _write_json(out / job_file, job)
    manifest = _read_json(out / MANIFEST) if kind == "explain" else None
    if manifest and manifest.get("status") == "running":
        # Killed mid-run, the run could not say so itself.
        manifest.update(status="stopped", updated=_now())
        _write_json(out / MANIFEST, manifest)
    return job_status(out, kind)


def job_kind(out: str | Path) -> str | None:
    """The kind of job whose files a folder holds (explain before mitigate), or None."""
    return next((kind for kind, (job_file, _) in KINDS.items() if (Path(out) / job_file).exists()), None)


def list_jobs(root: str | Path, kinds: tuple[str, ...] = ("explain",)) -> list[JobStatus]:
    """Every job of `kinds` in a folder directly under `root` (or, for shipped runs, under its overlay
    root/.shipped/), newest first."""
    root = Path(root)
    folders = [p for base in (root, root / SHIPPED_OVERLAY) if base.is_dir() for p in base.iterdir() if p.is_dir()]
    found = [job_status(p, kind) for p in folders for kind in kinds if (p / _files(kind)[0]).exists()]
    return sorted(found, key=lambda s: s.started or "", reverse=True)


# --- how long a run will take ------------------------------------------------------------------------

# Sentences per second of an explain run end to end, when no earlier run here recorded a rate (docs/performance.md):
# two CPU cores, and one H200 at N=64 (55.6 images/s).
DEFAULT_SENTENCES_PER_S = {"cpu": 15.0, "cuda": 3500.0}
RATES_CONSIDERED = 10  # the newest runs of the same device whose rates are pooled (their median)


@dataclass
class Estimate:
    """How long explaining `n_images` should take, and what the figure rests on."""

    seconds: float
    sentences_per_s: float
    device: str  # "cpu" or "cuda"
    runs: list[str] = field(default_factory=list)  # the runs whose recorded rates it comes from ([]: the default)

    @property
    def basis(self) -> str:
        if not self.runs:
            return f"no earlier run on {self.device} here: a measured default of {self.sentences_per_s:g} sentences/s"
        return (f"{self.sentences_per_s:,.0f} sentences/s, the median of {len(self.runs)} earlier run(s) on "
                f"{self.device}")


def _device_kind(device: str) -> str:
    """"cpu" or "cuda" for a device setting ("auto" asks torch whether a GPU is present)."""
    device = str(device or "auto").lower()
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"


def _recorded_kind(label: str) -> str | None:
    """The device kind of a manifest's device label ("CPU (2 threads), float32", "CUDA (...)", "Ray: 2 GPU
    actor(s)"), or None."""
    label = str(label or "").lower()
    if label.startswith("cuda") or (label.startswith("ray") and "gpu" in label):
        return "cuda"
    if label.startswith("cpu") or (label.startswith("ray") and "cpu" in label):
        return "cpu"
    return None


# With sentences_per_image="auto", the share of max_sentences an image gets on average when no earlier auto run
# here says (bench.bench_adaptive: about 0.4 on the demo and ImageNet-9, docs/performance.md).
AUTO_SHARE_OF_MAX = 0.5


def expected_sentences(min_sentences: int, max_sentences: int, roots: dict | None = None) -> float:
    """Sentences per image an auto run should take: the mean of the newest auto runs here with the same
    bounds, else AUTO_SHARE_OF_MAX of max_sentences (never below min_sentences)."""
    from core.store import run_roots

    seen = []
    for root in (roots or run_roots()).values():
        root = Path(root)
        for folder in (p for p in root.iterdir() if p.is_dir()) if root.is_dir() else ():
            m = _read_json(folder / MANIFEST) or {}
            s, mean = m.get("settings") or {}, (m.get("sentences") or {}).get("mean")
            if (s.get("sentences_per_image") == "auto" and s.get("min_sentences") == min_sentences
                    and s.get("max_sentences") == max_sentences and isinstance(mean, (int, float))):
                seen.append((str(m.get("updated") or ""), float(mean)))
    if seen:
        return sorted(seen, reverse=True)[0][1]
    return max(float(min_sentences), AUTO_SHARE_OF_MAX * max_sentences)


def estimate(n_images: int, sentences_per_image: float, device: str = "auto",
             roots: dict | None = None) -> Estimate:
    """How long explaining `n_images` with `sentences_per_image` sentences each should take on `device`
    ("auto", "cpu", "cuda[:N]"): from the rates (`rate_images_per_s` x their sentences per image) that earlier
    runs of the same kind of device recorded in their manifests (the median of the newest), else a measured
    default (DEFAULT_SENTENCES_PER_S). Loading the models is not counted. `roots`: where runs are looked for
    (default: core.store.run_roots(), your runs and the shipped ones)."""
    from core.store import run_roots

    if n_images < 0 or not isinstance(sentences_per_image, (int, float)) or sentences_per_image < 1:
        raise JobError(f"n_images must be >= 0 and sentences_per_image >= 1, got {n_images} and "
                       f"{sentences_per_image}")
    kind = _device_kind(device)
    seen = []
    for root in (roots or run_roots()).values():
        root = Path(root)
        for folder in (p for p in root.iterdir() if p.is_dir()) if root.is_dir() else ():
            m = _read_json(folder / MANIFEST) or {}
            rate, per = m.get("rate_images_per_s"), (m.get("settings") or {}).get("sentences_per_image")
            if per == "auto":  # an adaptive run: its images' mean
                per = (m.get("sentences") or {}).get("mean")
            if (isinstance(rate, (int, float)) and rate > 0 and isinstance(per, (int, float)) and per > 0
                    and _recorded_kind(m.get("device")) == kind):
                seen.append((str(m.get("updated") or m.get("created") or ""), rate * per, folder.name))
    seen = sorted(seen, reverse=True)[:RATES_CONSIDERED]
    if seen:
        rates = sorted(r for _, r, _ in seen)
        mid = len(rates) // 2
        per_s = rates[mid] if len(rates) % 2 else (rates[mid - 1] + rates[mid]) / 2
    else:
        per_s = DEFAULT_SENTENCES_PER_S[kind]
    return Estimate(n_images * sentences_per_image / per_s, per_s, kind, [name for _, _, name in seen])


def estimate_seconds(n_images: int, sentences_per_image: float, device: str = "auto") -> float:
    """Seconds explaining `n_images` x `sentences_per_image` should take on `device` (see `estimate`)."""
    return estimate(n_images, sentences_per_image, device).seconds
