"""The scaling benchmark's work without Ray: what this machine's CPUs give by themselves.

Each function runs the sample's own code in plain processes pinned to the lab nodes' CPUs,
1 process on n1's CPU against 2 at once on n1's and n2's, and returns both times:
  map_times: parallel_map's hash over its default numbers, all in one process or half in
      each;
  ddp_times: train_digits' loop (same data, model, default batch per worker and learning
      rate, rule and schedule) in one process, or in two (gloo on loopback) with the models
      averaged at each epoch's end (train_digits' default), or under plain PyTorch DDP.
So a reader can tell what is lost to Ray and lanray-tui from what this machine loses when
both of its CPUs work at once, measured side by side with the Ray runs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import socket
import sys
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parents[1] / "sample_jobs"


def _map_part(cpu: int, part: int, parts: int, out: Any) -> None:
    os.sched_setaffinity(0, {cpu})
    sys.path.insert(0, str(SAMPLES))
    import time

    from parallel_map import ROUNDS, N, map_chunk

    t0 = time.perf_counter()
    map_chunk(part * N // parts, (part + 1) * N // parts, ROUNDS)
    out.put(time.perf_counter() - t0)


def _run(target: Any, argsets: list[tuple[Any, ...]]) -> list[Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, out)) for a in argsets]
    for p in procs:
        p.start()
    got: list[Any] = []
    while len(got) < len(procs):
        try:
            got.append(out.get(timeout=1.0))
        except queue.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if failed:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"a plain process exited with {failed[0]}") from None
    for p in procs:
        p.join(timeout=60)
    return got


def map_times(cpus: tuple[int, int]) -> tuple[float, float]:
    """Seconds for the map on cpus[0] alone, and on both CPUs at once (the slower half)."""
    one = _run(_map_part, [(cpus[0], 0, 1)])[0]
    two = _run(_map_part, [(cpus[0], 0, 2), (cpus[1], 1, 2)])
    return float(one), float(max(two))


def _ddp_worker(
    rank: int,
    cpus: tuple[int, ...],
    port: int,
    epochs: int,
    balance: bool,
    sync: str,
    out: Any,
) -> None:
    os.sched_setaffinity(0, {cpus[rank]})
    # Gloo on loopback only: without this it picks the interface of the host name.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    sys.path.insert(0, str(SAMPLES))
    import time

    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from train_digits import (
        BATCH_SIZE,
        LR,
        Balancer,
        load_data,
        make_model,
        make_optimizer,
        train_epoch,
    )

    torch.set_num_threads(1)  # as Ray gives a worker of 1 CPU
    world = len(cpus)
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # train_digits' default seed
    xtr, ytr, xte, yte = load_data(0)
    balancer = Balancer(len(xtr), BATCH_SIZE, world, rank, 0, balance)
    loader = DataLoader(TensorDataset(xtr, ytr), batch_sampler=balancer)
    model = make_model()
    if world > 1 and sync == "step":
        model = nn.parallel.DistributedDataParallel(model)
    balancer.attach(model)
    opt, schedule = make_optimizer(model, LR, world, epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss()
    train_s = 0.0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        total, count = train_epoch(model, loader, opt, schedule, loss_fn, balancer, epoch, sync)
        train_s += time.perf_counter() - t0
        if world > 1:  # as the Ray run's per-epoch exchange of the loss
            dist.all_reduce(torch.tensor([total, float(count)]))
    model.eval()
    with torch.no_grad():
        accuracy = float((model(xte).argmax(dim=1) == yte).float().mean())
    if world > 1:
        dist.destroy_process_group()
    out.put((rank, train_s, accuracy))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ddp_times(
    cpus: tuple[int, int], epochs: int, balance: bool = True, sync: str = "epoch"
) -> dict[str, dict[str, float]]:
    """Training-loop seconds and final accuracy of rank 0, with 1 and with 2 processes;
    ``sync`` as train_epoch's ("epoch": models averaged at each epoch's end, "step": DDP)."""
    result: dict[str, dict[str, float]] = {}
    for world in (1, 2):
        port = _free_port()
        argsets = [(r, cpus[:world], port, epochs, balance, sync) for r in range(world)]
        got = _run(_ddp_worker, argsets)
        _, train_s, accuracy = min(got)  # rank 0
        result[str(world)] = {"train_s": float(train_s), "accuracy": float(accuracy)}
    return result
