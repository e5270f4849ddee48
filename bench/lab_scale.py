"""Issue 21 benchmark: a whole computer lab on one machine.

In a 16-node lab (real Ray on every node):
  a. the storm: n1 hosts, makes one code for 15 machines, and 15 joins start at the same
     instant; `join_storm_s` is the time until n1's `status` lists all 16 ALIVE, and
     `join_storm_alive` how many are ALIVE then (or at the limit);
  b. with 16 nodes heartbeating: the host agent's CPU (over 30 s) and RSS, the machine's CPU
     by process kind over 20 s (`cpu_by_kind_16`: the lanray-tui agents, each of Ray's own
     processes, Ray's workers; percent of one core, and the load), `status --json` on n1
     (the whole command, median of 5), and the TUI on n1 (headless, 80x24 and 200x50):
     the worst key over scrolling, sorting and filtering the nodes pane, each key's latency
     the median of its presses (5 rounds; the slowest single press is reported too), once
     the machine settled after the storm;
  c. `bare_join_storm_alive`: the same storm with bare `ray start --address` (token and TLS
     as lanray-tui gives them), counted after the same limit.
Then, without Ray on the other nodes (simulated):
  d. 300 simulated nodes: one process on n2 speaks the real cluster API (mutual TLS, one
     kept connection each, a heartbeat a second each, certificates from n1's CA as a real
     member's) to n1's agent for 60 s; `sim300_agent_cpu_pct` is the host agent's CPU, and
     `sim300_heartbeat_p99_ms` the 99th percentile of a beat's round trip.

    python bench/lab_scale.py [--nodes 16] [--limit 300] [--skip-bare] [--storm-only]
                              [--sim-only] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from _common import (
    LANRAY,
    ROOT,
    bench_lab,
    checked,
    die,
    last_json,
    median,
    on_node,
    settle,
)

INSIDE = os.path.abspath(__file__)
SIM_SECONDS = 60
ROUNDS = 5  # each key of the TUI's sequence is pressed this many times (or more)


# ----- the 300 simulated nodes (runs inside n2) ----------------------------------------------


async def _simulate(host: str, port: int, tls_dir: str, count: int, seconds: float) -> None:
    from lanray_tui.core import cluster_api
    from lanray_tui.core import protocol as p
    from lanray_tui.core.cluster_ca import NodeTls

    ctx = NodeTls(Path(tls_dir)).client_context()
    rtts: list[float] = []
    failures = 0

    async def node(i: int) -> None:
        nonlocal failures
        link = cluster_api.Link(lambda: (host, port), lambda: ctx)
        ip = f"10.250.{i // 250}.{i % 250 + 1}"
        await asyncio.sleep(i / count)  # spread over the first second, as real nodes are
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.monotonic()
            beat = p.HeartbeatRequest(
                node_ip=ip, name=f"sim-{i}", state="ready", lending={"state": "lending"}
            )
            try:
                await link.ask(beat, 5.0)
                rtts.append(time.monotonic() - t0)
            except (OSError, asyncio.TimeoutError, ValueError) as exc:
                failures += 1
                if failures < 3:
                    print(f"sim-{i}: {type(exc).__name__}: {exc}", file=sys.stderr)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
        link.close()

    await asyncio.gather(*(node(i) for i in range(count)))
    rtts.sort()
    p99 = rtts[min(len(rtts) - 1, int(0.99 * len(rtts)))] if rtts else None
    print(json.dumps({"beats": len(rtts), "failures": failures,
                      "p50_ms": rtts[len(rtts) // 2] * 1000 if rtts else None,
                      "p99_ms": p99 * 1000 if p99 is not None else None}))  # fmt: skip


# ----- the TUI on n1 (runs inside n1) --------------------------------------------------------


async def _tui_keys(width: int, height: int, nodes: int) -> None:
    from lanray_tui.app import LanrayApp
    from lanray_tui.widgets.node_table import NodeTable

    app = LanrayApp()
    latencies: dict[str, list[float]] = {}
    async with app.run_test(size=(width, height)) as pilot:
        deadline = time.monotonic() + 60
        table = None
        while time.monotonic() < deadline:
            await pilot.pause(0.5)
            found = app.screen.query(NodeTable)
            if found and found.first().row_count >= nodes:
                table = found.first()
                break
        if table is None:
            print(json.dumps({"error": f"the nodes pane did not show {nodes} nodes in 60 s"}))
            return
        table.focus()
        keys = ["down"] * 4 + ["up"] * 2 + ["pagedown", "pageup", "end", "home"]
        keys += ["s", "s", "s", "s"]  # every order: problems first, state, load, name
        keys += ["slash", "n", "1", "enter", "slash", "escape"]  # a filter, then none
        seen: dict[str, Any] = {}
        for _ in range(ROUNDS):
            for key in keys:
                # From the key event until the app and every widget on the screen handled it
                # and all it queued (a redraw, a new order, the filter), and the screen is
                # painted: what a terminal's key costs. Not Pilot.press, which also sleeps
                # until this process looks idle (three waits of tens of ms): the harness's
                # time, not the app's.
                await pilot.pause(0.2)  # the last key's aftermath (a status poll) settles
                t0 = time.perf_counter()
                app._driver.send_message(_key_event(key))  # type: ignore[union-attr]
                for _ in range(3):  # a key's effects cascade: an action, a Changed, a redraw
                    await pilot._wait_for_screen()
                app.screen._on_timer_update()
                latencies.setdefault(key, []).append((time.perf_counter() - t0) * 1000)
                if key == "enter":  # the keys did what they say: a filter 'n1', then orders
                    seen = {"filter": table.filter_text, "shown": len(table._shown)}
        sort_filter = [k for k in ("s", "slash") if k in _bindings(table)]
        seen["sort_after_4_s"] = table.sort_by
        seen["filter_after_escape"] = table.filter_text
    # Each key's latency is its median over the rounds (every key is pressed ROUNDS times or
    # more): the worst key is the one slowest as a rule, not one press that the 16 nodes'
    # Ray kept off the CPU for a moment; the slowest single press is reported beside it.
    by_key = {k: round(median(v), 1) for k, v in latencies.items()}
    every = sorted(ms for v in latencies.values() for ms in v)
    worst = max(by_key.values())
    print(json.dumps({"worst_ms": worst, "by_key": by_key, "presses": len(every),
                      "p95_press_ms": round(every[int(0.95 * (len(every) - 1))], 1),
                      "slowest_press_ms": round(every[-1], 1), "sort_filter_keys": sort_filter,
                      "checks": seen}))  # fmt: skip


def _key_event(key: str) -> Any:
    """The event a terminal's key makes, as Textual's own Pilot builds it."""
    import unicodedata

    from textual import events
    from textual.keys import REPLACED_KEYS, _get_unicode_name_from_key

    try:
        char = unicodedata.lookup(_get_unicode_name_from_key(REPLACED_KEYS.get(key, key)))
    except KeyError:
        char = key if len(key) == 1 else None
    return events.Key(key, char)


def _bindings(widget: Any) -> set[str]:
    keys: set[str] = set()
    for node in [widget, *widget.ancestors_with_self]:
        for b in getattr(node, "BINDINGS", []):
            key = b.key if hasattr(b, "key") else b[0]
            keys.update(k.strip() for k in key.split(","))
    return keys


# ----- measuring from outside ------------------------------------------------------------------


def agent_process(lab: Any, node: str) -> psutil.Process:
    """The agent of lab node ``node``, seen from this namespace: the process in the node's
    PID namespace whose PID there is the one its ``status`` gives (a detached agent is a
    fork of the command that started it, so its command line is that command's)."""
    p = on_node(lab, node, [*LANRAY, "status", "--json"], timeout=60)
    if p.returncode != 0:
        die(f"no agent found on {node}: {agent_line(lab, node)}")
    inner = int(json.loads(p.stdout)["agent"]["pid"])
    want = os.stat(f"/proc/{lab.node(node).init_pid}/ns/pid")
    for proc in psutil.process_iter():
        try:
            st = os.stat(f"/proc/{proc.pid}/ns/pid")
            if (st.st_dev, st.st_ino) != (want.st_dev, want.st_ino):
                continue
            with open(f"/proc/{proc.pid}/status") as f:
                nspid = next(line for line in f if line.startswith("NSpid:")).split()
        except (OSError, StopIteration):
            continue
        if int(nspid[-1]) == inner:
            return proc
    die(f"the agent of {node} (pid {inner} there) is not to be found from here")
    raise AssertionError


def cpu_pct(proc: psutil.Process, seconds: float) -> float:
    t0, c0 = time.monotonic(), sum(proc.cpu_times()[:2])
    time.sleep(seconds)
    return 100.0 * (sum(proc.cpu_times()[:2]) - c0) / (time.monotonic() - t0)


def kind(proc: psutil.Process) -> str:
    """What a process of the lab is, for the CPU breakdown: a lanray-tui agent, one of
    Ray's own processes by its name, or something else."""
    try:
        cmd = " ".join(proc.cmdline())
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if "lanray_tui" in cmd and (" host " in f"{cmd} " or " join " in f"{cmd} "):
        return "lanray-tui agent"
    if "lanray_tui.adapters.ray_gcs serve" in cmd:
        return "lanray-tui GCS helper"
    ray_parts = ("gcs_server", "raylet", "dashboard/agent.py", "runtime_env/agent",
                 "log_monitor", "dashboard.py", "monitor.py", "ray.util.client.server")  # fmt: skip
    for part in ray_parts:
        if part in cmd:
            return f"ray {part.split('/')[-1].removesuffix('.py')}"
    if name.startswith("ray::") or "default_worker.py" in cmd:
        return "ray workers"
    return "other"


def cpu_by_kind(seconds: float) -> dict[str, float]:
    """Every process's CPU over ``seconds``, summed by :func:`kind` (percent of one core),
    with the load average at the end: where this machine's CPU goes."""
    before = {}
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            before[proc.pid] = (proc, sum(proc.cpu_times()[:2]))
    t0 = time.monotonic()
    time.sleep(seconds)
    took = time.monotonic() - t0
    out: dict[str, float] = {}
    for proc, c0 in before.values():
        try:
            used = sum(proc.cpu_times()[:2]) - c0
        except psutil.Error:
            continue
        k = kind(proc)
        out[k] = out.get(k, 0.0) + 100.0 * used / took
    ranked = dict(sorted(((k, round(v, 1)) for k, v in out.items()), key=lambda kv: -kv[1]))
    return {**ranked, "load_1min": round(os.getloadavg()[0], 2)}


def alive_count(lab: Any) -> int:
    """ALIVE machines as n1's status lists them; 0 while it does not answer in time (a
    storm on 2 cores can keep the host busy past a minute)."""
    try:
        p = on_node(lab, "n1", [*LANRAY, "status", "--json"], timeout=60)
    except subprocess.TimeoutExpired:
        return 0
    if p.returncode != 0:
        return 0
    rows = json.loads(p.stdout)["nodes"]
    return len({n["ip"] for n in rows if n["state"] == "ALIVE"})


def storm(lab: Any, joiners: list[str], argv_for: Any, limit: float) -> tuple[float, int]:
    """Start every joiner at once; seconds until all are ALIVE (or the limit) and how many."""
    from lanray_tui.core import lab as labmod

    procs = []
    outs = []
    t0 = time.monotonic()
    for n in joiners:
        env = {k: v for k, v in os.environ.items() if k != "LANRAY_NO_LAN"}
        cmd = labmod.exec_argv(lab, n, argv_for(n), cwd=str(ROOT), env=env)
        out = open(Path(lab.node(n).root) / "storm-join.out", "w+")  # noqa: SIM115
        outs.append(out)
        procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL))  # fmt: skip
    want = len(joiners) + 1
    alive = 0
    while time.monotonic() - t0 < limit:
        alive = alive_count(lab)
        if alive >= want:
            break
        time.sleep(2.0)
    took = time.monotonic() - t0
    for p in procs:
        if p.poll() is None:
            p.terminate()
    if alive < want:
        for n, out in zip(joiners, outs, strict=True):
            out.seek(0)
            said = out.read().strip().splitlines()[-1:] or ["(nothing)"]
            print(f"  {n}: join said {said[0][:160]!r}; {agent_line(lab, n)}", file=sys.stderr)
    for out in outs:
        out.close()
    return round(took, 1), alive


