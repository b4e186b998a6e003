"""`texplain jobs ls|logs|stop`: the background jobs the dashboard (or `core.jobs`) started, and their logs."""
from __future__ import annotations

import time


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("jobs", help="background jobs: ls, logs RUN [--follow], stop RUN", description=__doc__)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("ls", help="every job under your runs folder: kind, state, progress",
                   description="Every explain job (in a run folder) and mitigate job (beside its results) under your "
                               "runs folder (TEXPLAIN_RUNS, default runs/), newest first.")
    logs = sub.add_parser("logs", help="a job's log", description="The end of a job's log; --follow keeps printing "
                                                                  "until the job ends.")
    logs.add_argument("folder", metavar="RUN", help="the job's folder (a run folder, or a run's name)")
    logs.add_argument("-n", "--lines", type=int, default=20, help="lines from the end (default %(default)s)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the job ends")
    stop = sub.add_parser("stop", help="stop a job (it stays resumable)",
                          description="Stop a running job: SIGTERM to its process group, SIGKILL after --timeout. "
                                      "Its finished shards are kept; the same command resumes it.")
    stop.add_argument("folder", metavar="RUN", help="the job's folder (a run folder, or a run's name)")
    stop.add_argument("--timeout", type=float, default=10.0, help="seconds before SIGKILL (default %(default)s)")
    p.set_defaults(func=run)


def _folder(value: str):
    """A job folder: the path as given, else a run of that name under your runs folder."""
    from pathlib import Path

    from core import paths
    from core.errors import JobError
    from core.jobs import job_kind

    for candidate in (Path(value), paths.user_runs() / value):
        if job_kind(candidate):
            return candidate, job_kind(candidate)
    raise JobError(f"no job at {value!r}: neither {value} nor {paths.user_runs() / value} holds a job.json or "
                   "mitigate-job.json (`texplain jobs ls` lists the jobs)")


def run(args) -> int:
    from core import jobs, paths

    if args.action == "ls":
        found = jobs.list_jobs(paths.user_runs(), kinds=tuple(jobs.KINDS))
        if not found:
            print(f"no jobs under {paths.user_runs()}")
        for j in found:
            progress = f"{j.done_images}/{j.total_images or '?'} images" if j.kind == "explain" else ""
            eta = f", about {j.eta_seconds / 60:.0f} min left" if j.eta_seconds else ""
            print(f"{j.state:<9} {j.kind:<8} {j.out}  {progress}{eta}  (started {j.started or '?'})")
        return 0
    folder, kind = _folder(args.folder)
    if args.action == "stop":
        status = jobs.stop(folder, timeout=args.timeout, kind=kind)
        print(f"{folder}: {status.state}. {status.message}")
        return 0
    print(jobs.log_tail(folder, lines=args.lines, kind=kind), flush=True)
    if args.follow:
        log = jobs.log_path(folder, kind)
        offset = log.stat().st_size if log.exists() else 0
        while True:
            running = jobs.job_status(folder, kind).running  # read before the log: its last lines are never missed
            with open(log, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            offset += len(chunk)
            lines = [row.rsplit("\r", 1)[-1] for row in chunk.decode("utf-8", errors="replace").splitlines()]
            if any(line.strip() for line in lines):
                print("\n".join(line for line in lines if line.strip()), flush=True)
            if not running:
                break
            time.sleep(2)
        status = jobs.job_status(folder, kind)
        print(f"-- job {status.state}: {status.message}")
    return 0
