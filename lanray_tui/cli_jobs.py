"""The job commands of ``lanray-tui``: submit, jobs, logs, cancel, retry.

They all talk to this node's agent; on a joined node the agent hands them on to the host,
which keeps the queue. ``submit`` uploads the working dir from this node first (with Ray's
own packaging, the only heavy import here, done only when there is something to upload).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core.errors import LanrayError

if TYPE_CHECKING:
    from .core.control import ControlClient
    from .core.jobs import JobView

PROG = "lanray-tui"
CANCEL_TIMEOUT_S = 30.0


def _add_submit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cpus", type=float, metavar="N", help="CPUs reserved for the job's driver")
    p.add_argument("--gpus", type=float, metavar="N", help="GPUs reserved for the job's driver")
    p.add_argument("--name", metavar="NAME", help="a name for the job (default: the script's)")
    p.add_argument(
        "--priority", type=int, metavar="P", help="higher runs first (default 0; ties: FIFO)"
    )
    p.add_argument(
        "--max-time",
        metavar="DURATION",
        help="how long the job may run (30m, 2h); a cluster ending sooner refuses it",
    )
    p.add_argument(
        "--working-dir",
        type=Path,
        metavar="DIR",
        help="directory uploaded with the job (default: the script's directory; a command: none)",
    )
    p.add_argument(
        "--env",
        action="append",
        metavar="NAME=VALUE",
        help="environment variable for the job (repeatable)",
    )
    p.add_argument(
        "--follow", action="store_true", help="stream the logs; exit 0 only if it succeeds"
    )


def add_parsers(sub: Any) -> None:
    """Add the job subcommands to the CLI's subparsers (``sub`` from add_subparsers)."""
    parser_class = getattr(sub, "_parser_class", argparse.ArgumentParser)
    p = sub.add_parser(
        "submit",
        help="queue a Python script or a command on the cluster",
        usage=f"{PROG} submit [OPTIONS] PATH [OPTIONS] [-- ARGS ...]\n"
        f"       {PROG} submit [OPTIONS] -- CMD [ARGS ...]",
        description="Queue a job. PATH is a Python script, run with the cluster's Python in "
        "an upload of its directory; '-- CMD ...' runs a command instead. Prints the job id "
        "as the last word of its first line.",
    )
    _add_submit_options(p)
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="PATH|-- CMD", help=argparse.SUPPRESS)
    p.set_defaults(_submit_options_parser=_options_parser(parser_class))

    p = sub.add_parser("jobs", help="list the cluster's jobs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("logs", help="print a job's log")
    p.add_argument("job", metavar="JOB", help="job id (see 'lanray-tui jobs')")
    p.add_argument("--follow", "-f", action="store_true", help="follow it until the job ends")
    p = sub.add_parser("metrics", help="a job's metrics: Ray Train/Tune reports, lanray-metric")
    p.add_argument("job", metavar="JOB", help="job id (see 'lanray-tui jobs')")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--metric", metavar="NAME", help="pick the best trial by this metric")
    p.add_argument("--mode", choices=["min", "max"], help="... its lowest or highest value")
    p = sub.add_parser("cancel", help="cancel a job (queued or running)")
    p.add_argument("job", metavar="JOB")
    p = sub.add_parser("retry", help="queue a failed, lost or cancelled job again")
    p.add_argument("job", metavar="JOB")


def _options_parser(parser_class: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = parser_class(prog=f"{PROG} submit", add_help=False)
    _add_submit_options(p)
    return p


# ----- helpers --------------------------------------------------------------------------------


def _paths(args: argparse.Namespace) -> Any:
    from .core import config

    return config.load(getattr(args, "config", None)).paths()


def _client(args: argparse.Namespace) -> ControlClient:
    from .core.control import ControlClient

    return ControlClient(_paths(args).socket)


def _parse_env(items: list[str] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise LanrayError(f"--env wants NAME=VALUE, not '{item}'")
        env[name] = value
    return env


def _split_submit(args: argparse.Namespace) -> tuple[list[str], str, list[str]]:
    """(command argv, script path, script args) from ``submit``'s raw arguments; options that
    follow PATH (before ``--``) are parsed into ``args``."""
    argv = list(args.argv or [])
    if not argv:
        raise LanrayError("submit needs a script PATH or '-- CMD ...'")
    if argv[0] == "--":
        if len(argv) == 1:
            raise LanrayError("submit -- needs a command after '--'")
        return argv[1:], "", []
    path, rest = argv[0], argv[1:]
    if path.startswith("-"):
        raise LanrayError(f"unknown option '{path}' (see '{PROG} submit --help')")
    opts, script_args = (
        (rest[: rest.index("--")], rest[rest.index("--") + 1 :]) if "--" in rest else (rest, [])
    )
    if opts:
        parser: argparse.ArgumentParser = args._submit_options_parser
        extra, unknown = parser.parse_known_args(opts)
        if unknown:
            raise LanrayError(
                f"unexpected '{unknown[0]}' after the script: put its arguments after '--'"
            )
        for key, value in vars(extra).items():
            if value is not None and value is not False:
                setattr(args, key, value)
    return [], path, script_args


def _build_spec(args: argparse.Namespace) -> dict[str, Any]:
    from .core.submit import Submission, build_spec

    command, script, script_args = _split_submit(args)
    sub = Submission(
        script=Path(script) if script else None,
        command=command,
        args=script_args,
        working_dir=args.working_dir,
        num_cpus=args.cpus,
        num_gpus=args.gpus,
        name=args.name,
        priority=args.priority,
        env=_parse_env(args.env),
        max_time_s=_max_time(args.max_time),
    )
    return build_spec(_paths(args), sub)


def _max_time(text: str | None) -> float | None:
    if text is None:
        return None
    from .core.lend_time import parse_for

    try:
        return parse_for(text)
    except LanrayError as exc:
        raise LanrayError(str(exc).replace("--for", "--max-time", 1)) from None


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "-"
    s = max(0, int(now - ts))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d"


def _duration(job: JobView, now: float) -> str:
    run = job.run_time(now)
    return "-" if run is None else f"{run:.1f}s"


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _ended_line(job: JobView) -> str:
    bits = []
    if job.exit_code is not None:
        bits.append(f"exit code {job.exit_code}")
    if job.started and job.ended:
        bits.append(f"{job.ended - job.started:.1f} s")
    if job.message:
        bits.append(job.message)
    detail = f" ({'; '.join(bits)})" if bits else ""
    return f"{job.state}{detail} {job.id}"


def _print_logs(args: argparse.Namespace, job_id: str, follow: bool) -> JobView | None:
    """Stream a job's log to stdout; returns the job as the stream's last item gave it.
    Ray's colour codes are stripped unless stdout is a terminal and NO_COLOR is unset."""
    from .core.ansi import strip_ansi, wants_plain
    from .core.protocol import JobLogsRequest

    plain = wants_plain(sys.stdout.isatty())
    last: JobView | None = None
    for item in _client(args).stream(JobLogsRequest(id=job_id, follow=follow)):
        if item.job is not None:
            last = item.job
        else:
            line = item.line or ""
            print(strip_ansi(line) if plain else line, flush=True)
    return last


# ----- commands -------------------------------------------------------------------------------


def submit(args: argparse.Namespace) -> int:
    from .core import texts
    from .core.protocol import SubmitRequest
    from .core.submit import submitter

    req = SubmitRequest.of(spec=_build_spec(args), submitter=submitter())
    job = _client(args).request(req, timeout=30.0)
    print(texts.queued(job), flush=True)
    if not args.follow:
        return 0
    final = _print_logs(args, job.id, follow=True)
    if final is None:
        raise LanrayError(f"lost track of job {job.id}: see '{PROG} jobs'")
    print(_ended_line(final), flush=True)
    return 0 if final.state == "SUCCEEDED" else 1


def jobs(args: argparse.Namespace) -> int:
    from .core import texts
    from .core.protocol import JobsRequest

    got = _client(args).request(JobsRequest(), timeout=15.0)
    if args.json:
        from .cli_results import job_outputs

        output = job_outputs(args)  # each job's folder in the cluster storage, and its size
        print(json.dumps({"jobs": [{**j.to_json(), **output(j.id)} for j in got.jobs]}, indent=2))
        return 0
    if not got.jobs:
        print(texts.NO_JOBS)
        return 0
    now = time.time()
    rows: list[tuple[str, ...]] = [
        ("ID", "NAME", "STATE", "PRIO", "AGE", "RUN TIME", "SUBMITTER", "MESSAGE")
    ]
    for j in got.jobs:
        rows.append(
            (
                j.id,
                j.name,
                j.state,
                str(j.priority),
                _ago(j.created, now),
                _duration(j, now),
                j.submitter,
                j.message[:80],
            )
        )
    _table(rows)
    for note in texts.job_notes(got):
        print(f"note: {note}")
    return 0


def logs(args: argparse.Namespace) -> int:
    final = _print_logs(args, args.job, follow=args.follow)
    if args.follow and final is not None and final.state in ("FAILED", "CANCELLED", "LOST"):
        print(f"{PROG}: job {final.id} {_ended_line(final)}", file=sys.stderr)
    return 0


def metrics(args: argparse.Namespace) -> int:
    """The series the job details plot: the job's Ray Train/Tune reports (one set per trial)
    and its ``lanray-metric`` lines."""
    from .core import metrics as lanray_metrics
    from .core.protocol import JobLogsRequest, MetricsRequest

    client = _client(args)
    req = MetricsRequest.of(id=args.job, metric=args.metric or "", mode=args.mode or "")
    got = client.request(req, timeout=30.0)
    lines = (i.line or "" for i in client.stream(JobLogsRequest(id=args.job, follow=False)))
    printed = lanray_metrics.parse(lines)
    if args.json:
        out = {"job": args.job, "trials": got.trials, "best": got.best, "printed": printed}
        print(json.dumps(out))
        return 0
    if not got.trials and not printed:
        print(f"job {args.job} reported no metrics yet")
        return 0
    best = got.best or {}
    for trial, series in got.trials.items():
        mark = " (best by {metric}, {mode})".format(**best) if best.get("trial") == trial else ""
        print(f"trial {trial}{mark}")
        for name, points in series.items():
            print(f"  {name}: {_points(points)}")
    if printed:
        print("printed (lanray-metric lines)")
        for name, points in printed.items():
            print(f"  {name}: {_points(points)}")
    return 0


def _points(points: list[float], shown: int = 8) -> str:
    tail = ", ".join(f"{x:.4g}" for x in points[-shown:])
    more = f"{len(points) - shown} more, then " if len(points) > shown else ""
    return f"{len(points)} points: {more}{tail}"


def cancel(args: argparse.Namespace) -> int:
    from .core import texts
    from .core.protocol import CancelRequest

    got = _client(args).request(CancelRequest.of(id=args.job), timeout=CANCEL_TIMEOUT_S)
    print(texts.cancelled(got))
    return 0


def retry(args: argparse.Namespace) -> int:
    from .core import texts
    from .core.protocol import RetryRequest

    got = _client(args).request(RetryRequest.of(id=args.job), timeout=15.0)
    print(texts.retried(got))
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "submit": submit,
    "jobs": jobs,
    "logs": logs,
    "metrics": metrics,
    "cancel": cancel,
    "retry": retry,
}
