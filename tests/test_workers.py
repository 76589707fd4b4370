"""Which units and GPUs a torchrun worker takes, and what it leaves in the environment for its engine."""

from __future__ import annotations

import pytest

from workbench import distributed
from workbench.distributed import World, gpus_for, join_world, leave_world
from workbench.errors import UserError


def test_shares_cover_every_item_once_and_differ_by_at_most_one():
    items = list(range(11))
    for size in (1, 2, 3, 4, 12):
        shares = [World(rank, size).share(items) for rank in range(size)]
        assert sorted(x for share in shares for x in share) == items
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert World(1, 3).share(items) == [1, 4, 7, 10]


def test_each_worker_owns_its_own_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert [gpus_for(World(r, 4, r, 4)) for r in range(4)] == [["4"], ["5"], ["6"], ["7"]]
    assert [gpus_for(World(r, 2, r, 2), 2) for r in range(2)] == [["4", "5"], ["6", "7"]]
    with pytest.raises(UserError, match="3 workers x 2 GPU\\(s\\) each need 6 GPUs on this node, but 4 are visible"):
        gpus_for(World(0, 3, 0, 3), 2)
    # transformers workers may take the GPUs in turn; vLLM engines may not
    assert [gpus_for(World(r, 6, r, 6), share=True) for r in range(6)] == [["4"], ["5"], ["6"], ["7"], ["4"], ["5"]]


def test_a_joined_world_remembers_its_rank_after_the_launchers_variables_are_gone(monkeypatch):
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29999", "TORCHELASTIC_RUN_ID": "x"}.items():
        monkeypatch.setenv(name, value)
    leave_world()
    try:
        world = join_world()
        assert (world.rank, world.size, world.is_writer) == (0, 1, True)
        assert not any(name in distributed.os.environ for name in distributed.LAUNCHER_VARS)
        assert join_world() is world
        from workbench.runs import launch_rank_and_world

        assert launch_rank_and_world() == (0, 1)
    finally:
        leave_world()
