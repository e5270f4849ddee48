"""train_digits' Balancer: each worker's slice of every global batch follows its speed, and
the training stays that of the whole global batch however it is split.

The last tests train for real: two processes (gloo on loopback), under PyTorch DDP or with
their models averaged at each epoch's end. The second is a slower machine: each image costs
it SLOW_S more (a sleep in its model's forward), a fixed cost that whatever else runs on this
machine cannot even out. (A busy loop sharing the second worker's CPU did, when the suite's
other run loaded both CPUs; and with each worker pinned to a CPU, a load on the first
worker's CPU alone made it the slower one.)
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[samples]')")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sample_jobs"))
from train_digits import Balancer, split

SLOW_S = 2e-3  # the slower worker's extra time per image: many times a loaded CPU's own


@given(st.lists(st.floats(0.05, 1.0), min_size=1, max_size=5), st.integers(0, 2000))
def test_split_gives_every_image_once_in_proportion(weights: list[float], extra: int) -> None:
    shares = [w / sum(weights) for w in weights]
    n = len(shares) + extra
    sizes = split(n, shares)
    assert sum(sizes) == n and min(sizes) >= 1
    if min(n * s for s in shares) >= 1:
        assert all(abs(size - n * s) < 1 for size, s in zip(sizes, shares, strict=True))


def test_workers_slices_make_up_each_global_batch_whatever_the_shares() -> None:
    shares = [0.6, 0.1, 0.3]
    ranks = [Balancer(1000, 64, 3, rank, seed=7, balance=True) for rank in range(3)]
    for b in ranks:
        b.shares = shares
        b.set_epoch(2)
    steps = [list(b) for b in ranks]
    assert len({len(s) for s in steps}) == 1 == len({len(b) for b in ranks})
    seen = [i for step in zip(*steps, strict=True) for part in step for i in part]
    assert sorted(seen) == list(range(1000))  # each image once in the epoch
    for step, parts in enumerate(zip(*steps, strict=True)):
        # the loss weights make the mean over workers the mean over the global batch
        total = sum(b.loss_weight(len(p), step) for b, p in zip(ranks, parts, strict=True))
        assert total == pytest.approx(3.0)
        if len(parts[0]) + len(parts[1]) + len(parts[2]) == 192:
            assert [len(p) for p in parts] == [115, 19, 58]
    ranks[0].set_epoch(3)
    assert list(ranks[0]) != steps[0]  # a new order each epoch


def test_a_last_global_batch_too_small_to_share_is_left_out() -> None:
    b = Balancer(129, 64, 2, 0, seed=0, balance=True)  # 128 + 1 image
    assert len(b) == 1 == len(list(b))


def _train(rank: int, port: int, balance: bool, sync: str, out: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from train_digits import load_data, make_model, make_optimizer, train_epoch

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    xtr, ytr, _, _ = load_data(0)
    balancer = Balancer(len(xtr), 128, 2, rank, 0, balance)
    loader = DataLoader(TensorDataset(xtr, ytr), batch_sampler=balancer)
    model = make_model()
    if sync == "step":
        model = nn.parallel.DistributedDataParallel(model)
    balancer.attach(model)
    opt, schedule = make_optimizer(model, 3e-3, 2, 2 * len(loader))
    shares = []
    if rank == 1:  # the slower machine: a fixed extra cost per image
        model.register_forward_pre_hook(lambda _m, args: time.sleep(SLOW_S * len(args[0])))
    for epoch in range(2):
        train_epoch(model, loader, opt, schedule, nn.CrossEntropyLoss(), balancer, epoch, sync)
        shares.append(balancer.shares[0])
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    dist.destroy_process_group()
    out.put((rank, shares, weights.numpy()))


def _two_workers(balance: bool, sync: str = "step") -> list[tuple[int, list[float], Any]]:
    """Each rank's share after each epoch and its final weights, by rank."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=_train, args=(r, port, balance, sync, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        got = sorted(out.get(timeout=240) for _ in procs)
    except queue.Empty:
        pytest.fail(f"training did not finish: exit codes {[p.exitcode for p in procs]}")
    finally:
        for p in procs:
            p.join(timeout=30)
            p.kill()
    return got


def test_a_slower_worker_gets_a_smaller_slice_and_the_training_is_unchanged() -> None:
    _, balanced, weights = _two_workers(balance=True)[0]
    _, equal, equal_weights = _two_workers(balance=False)[0]
    assert equal == [0.5, 0.5]
    assert min(balanced) > 0.55, balanced  # the faster worker takes more of each batch
    # same global batches, same averaged gradients: the same model, but for rounding
    diff = abs(weights - equal_weights).max()
    assert diff < 1e-3, diff


def test_epoch_sync_leaves_every_worker_with_the_same_averaged_model() -> None:
    (_, shares, weights), (_, _, weights1) = _two_workers(True, "epoch")
    assert min(shares) > 0.55, shares  # still balanced: the faster worker takes more
    assert (weights == weights1).all()  # averaged at the epoch's end: one model


def _average(rank: int, port: int, out: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    import torch
    import torch.distributed as dist
    from torch import nn
    from train_digits import average_model

    dist.init_process_group("gloo", rank=rank, world_size=2)
    model = nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0 if rank == 0 else 3.0)
    average_model(model, 0.75 if rank == 0 else 0.25)  # rank 0 took 3/4 of the images
    out.put((rank, [float(v) for p in model.parameters() for v in p.reshape(-1)]))
    dist.destroy_process_group()


def test_average_model_is_the_mean_weighted_by_share() -> None:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=_average, args=(r, port, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        got = sorted(out.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            p.kill()
    assert got[0][1] == got[1][1] == [1.5] * 8  # 0.75 * 1 + 0.25 * 3, weights and biases
