"""Workers of a ``torchrun`` launch: who am I, which GPUs are mine, and a barrier between us.

Evaluation spreads its resumable units over the processes torchrun starts (one node or several). The
processes coordinate only through torchrun's own store and a private gloo group that is *not* the
default process group, so an engine started afterwards (vLLM, or transformers on a GPU) sees a clean,
single-process world: the launcher's ``RANK``/``WORLD_SIZE``/``MASTER_*`` variables are removed from
the environment once the world is joined, where they would otherwise leak into the engine's own setup.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                 "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT",
                 "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS",
                 "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_ERROR_FILE", "TORCH_NCCL_ASYNC_ERROR_HANDLING")
BARRIER_TIMEOUT_ENV = "SCOPE_BARRIER_TIMEOUT_S"
DEFAULT_BARRIER_TIMEOUT_S = 48 * 3600
"""A barrier waits for the slowest worker's share of units, which at the paper's protocol can be hours."""


@dataclass
class World:
    """This process's place among the workers: ``rank`` of ``size``, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    group: Any = field(default=None, repr=False)

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes manifests and tables; every rank writes its own shards."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.group is not None:
            self.group.barrier().wait()

    def share(self, items: Sequence[T]) -> list[T]:
        """This worker's items: every ``size``-th one from position ``rank`` (balanced within one item)."""
        return list(items[self.rank :: self.size])


_current: World | None = None


def _barrier_timeout(timeout_s: float | None) -> datetime.timedelta:
    return datetime.timedelta(seconds=timeout_s or float(os.environ.get(BARRIER_TIMEOUT_ENV,
                                                                          DEFAULT_BARRIER_TIMEOUT_S)))


def current_world() -> World:
    """The joined world, else what the launcher's environment says (a lone process: rank 0 of 1)."""
    if _current is not None:
        return _current
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                 int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def join_world(*, scrub: bool = True, timeout_s: float | None = None) -> World:
    """Join the workers torchrun started (a single process joins a world of one), then, with ``scrub``,
    remove the launcher's variables from the environment. Idempotent."""
    global _current
    if _current is not None:
        return _current
    world = current_world()
    if world.size > 1:
        import torch.distributed as dist

        store, rank, size = next(dist.rendezvous("env://"))
        world.group = dist.ProcessGroupGloo(dist.PrefixStore("scope-workers", store), rank, size,
                                            _barrier_timeout(timeout_s))
        world.group.barrier().wait()
        log.info("worker %d of %d (local %d of %d) joined", rank, size, world.local_rank, world.local_size)
    if scrub:
        for name in LAUNCHER_VARS:
            os.environ.pop(name, None)
    _current = world
    return world


def process_group_world(timeout_s: float | None = None) -> World:
    """The processes of a launch that has already initialised torch.distributed (accelerate, a trainer)
    as stage workers: their ranks, with a gloo group of their own beside the launch's default group, so
    a barrier neither needs nor disturbs the GPUs' collective backend. A lone process is a world of one."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return World()
    group = dist.new_group(backend="gloo", timeout=_barrier_timeout(timeout_s))
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                 int(os.environ.get("LOCAL_WORLD_SIZE", "1")), group)


def leave_world() -> None:
    """Forget the joined world (tests, and a process that runs several launches in turn)."""
    global _current
    _current = None


def gpus_for(world: World, per_worker: int = 1, *, share: bool = False) -> list[str] | None:
    """The GPUs this worker owns on its node, as entries of ``CUDA_VISIBLE_DEVICES`` (or indexes), or
    None when the node's GPUs cannot be counted (no CUDA): ``per_worker`` consecutive ones from
    ``local_rank * per_worker``. A node needs ``local_size * per_worker`` GPUs, unless ``share`` lets
    more workers than GPUs take them in turn (transformers can; a vLLM engine claims its GPU's memory)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d for d in visible.split(",") if d.strip()]
    else:
        try:
            import torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        except Exception:  # noqa: BLE001 - a broken CUDA install counts as no GPU
            count = 0
        devices = [str(i) for i in range(count)]
    if not devices:
        return None
    need = world.local_size * per_worker
    if share and per_worker == 1 and need > len(devices):
        return [devices[world.local_rank % len(devices)]]
    if need > len(devices):
        from workbench.errors import UserError

        raise UserError(f"{world.local_size} workers x {per_worker} GPU(s) each need {need} GPUs on this node, "
                        f"but {len(devices)} are visible; lower NPROC (or --tensor-parallel-size)")
    start = world.local_rank * per_worker
    return devices[start : start + per_worker]


def pin_gpus(world: World, per_worker: int = 1, *, share: bool = False) -> list[str] | None:
    """Make only this worker's GPUs visible to the engine it is about to start (before CUDA starts)."""
    mine = gpus_for(world, per_worker, share=share)
    if mine is not None and world.size > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
    return mine
