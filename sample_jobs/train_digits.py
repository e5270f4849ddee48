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

    python train_digits.py [--epochs 12] [--workers N] [--batch-size 128] [--skip-baseline]
        [--sync epoch|step] [--no-balance]
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
    """What every Ray Train worker runs."""
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
    # DDP when world > 1, unless the models are averaged at each epoch's end instead
    strategy = "ddp" if config["sync"] == "step" else None
    model = ray.train.torch.prepare_model(make_model(), parallel_strategy=strategy)
    balancer.attach(model)
    opt, schedule = make_optimizer(model, config["lr"], world, config["epochs"] * len(loader))
    loss_fn = nn.CrossEntropyLoss()
    history: list[dict[str, Any]] = []
    train_s = 0.0
    for epoch in range(config["epochs"]):
        if world > 1:
            # Every worker starts the epoch at once. Between epochs the workers evaluate,
            # and rank 0 also reports; without this the first step of an epoch waits for
            # the slower of those, and that wait (tens of ms, measured in the lab) would be
            # counted as training time, on some ranks and not on others.
            dist.barrier()
        t0 = time.perf_counter()
        total, count = train_epoch(
            model, loader, opt, schedule, loss_fn, balancer, epoch, config["sync"]
        )
        train_s += time.perf_counter() - t0
        stats = torch.tensor([total, float(count)], device=device)
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
        history.append(row)
        report_epoch(model, opt, schedule, row, rank)
        if rank == 0:
            ray.get(config["sink"].add.remote(row))
            print(
                f"  [{world} worker(s)] epoch {epoch + 1}: loss {row['loss']:.4f}, "
                f"test accuracy {acc:.4f}"
                + (f", shares {'/'.join(f'{x:.2f}' for x in row['shares'])}" if world > 1 else ""),
                flush=True,
            )
            # for lanray-tui's job details view, which plots these rows' numbers
            metric = {"run": f"{world}w", **row}
            print("lanray-metric " + json.dumps(metric), flush=True)
    nodes = _nodes_of_workers(world)
    if rank == 0:
        ray.get(config["sink"].done.remote(train_s, nodes))


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


def run_config(name: str, local: str) -> Any:
    """Where the run keeps its checkpoints: the cluster storage in a lanray-tui job, else
    ``local`` on this machine."""
    from ray.train import CheckpointConfig, RunConfig

    keep = CheckpointConfig(num_to_keep=2)
    try:
        from lanray_tui import storage
    except ImportError:
        storage = None  # type: ignore[assignment]
    if storage is not None and storage.available():
        return storage.run_config(name, checkpoint_config=keep)
    return RunConfig(name=name, storage_path=local, checkpoint_config=keep)


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


@ray.remote(num_cpus=0)
class MetricsSink:
    """Where rank 0 sends each epoch's numbers: the driver reads them from here, whichever
    machine the workers ran on (no shared file system needed)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.train_s = 0.0
        self.nodes: list[str] = []

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def done(self, train_s: float, nodes: list[str]) -> None:
        self.train_s, self.nodes = train_s, nodes

    def result(self) -> dict[str, Any]:
        return {"history": self.rows, "train_s": self.train_s, "nodes": self.nodes}


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


def run(workers: int, use_gpu: bool, config: dict[str, Any], storage: str) -> dict[str, Any]:
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    sink = MetricsSink.remote()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={**config, "sink": sink},
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": 1, **({"GPU": 1} if use_gpu else {})},
            placement_strategy="SPREAD",
        ),
        run_config=run_config(f"train_digits_{workers}w_{int(time.time())}", storage),
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
    args = ap.parse_args()

    # Ray Train's preemption watcher polls Ray for draining nodes from an actor of its own;
    # on a node of 1 CPU that costs about a tenth of the core, taken from a training worker
    # (measured in the lab). Without it a drained node still ends its worker, and Ray
    # Train restarts the group as for any lost worker. Set it to 1 to keep the watcher.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
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
    }
    storage = os.path.join(tempfile.gettempdir(), "lanray_train_digits")
    runs: dict[str, dict[str, Any]] = {}
    if not args.skip_baseline:
        print("baseline: 1 worker", flush=True)
        runs["baseline"] = run(1, gpus >= 1, config, storage)
    print(f"data-parallel: {workers} worker(s)", flush=True)
    runs["parallel"] = run(workers, use_gpu, config, storage)

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
