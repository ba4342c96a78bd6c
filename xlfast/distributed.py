"""Processes working as one: the torch.distributed group of a torchrun launch, and `--nproc N` locally.

    torchrun --nproc-per-node 2 -m xlfast train corpus.grk-it.tsv -o runs/grk-it     # any rendezvous torchrun takes
    xlfast train corpus.grk-it.tsv -o runs/grk-it --nproc 2                          # the same, launched here

Training is data-parallel (DistributedDataParallel): every rank holds the whole model, takes a disjoint
shard of each epoch's batches, and the gradients are averaged over the ranks in the backward pass, so N
ranks step like one process on a batch N times larger. Rank 0 alone writes the run directory, evaluates
and selects; the others wait for its decision. gloo on CPUs, nccl on GPUs. Multi-node runs are torchrun's
job (its rendezvous arguments): nothing here is specific to one machine except `launch`.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import numpy as np
import torch

# Rank 0 evaluates and writes checkpoints (within and between epochs) while the others wait in a collective: the
# default timeout (30 min) would cut a long evaluation of a large vocabulary short.
TIMEOUT = datetime.timedelta(hours=6)


@dataclass(frozen=True)
class Group:
    """This process's place in the group: rank, world size and rank on this machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


SINGLE = Group()


def launched() -> bool:
    """Whether torchrun (or another launcher setting its variables) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ and "MASTER_ADDR" in os.environ


def join(device_type: str = "cpu") -> Group:
    """The group of a torchrun launch, joined once (gloo on the CPU, nccl on CUDA); SINGLE otherwise."""
    import torch.distributed as dist

    if not dist.is_available():
        return SINGLE
    if not dist.is_initialized():
        if not launched():
            return SINGLE
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", init_method="env://", timeout=TIMEOUT)
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def shard(n_batches: int, group: Group, done: int = 0) -> np.ndarray:
    """The positions of this rank's batches among an epoch's `n_batches` after the first `done` (a run
    resumed within an epoch): every world-th one from its rank on. Every rank must take as many steps (each
    step is a collective), so a plan that does not divide evenly wraps around to its start. The ranks' steps
    take the plan in order, `world` batches a step: skipping `done` = steps × world batches leaves the rest
    of every rank's uninterrupted shard."""
    steps = -(-(n_batches - done) // group.world)
    return np.arange(done + group.rank, done + steps * group.world, group.world) % n_batches


def wrap(model: torch.nn.Module, device: torch.device, find_unused: bool) -> torch.nn.Module:
    """DistributedDataParallel over `model`. Buffers (piece layouts, frozen pre-trained vectors) never
    change, so they are not broadcast every step. `find_unused`: a batch may leave parameters without
    gradient (the decoders of a corpus pair the batch is not from, another language's LM outputs)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False, find_unused_parameters=find_unused)


def sum_over_ranks(values: list[float], group: Group) -> list[float]:
    """Element-wise sums over every rank (float64)."""
    if not group.parallel:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def from_main(obj, group: Group):
    """Rank 0's `obj` on every rank (rank 0 passes its own; the others' argument is ignored)."""
    if not group.parallel:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def leave() -> None:
    """Leave the group (before the process exits)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(group: Group) -> None:
    if group.parallel:
        import torch.distributed as dist

        dist.barrier()


def without_option(argv: list[str], name: str) -> list[str]:
    """`argv` less the option `name` and its value (`--name V` or `--name=V`)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def launch(nproc: int, argv: list[str]) -> int:
    """Run `python -m xlfast ARGV` on `nproc` local processes through torchrun (standalone rendezvous on a
    free local port); returns the exit status. A rank that fails reports its own error line. ARGV must not
    hold an option that abbreviates one of torchrun's (e.g. `--nproc`): torchrun's parser reads them all."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(nproc), "--module", "xlfast", *argv])
    # torchrun prints a warning and sets OMP_NUM_THREADS=1 when it is unset; each rank takes its share of
    # the CPU budget itself (xlfast.threads)
    from xlfast import threads

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, threads.cpu_budget() // nproc)))
    try:
        run(args)
    except ChildFailedError:
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def threads_per_rank(group: Group, asked: int | None) -> int | None:
    """The thread budget of one rank: `asked` (--threads, per rank), else its share of this machine's
    CPU budget (torchrun's OMP_NUM_THREADS, when set lower, wins)."""
    if asked or not group.parallel:
        return asked
    from xlfast import threads

    local = int(os.environ.get("LOCAL_WORLD_SIZE", group.world))
    return max(1, min(threads.default_threads(), threads.cpu_budget() // local))
