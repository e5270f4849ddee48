"""Data-parallel training of a small CNN on scikit-learn's digits with PyTorch + Ray Train.

It trains twice for the same number of epochs: once on a single worker (the baseline), once
on one worker per node of the cluster (or ``--workers N``), each worker seeing its shard of
every epoch. A step takes ``--batch-size`` images per worker, so N workers take N times
fewer steps each; the peak learning rate grows with N (the linear scaling rule), and a
one-cycle schedule takes both runs to the same accuracy. By default (``--sync epoch``) each
worker steps on its own shard and the workers' models are averaged, weighted by their
shares, at each epoch's end (local SGD): on a LAN an exchange costs more than a step, and
every exchange makes all workers wait for the slowest. ``--sync step`` averages the
gradients at every step instead (PyTorch DDP). Either way each worker's share of the data
follows its measured speed (see ``Balancer``; ``--no-balance`` for equal shares). It writes the
per-epoch loss and accuracy of both runs to a metrics file (JSON lines) and a results file
(JSON) with times, accuracies and the speed-up; the last line printed is that JSON. Every
epoch ends with a checkpoint (model, optimizer and schedule; the last two are kept). Run as a
job of a lanray-tui cluster, the checkpoints, Ray Train's own results and both files go to
the job's folder in the cluster storage, which every node reaches (``lanray-tui results
JOB`` fetches them); elsewhere they stay on the driver's machine. GPUs are
used when the cluster has one per worker. The digits ship with scikit-learn: nothing is
downloaded.

A node may leave mid-run: its owner comes back, and lanray-tui drains it. Every worker asks
once an epoch whether its node is being drained; if one is, that epoch's checkpoint is the
just-in-time one and all workers leave at once, so the machine is free within about an
epoch. Ray Train then restarts the run from its last checkpoint on the nodes that remain,
with fewer workers (elastic, down to ``--min-workers``; up to ``--max-failures`` restarts),
and grows back when nodes return. The results say how many restarts there were, after which
epochs they resumed, and how much training was done again; no epoch counts twice.

    python train_digits.py [--epochs 12] [--workers N] [--batch-size 128] [--skip-baseline]
        [--sync epoch|step] [--no-balance] [--min-workers 1] [--max-failures 3]
        [--resize-every 20]
        [--metrics ~/lanray_results/train_digits_metrics.jsonl]
        [--results ~/lanray_results/train_digits_results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

BATCH_SIZE, LR = 128, 3e-3  # the defaults: images per worker per step, its peak rate
# Seconds between Ray Train's checks for nodes to grow back onto (its own default, 60, is
# longer than a whole run of this sample in a small lab); each growth is a restart.
RESIZE_EVERY_S = 20.0


def load_data(seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """Digits as 1x16x16 float tensors (upsampled from 8x8), split 80/20 the same way
    on every worker."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)

    def tensor(a: Any) -> Any:
        t = torch.tensor(a, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        return F.interpolate(t, size=(16, 16), mode="bilinear", align_corners=False)

    return tensor(xtr), torch.tensor(ytr), tensor(xte), torch.tensor(yte)


def make_model() -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def make_optimizer(model: Any, lr: float, world: int, steps: int) -> tuple[Any, Any]:
    """Adam with a one-cycle schedule over ``steps``; the peak learning rate is ``lr`` times
    ``world``, as the global batch is ``world`` times one worker's."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=lr * world)
    return opt, torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr * world, total_steps=max(1, steps)
    )


class Balancer:
    """Each worker's share of every global batch, in proportion to its measured speed.

    Synchronous data-parallel training steps at the pace of its slowest worker: with equal
    shards, a laptop twice as fast as its peer, or a lab PC whose owner has just started
    something, waits for the other at every step. Here every worker walks the same shuffled
    order of the data set, one global batch (``batch_size`` images times the number of
    workers) at a time, and takes its slice of each. After each epoch the workers swap
    their speeds (images per second of compute: from a step's start until its gradients
    are ready, so not counting the wait for the exchange) and the slices follow them. Each
    worker's loss is weighted by its slice of the global batch, so the averaged gradient is
    that of the whole global batch however it is split: the training is the same as with
    equal shards, less the waiting. With one worker it is plain shuffled batching; on GPUs
    the slices stay equal (a host clock does not time GPU work). Used as a DataLoader's
    ``batch_sampler``.
    """

    def __init__(
        self, size: int, batch_size: int, world: int, rank: int, seed: int, balance: bool
    ) -> None:
        self.size, self.batch, self.world, self.rank = size, batch_size * world, world, rank
        self.seed, self.balance, self.epoch = seed, balance, 0
        self.shares = [1.0 / world] * world
        self.compute_s, self.images, self._ready, self._t0 = 0.0, 0, 0.0, 0.0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[Any]:
        import torch

        order = torch.randperm(
            self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)
        )
        batches = [order[i : i + self.batch] for i in range(0, self.size, self.batch)]
        return [b for b in batches if len(b) >= self.world]  # every worker gets an image

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch)
        return full + (rest >= self.world)

    def __iter__(self) -> Any:
        for batch in self._global_batches():
            sizes = split(len(batch), self.shares)
            start = sum(sizes[: self.rank])
            yield batch[start : start + sizes[self.rank]].tolist()

    def loss_weight(self, images: int, step: int) -> float:
        """What makes the averaged gradients those of the global batch of ``step``."""
        whole = min(self.batch, self.size - step * self.batch)
        return self.world * images / whole

    def attach(self, model: Any) -> None:
        """Time the gradients' readiness through the DDP model's communication hook."""
        if self.world > 1 and hasattr(model, "register_comm_hook"):
            model.register_comm_hook(self, Balancer._allreduce)

    @staticmethod
    def _allreduce(state, bucket):  # no annotations: DDP rejects them as strings
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        state._ready = time.perf_counter()
        return default_hooks.allreduce_hook(None, bucket)  # DDP's own: the mean over workers

    def step_started(self) -> None:
        self._t0 = self._ready = time.perf_counter()

    def step_computed(self, images: int) -> None:
        end = self._ready if self._ready > self._t0 else time.perf_counter()
        self.compute_s += end - self._t0
        self.images += images

    def rebalance(self, device: Any) -> None:
        """After an epoch, on every worker at once: shares in proportion to the speeds."""
        import torch
        import torch.distributed as dist

        mine = self.images / self.compute_s if self.compute_s > 0 else 0.0
        self.compute_s, self.images = 0.0, 0
        if self.world == 1 or not self.balance:
            return
        speeds = [torch.zeros(1, device=device) for _ in range(self.world)]
        dist.all_gather(speeds, torch.tensor([mine], device=device))
        got = [float(t) for t in speeds]
        if min(got) <= 0:
            return
        floor = 1.0 / (4 * self.world)  # no worker falls below a quarter of an equal share
        shares = [max(floor, speed / sum(got)) for speed in got]
        self.shares = [share / sum(shares) for share in shares]


def split(n: int, shares: list[float]) -> list[int]:
    """``n`` images into parts in proportion to ``shares``, each part at least 1."""
    sizes = [max(1, int(n * s)) for s in shares]
    by_rest = sorted(range(len(shares)), key=lambda i: n * shares[i] - int(n * shares[i]))
    while sum(sizes) < n:
        sizes[by_rest.pop()] += 1
    while sum(sizes) > n:
        sizes[sizes.index(max(sizes))] -= 1
    return sizes


def average_model(model: Any, weight: float) -> None:
    """Every worker's parameters become the same weighted mean (one exchange of them all)."""
    import torch.distributed as dist
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    flat = parameters_to_vector(model.parameters()) * weight
    dist.all_reduce(flat)
    vector_to_parameters(flat, model.parameters())


def train_epoch(
    model: Any,
    loader: Any,
    opt: Any,
    schedule: Any,
    loss_fn: Any,
    balancer: Balancer,
    epoch: int,
    sync: str = "step",
) -> tuple[float, int]:
    """Epoch ``epoch``: a pass over ``loader`` (batched by ``balancer``), a step per batch,
    then the workers' shares for the next. Returns the summed loss and the count.

    With ``sync`` "step" the model is DDP's and every step averages the gradients. With
    "epoch" (and more than one worker) the model is a plain one: each worker steps on its
    own slices, and at the epoch's end the workers' models are averaged, weighted by their
    shares (local SGD)."""
    model.train()
    balancer.set_epoch(epoch)
    local = sync == "epoch" and balancer.world > 1
    total, count = 0.0, 0
    for step, (xb, yb) in enumerate(loader):
        balancer.step_started()
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        (loss if local else loss * balancer.loss_weight(len(yb), step)).backward()
        balancer.step_computed(len(yb))
        opt.step()
        schedule.step()
        total += float(loss.item()) * len(yb)
        count += len(yb)
    if local:
        average_model(model, balancer.shares[balancer.rank])
    balancer.rebalance(next(model.parameters()).device)
    return total, count


def train_loop(config: dict[str, Any]) -> None:
    """What every Ray Train worker runs. A run that Ray Train restarts (a worker's node
    left) resumes from its last checkpoint, with however many workers it now has."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(config["seed"])
    ctx = ray.train.get_context()
    world = ctx.get_world_size()
    rank = ctx.get_world_rank()
    xtr, ytr, xte, yte = load_data(config["seed"])
    device = ray.train.torch.get_device()
    balancer = Balancer(
        len(xtr),
        config["batch_size"],
        world,
        rank,
        config["seed"],
        balance=config["balance"] and device.type == "cpu",
    )
    loader = DataLoader(TensorDataset(xtr, ytr), batch_sampler=balancer)
    # the balancer shards the data; Ray Train moves the batches to the device
    loader = ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False)
    saved = load_checkpoint()
    first = int(saved["epoch"]) if saved else 0  # epochs already done
    net = make_model()
    if saved:
        net.load_state_dict(saved["model"])
    # DDP when world > 1, unless the models are averaged at each epoch's end instead
    strategy = "ddp" if config["sync"] == "step" else None
    model = ray.train.torch.prepare_model(net, parallel_strategy=strategy)
    balancer.attach(model)
    opt, schedule = make_optimizer(model, config["lr"], world, config["epochs"] * len(loader))
    if saved:
        resume_optimizer(opt, schedule, saved["optimizer"], first * len(loader))
    if rank == 0:
        ray.get(config["sink"].attempt.remote(world, first))
    loss_fn = nn.CrossEntropyLoss()
    watcher = os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1") != "0"
    for epoch in range(first, config["epochs"]):
        if world > 1:
            # Every worker starts the epoch at once. Between epochs the workers evaluate,
            # and rank 0 also reports; without this the first step of an epoch waits for
            # the slower of those, and that wait (tens of ms, measured in the lab) would be
            # counted as training time, on some ranks and not on others.
            dist.barrier()
        if rank == 0:
            config["sink"].begin.remote(epoch + 1)
        t0 = time.perf_counter()
        total, count = train_epoch(
            model, loader, opt, schedule, loss_fn, balancer, epoch, config["sync"]
        )
        epoch_train_s = time.perf_counter() - t0
        # the loss, and whether a worker's node is being drained (its owner is back): the
        # one exchange of numbers each epoch carries both
        going = 0.0 if watcher else float(node_draining())
        stats = torch.tensor([total, float(count), going], device=device)
        if world > 1:
            dist.all_reduce(stats)
        model.eval()
        with torch.no_grad():
            pred = model(xte.to(device)).argmax(dim=1).cpu()
        acc = float((pred == yte).float().mean())
        row = {
            "epoch": epoch + 1,
            "loss": float(stats[0] / stats[1]),
            "accuracy": acc,
            "epoch_s": time.perf_counter() - t0,
            "shares": [round(x, 3) for x in balancer.shares],  # for the next epoch
        }
        report_epoch(model, opt, schedule, row, rank)
        if rank == 0:
            ray.get(config["sink"].add.remote(row, epoch_train_s))
            print(
                f"  [{world} worker(s)] epoch {epoch + 1}: loss {row['loss']:.4f}, "
                f"test accuracy {acc:.4f}"
                + (f", shares {'/'.join(f'{x:.2f}' for x in row['shares'])}" if world > 1 else ""),
                flush=True,
            )
            # for lanray-tui's job details view, which plots these rows' numbers
            metric = {"run": config["run"], **row}
            print("lanray-metric " + json.dumps(metric), flush=True)
        if watcher:
            # Ray Train's own signal (a barrier: every rank asks, once an epoch)
            going = float(ray.train.get_preemption_info() is not None)
        elif world > 1:
            going = float(stats[2])
        if going and epoch + 1 < config["epochs"]:
            # This epoch's checkpoint is the just-in-time one: leave now, all ranks at once,
            # so the drained node is free at once; Ray Train restarts the run on the nodes
            # that remain, from this checkpoint (see FailureConfig in run()). First wait
            # for rank 0's report: the others report no checkpoint and are done sooner, and
            # an error of theirs seen while rank 0 still uploads would restart the run from
            # the epoch before (seen in the lab: one epoch done again).
            if world > 1:
                dist.barrier()
            raise RuntimeError(
                f"a worker's node is being drained (its owner is back): checkpointed after "
                f"epoch {epoch + 1}; the run goes on without it"
            )
    nodes = _nodes_of_workers(world)
    if rank == 0:
        ray.get(config["sink"].done.remote(nodes))


def node_draining() -> bool:
    """Whether Ray is draining this worker's node: lanray-tui's agent drains a machine
    whose owner came back (``ray drain-node``, with a deadline). One call to the GCS."""
    try:
        draining = ray._private.state.state.get_draining_nodes()
    except Exception:  # the GCS did not answer: the next epoch asks again
        return False
    return ray.get_runtime_context().get_node_id() in draining


def load_checkpoint() -> dict[str, Any] | None:
    """The state in the run's last checkpoint (Ray Train hands it to a restarted run)."""
    import ray.train
    import torch

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(os.path.join(folder, "checkpoint.pt"), map_location="cpu")  # type: ignore[no-any-return]


def resume_optimizer(opt: Any, schedule: Any, state: dict[str, Any], steps: int) -> None:
    """The optimizer's saved moments, and the schedule moved on to step ``steps``. The
    schedule is this run's own (its peak and length follow the number of workers, which
    may differ from the run that saved the checkpoint), so the saved one's rates are not
    taken."""
    import warnings

    mine = [{k: g[k] for k in ("initial_lr", "max_lr", "min_lr")} for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, rates in zip(opt.param_groups, mine, strict=True):
        group.update(rates)
    if steps:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "step() before optimizer.step()": on purpose
            schedule.last_epoch = steps - 1
            schedule.step()


def report_epoch(model: Any, opt: Any, schedule: Any, row: dict[str, Any], rank: int) -> None:
    """The epoch's numbers to Ray Train, with a checkpoint from rank 0 (the models are the
    same on every rank once the epoch ends), which Ray Train puts in the run's storage."""
    import ray.train
    import torch

    numbers = {k: v for k, v in row.items() if k != "shares"}
    if rank != 0:
        ray.train.report(numbers)
        return
    state = {
        "epoch": row["epoch"],
        "model": getattr(model, "module", model).state_dict(),
        "optimizer": opt.state_dict(),
        "schedule": schedule.state_dict(),
    }
    with tempfile.TemporaryDirectory(prefix="train_digits_") as folder:
        torch.save(state, os.path.join(folder, "checkpoint.pt"))
        ray.train.report(numbers, checkpoint=ray.train.Checkpoint.from_directory(folder))


def run_config(name: str, local: str, max_failures: int = 3) -> Any:
    """Where the run keeps its checkpoints: the cluster storage in a lanray-tui job, else
    ``local`` on this machine. Up to ``max_failures`` restarts from the last checkpoint
    when a worker fails or leaves (a drained node's workers leave on purpose, see
    train_loop; Ray Train counts that as a failure)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    keep = CheckpointConfig(num_to_keep=2)
    failures = FailureConfig(max_failures=max_failures)
    try:
        from lanray_tui import storage
    except ImportError:
        storage = None  # type: ignore[assignment]
    if storage is not None and storage.available():
        return storage.run_config(name, checkpoint_config=keep, failure_config=failures)
    return RunConfig(name=name, storage_path=local, checkpoint_config=keep, failure_config=failures)


def save_to_cluster_storage(*files: Path) -> list[str]:
    """Copies of ``files`` in this job's folder of the cluster storage (in a lanray-tui job)."""
    try:
        from lanray_tui import storage
    except ImportError:
        return []
    if not storage.available():
        return []
    fs = storage.filesystem()
    for f in files:
        fs.put_file(str(f), storage.output_path(f.name))
    return [os.environ["LANRAY_OUTPUT_DIR"] + f.name for f in files]


class RunLog:
    """Where rank 0 sends each epoch's numbers (as the actor :data:`MetricsSink`): the
    driver reads them from there, whichever machine the workers ran on (no shared file
    system needed).

    It also keeps the run's attempts. When Ray Train restarts the run (a worker's node
    left), the new attempt resumes from the last checkpoint: the epochs the old one did
    after it are dropped from the history (they are done again, never counted twice), and
    their training time, with the epoch the old attempt was in when it stopped (counted as
    at most one epoch's time), is the work lost."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}  # by epoch (1, 2, ...)
        self.train_s: dict[int, float] = {}  # each kept epoch's training time
        self.attempts: list[dict[str, Any]] = []
        self.lost_s = 0.0
        self.nodes: list[str] = []
        self._begun: float | None = None  # when the epoch in progress began

    def attempt(self, world: int, resumed_from: int) -> None:
        """A start (or a restart) of the run, with ``resumed_from`` epochs done."""
        redone = [e for e in self.rows if e > resumed_from]
        self.lost_s += sum(self.train_s.pop(e) for e in redone)
        for e in redone:
            del self.rows[e]
        if self._begun is not None:
            typical = sorted(self.train_s.values())[len(self.train_s) // 2] if self.train_s else 0
            self.lost_s += min(time.time() - self._begun, typical)
        self._begun = None
        self.attempts.append({"workers": world, "resumed_from_epoch": resumed_from})

    def begin(self, epoch: int) -> None:
        self._begun = time.time()

    def add(self, row: dict[str, Any], train_s: float) -> None:
        self.rows[row["epoch"]] = row
        self.train_s[row["epoch"]] = train_s
        self._begun = None

    def done(self, nodes: list[str]) -> None:
        self.nodes = nodes

    def result(self) -> dict[str, Any]:
        return {
            "history": [self.rows[e] for e in sorted(self.rows)],
            "train_s": sum(self.train_s.values()),
            "nodes": self.nodes,
            "restarts": max(0, len(self.attempts) - 1),
            "resumed_from_epoch": [a["resumed_from_epoch"] for a in self.attempts[1:]],
            "workers_by_attempt": [a["workers"] for a in self.attempts],
            "lost_work_s": self.lost_s,
        }


MetricsSink = ray.remote(num_cpus=0)(RunLog)


def use_ray_interface_for_gloo() -> None:
    """Gloo finds its network interface through the host name, which machines on a LAN
    often cannot resolve (it then falls back to loopback and ranks on other machines never
    connect): point it at the interface that holds this node's Ray address."""
    import psutil

    ip = ray.util.get_node_ip_address()
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address == ip for a in addrs):
            os.environ.setdefault("GLOO_SOCKET_IFNAME", name)
            return


def _nodes_of_workers(world: int) -> list[str]:
    """The host name of every worker (gathered on all of them)."""
    import torch.distributed as dist

    me = f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"
    if world == 1:
        return [me]
    names: list[Any] = [None] * world
    dist.all_gather_object(names, me)
    return [str(n) for n in names]


def run(
    workers: int,
    use_gpu: bool,
    config: dict[str, Any],
    storage: str,
    min_workers: int = 1,
    resize_every_s: float = RESIZE_EVERY_S,
) -> dict[str, Any]:
    """One training run on ``workers`` workers. When a worker's node leaves, Ray Train
    restarts the run from its last checkpoint on the nodes that remain (elastic: down to
    ``min_workers``; when a node is lent again, a running group grows back to ``workers``
    at Ray Train's next resize check, ``resize_every_s`` after the group's start: a restart
    from the last checkpoint again)."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # next to the driver (the head), not on a node that may be lent only for a while: a
    # soft affinity was seen to place it on a lent node, and the run died with that node
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    sink = MetricsSink.options(scheduling_strategy=here).remote()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    low = max(1, min(min_workers, workers))
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={**config, "sink": sink, "run": f"{workers}w"},
        scaling_config=ScalingConfig(
            num_workers=(low, workers) if low < workers else workers,
            elastic_resize_monitor_interval_s=resize_every_s,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": 1, **({"GPU": 1} if use_gpu else {})},
            placement_strategy="SPREAD",
        ),
        run_config=run_config(
            f"train_digits_{workers}w_{int(time.time())}", storage, config["max_failures"]
        ),
    )
    result = trainer.fit()
    wall = time.perf_counter() - t0
    got = ray.get(sink.result.remote())
    last = got["history"][-1]
    return {
        "workers": workers,
        "wall_s": wall,
        "train_s": got["train_s"],
        "accuracy": last["accuracy"],
        "loss": last["loss"],
        "shares": last["shares"],
        "history": got["history"],
        "nodes": got["nodes"],
        "restarts": got["restarts"],
        "resumed_from_epoch": got["resumed_from_epoch"],
        "workers_by_attempt": got["workers_by_attempt"],
        "lost_work_s": got["lost_work_s"],
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--workers", type=int, default=0, help="default: one per alive node")
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="images per worker per step")
    ap.add_argument("--lr", type=float, default=LR, help="peak learning rate of one worker")
    ap.add_argument("--seed", type=int, default=0)
    out = Path.home() / "lanray_results"  # on the node that runs the driver (the head)
    ap.add_argument("--metrics", type=Path, default=out / "train_digits_metrics.jsonl")
    ap.add_argument("--results", type=Path, default=out / "train_digits_results.json")
    ap.add_argument("--skip-baseline", action="store_true", help="only the distributed run")
    ap.add_argument(
        "--no-balance", action="store_true", help="equal shards, whatever each worker's speed"
    )
    ap.add_argument(
        "--sync",
        choices=("epoch", "step"),
        default="epoch",
        help="epoch (the default): each worker steps on its own slices and the models are "
        "averaged at each epoch's end (local SGD); step: the gradients are averaged at every "
        "step (DDP)",
    )
    ap.add_argument(
        "--min-workers",
        type=int,
        default=1,
        help="when nodes leave, go on with as few as this many workers (default 1)",
    )
    ap.add_argument(
        "--max-failures",
        type=int,
        default=3,
        help="restarts from the last checkpoint when a worker fails or its node leaves",
    )
    ap.add_argument(
        "--resize-every",
        type=float,
        default=RESIZE_EVERY_S,
        help="seconds between Ray Train's checks for returned nodes to grow back onto "
        f"(default {RESIZE_EVERY_S:g}; Ray's own is 60)",
    )
    ap.add_argument(
        "--preemption-watcher",
        action="store_true",
        help="learn that a node drains from Ray Train's watcher actor (see below)",
    )
    args = ap.parse_args()

    # How a worker learns that its node is going (lanray-tui drains a machine whose owner
    # came back). Ray Train's preemption watcher polls Ray for draining nodes from an actor
    # of its own, every 5 s by default; on a node of 1 CPU that actor costs about a tenth
    # of the core, taken from a training worker (measured in the lab), and its poll adds
    # up to 5 s before the checkpoint. Instead, each worker asks the GCS once an epoch
    # whether its own node drains (node_draining: one call, no actor) and the answer rides
    # on the epoch's exchange of numbers. In the lab (bench/owner_returns.py --quick, 3
    # nodes of 1 CPU) the owner's machine was free 4.1 and 5.9 s after the key this way,
    # 7.2 s with the watcher. Set this to 1 to use Ray Train's watcher and
    # ray.train.get_preemption_info() instead (--preemption-watcher).
    if args.preemption_watcher:
        os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "1"
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # A restart may be sized while the drained node is still listed (its Ray stops a
    # moment after its workers leave, and Ray Train counts a draining node's CPUs): a
    # worker group that cannot be placed is given up after 10 s instead of Ray Train's
    # minute, and sized again with the nodes there are then. (This bounds only the wait
    # for the placement group, which takes well under a second when the CPUs are free.)
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "10")
    ray.init(
        logging_level="WARNING",
        runtime_env={"worker_process_setup_hook": use_ray_interface_for_gloo},
    )
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1]
    workers = args.workers or max(1, len(nodes))
    gpus = ray.cluster_resources().get("GPU", 0.0)
    use_gpu = gpus >= workers
    print(
        f"cluster: {len(nodes)} node(s) with CPUs, {gpus:g} GPU(s); training on "
        f"{'GPU' if use_gpu else 'CPU'} with {workers} worker(s) vs 1",
        flush=True,
    )
    config = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "balance": not args.no_balance,
        "seed": args.seed,
        "sync": args.sync,
        "max_failures": args.max_failures,
    }
    storage = os.path.join(tempfile.gettempdir(), "lanray_train_digits")
    runs: dict[str, dict[str, Any]] = {}
    if not args.skip_baseline:
        print("baseline: 1 worker", flush=True)
        runs["baseline"] = run(1, gpus >= 1, config, storage)
    print(f"data-parallel: {workers} worker(s)", flush=True)
    runs["parallel"] = run(workers, use_gpu, config, storage, args.min_workers, args.resize_every)

    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    with open(args.metrics, "w") as f:
        for name, r in runs.items():
            for row in r["history"]:
                f.write(json.dumps({"run": name, "workers": r["workers"], **row}) + "\n")
    par = runs["parallel"]
    base = runs.get("baseline")
    results: dict[str, Any] = {
        "epochs": args.epochs,
        "workers": workers,
        "device": "gpu" if use_gpu else "cpu",
        "batch_size_per_worker": args.batch_size,
        "peak_lr_per_worker": args.lr,
        "balanced": not args.no_balance and not use_gpu,
        "sync": args.sync,
        "parallel": {k: v for k, v in par.items() if k != "history"},
    }
    if base is not None:
        results["baseline"] = {k: v for k, v in base.items() if k != "history"}
        results["speedup"] = base["train_s"] / par["train_s"] if par["train_s"] else None
        results["wall_speedup"] = base["wall_s"] / par["wall_s"] if par["wall_s"] else None
        results["accuracy_delta"] = par["accuracy"] - base["accuracy"]
        print(
            f"baseline: accuracy {base['accuracy']:.4f}, training {base['train_s']:.2f} s "
            f"(wall {base['wall_s']:.1f} s)",
            flush=True,
        )
    print(
        f"{workers} workers on {', '.join(sorted(set(par['nodes'])))}: accuracy "
        f"{par['accuracy']:.4f}, training {par['train_s']:.2f} s (wall {par['wall_s']:.1f} s)",
        flush=True,
    )
    if par["restarts"]:
        print(
            f"restarted {par['restarts']} time(s) when nodes left, resuming after epoch(s) "
            f"{', '.join(map(str, par['resumed_from_epoch']))} with "
            f"{' then '.join(map(str, par['workers_by_attempt']))} worker(s); "
            f"work done again: {par['lost_work_s']:.1f} s",
            flush=True,
        )
    if base is not None:
        print(
            f"speed-up of the training loop: {results['speedup']:.2f}x; accuracy delta "
            f"{results['accuracy_delta']:+.4f}",
            flush=True,
        )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(f"metrics: {args.metrics.resolve()}; results: {args.results.resolve()}", flush=True)
    copies = save_to_cluster_storage(args.metrics, args.results)
    if copies:
        print(f"in the cluster storage: {', '.join(copies)}", flush=True)
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