def sim300(lab: Any, head: str, agent: psutil.Process) -> dict[str, Any]:
    """d.: 300 simulated nodes beat to n1's agent from n2 for SIM_SECONDS."""
    out: dict[str, Any] = {}
    tls_dir = Path(lab.node("n1").root).parent / "sim-tls"
    from lanray_tui.core.cluster_ca import NodeTls

    host_tls = NodeTls(Path(lab.node("n1").env()["XDG_DATA_HOME"]) / "lanray-tui" / "tls")
    sim = NodeTls(tls_dir)
    sim.store(host_tls.sign(sim.request("sim", [lab.node("n2").address])),
              host_tls.ca_cert.read_bytes())  # fmt: skip
    from lanray_tui.core import config

    api_port = str(config.load()["cluster.api_port"])
    gen = subprocess.Popen(
        __import__("lanray_tui.core.lab", fromlist=["exec_argv"]).exec_argv(
            lab, "n2",
            [sys.executable, INSIDE, "--sim-inside", head, api_port, str(tls_dir), "300",
             str(SIM_SECONDS)],
            cwd=str(ROOT), env={k: v for k, v in os.environ.items() if k != "LANRAY_NO_LAN"},
        ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(10)  # connections made, beats at a steady rate
    out["sim300_agent_cpu_pct"] = round(cpu_pct(agent, SIM_SECONDS - 20), 2)
    t0 = time.perf_counter()
    checked(on_node(lab, "n1", [*LANRAY, "status", "--json"]), "status")
    out["sim300_status_json_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    stdout, stderr = gen.communicate(timeout=SIM_SECONDS + 60)
    sim_out = last_json(stdout) if stdout.strip() else {"error": stderr[-300:]}
    out["sim300_heartbeat_p99_ms"] = sim_out.get("p99_ms")
    out["sim300"] = {**sim_out, "note": "simulated nodes: no Ray on them"}
    return out


def agent_line(lab: Any, node: str) -> str:
    """What ``node``'s agent says of itself now, or the end of its log: for a failed storm."""
    p = on_node(lab, node, [*LANRAY, "status", "--json"], timeout=60)
    if p.returncode == 0:
        agent = json.loads(p.stdout).get("agent", {})
        return f"agent {agent.get('state')}: {str(agent.get('detail', ''))[:160]}"
    logfile = Path(lab.node(node).root) / "home/.local/state/lanray-tui/agent.log"
    tail = logfile.read_text().strip().splitlines()[-1:] if logfile.exists() else ["no log"]
    return f"no agent ({(p.stderr or p.stdout).strip()[-120:]}); its log ends {tail[0][:200]!r}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--limit", type=float, default=300.0, help="seconds a storm may take")
    ap.add_argument("--skip-bare", action="store_true", help="no bare `ray start` storm")
    ap.add_argument("--storm-only", action="store_true", help="the storm, then stop")
    ap.add_argument("--sim-only", action="store_true",
                    help="only d. (2 nodes: n1 hosts, n2 runs the simulated nodes)")  # fmt: skip
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sim-inside", nargs=5, metavar=("HOST", "PORT", "TLS", "N", "S"),
                    help=argparse.SUPPRESS)  # fmt: skip
    ap.add_argument("--tui-inside", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sim_inside:
        host, port, tls, n, s = args.sim_inside
        asyncio.run(_simulate(host, int(port), tls, int(n), float(s)))
        return 0
    if args.tui_inside:
        asyncio.run(_tui_keys(*args.tui_inside))
        return 0

    out: dict[str, Any] = {"nodes": args.nodes}
    names = [f"n{i}" for i in range(1, args.nodes + 1)]
    if args.sim_only:
        with bench_lab("scale", 2) as lab:
            head = lab.node("n1").address
            checked(on_node(lab, "n1", [*LANRAY, "host", "--headless", "--detach"]), "host")
            out = {"nodes": 2, **sim300(lab, head, agent_process(lab, "n1"))}
            on_node(lab, "n1", [*LANRAY, "leave"], timeout=120)
        print(json.dumps(out) if args.json else out)
        return 0
    with bench_lab("scale", args.nodes) as lab:
        head = lab.node("n1").address
        checked(on_node(lab, "n1", [*LANRAY, "host", "--headless", "--detach"]), "host")
        code = checked(on_node(lab, "n1", [*LANRAY, "code", "--uses", "30", "--minutes", "30"]),
                       "code").split()[-1]  # fmt: skip
        join = [*LANRAY, "join", head, "--code", code, "--headless", "--detach"]
        out["join_storm_s"], out["join_storm_alive"] = storm(
            lab, names[1:], lambda n: join, args.limit
        )
        print(f"storm: {out['join_storm_alive']} ALIVE after {out['join_storm_s']} s",
              file=sys.stderr)  # fmt: skip
        if args.storm_only:
            print(json.dumps(out) if args.json else out)
            return 0

        agent = agent_process(lab, "n1")
        time.sleep(10)  # the joins' own start-up settles
        out["host_agent_cpu_pct_16"] = round(cpu_pct(agent, 30.0), 2)
        out["cpu_by_kind_16"] = cpu_by_kind(20.0)  # the whole machine, idle with 16 nodes
        out["host_agent_rss_mb_16"] = round(agent.memory_info().rss / 2**20, 1)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            checked(on_node(lab, "n1", [*LANRAY, "status", "--json"]), "status")
            times.append((time.perf_counter() - t0) * 1000)
        out["status_json_ms_16"] = round(median(times), 1)
        out["tui_settled_s"] = round(settle(120.0, 50.0), 1)  # the storm's aftermath
        for w, h in ((80, 24), (200, 50)):
            p = on_node(lab, "n1", [sys.executable, INSIDE, "--tui-inside", str(w), str(h),
                                    str(args.nodes)], timeout=180)  # fmt: skip
            got = last_json(p.stdout) if p.stdout.strip() else {"error": p.stderr[-300:]}
            out[f"tui_{w}x{h}"] = got
        worst = [out[k].get("worst_ms") for k in ("tui_80x24", "tui_200x50")]
        out["tui_key_latency_ms_16"] = (
            round(max(worst), 1) if all(isinstance(x, (int, float)) for x in worst) else None
        )

        # d. 300 simulated nodes against n1's agent (the real nodes leave first)
        for n in reversed(names[1:]):
            on_node(lab, n, [*LANRAY, "leave"], timeout=120)
        out.update(sim300(lab, head, agent))

        if not args.skip_bare:
            on_node(lab, "n1", [*LANRAY, "leave"], timeout=120)
            out["bare_join_storm_alive"] = bare_storm(lab, names, args.limit)
        else:
            on_node(lab, "n1", [*LANRAY, "leave"], timeout=120)
            out["bare_join_storm_alive"] = None
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0


def bare_storm(lab: Any, names: list[str], limit: float) -> int:
    """Bare `ray start`: a head on n1, then every other node at once; ALIVE at the limit."""
    from lanray_tui.core import config
    from lanray_tui.core.agent.ray_start import ray_spec

    token = "b" * 64
    cfg = config.load()
    head = lab.node("n1").address
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}

    def argv(node: str, is_head: bool) -> list[str]:
        paths_env = lab.node(node).env()
        spec = ray_spec(cfg, _paths(paths_env), is_head, lab.node(node).address, f"{head}:6379")
        return [a for a in spec.argv() if a != "--block"]

    checked(on_node(lab, "n1", argv("n1", True), env=env), "bare ray start --head")
    procs = []
    t0 = time.monotonic()
    from lanray_tui.core import lab as labmod

    for n in names[1:]:
        base = {k: v for k, v in os.environ.items() if k != "LANRAY_NO_LAN"} | env
        cmd = labmod.exec_argv(lab, n, argv(n, False), cwd=str(ROOT), env=base)
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for p in procs:
        try:
            p.wait(timeout=max(1.0, limit - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            p.terminate()
    script = (
        "from lanray_tui.adapters import ray_dashboard\n"
        f"ns = ray_dashboard.list_nodes('http://127.0.0.1:8265', '{token}', 10)\n"
        "print(len({n.ip for n in ns if n.state == 'ALIVE'}))\n"
    )
    time.sleep(max(0.0, min(30.0, limit - (time.monotonic() - t0))))
    got = on_node(lab, "n1", [sys.executable, "-c", script], env=env)
    # No `ray stop`: it reaches across PID namespaces. The lab's teardown ends these Rays.
    return int(got.stdout.strip() or 0) if got.returncode == 0 else 0


def _paths(env: dict[str, str]) -> Any:
    from lanray_tui.core.paths import Paths

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return Paths.from_env()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


if __name__ == "__main__":
    raise SystemExit(main())
