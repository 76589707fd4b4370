"""Two processes (torchrun, gloo on CPU; one node, or two "nodes" of one process each) train SCOPE as one: a group split between the processes is
weighted as a whole, logged losses and metrics cover every rollout, and only rank 0 writes the run folder.

The per-device batch (12) is not a multiple of the group size (8), so each generation batch of 24
rollouts holds group 1 half on rank 0 (rows 8-11) and half on rank 1 (rows 12-15).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from train.scope import WeightConfig, scope_weights
from workbench.records import read_records

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
WORLD, PER_DEVICE, GROUP, STEPS = 2, 12, 8, 3
BATCH = WORLD * PER_DEVICE

# Installed in every process of rank > 0 (and their children) through PYTHONPATH: records, one
# tab-separated line each, every file that process creates, writes, renames or removes inside the
# run folder (the folder itself is shared). Arrow's and torch's C++ writers bypass Python's audit
# events, but the shard store's rename and every JSON, CSV and tokenizer file go through them.
AUDIT_HOOK = '''
import os, sys
if os.environ.get("RANK", "0") != "0":
    _root = os.path.realpath(os.environ["AUDIT_ROOT"])
    _log = os.environ["AUDIT_LOG"]
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _under(path):
        try:
            return os.path.realpath(os.fsdecode(path)).startswith(_root + os.sep)
        except (TypeError, ValueError):
            return False

    def _hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            mode = args[1] if isinstance(args[1], str) else ""
            flags = args[2] if isinstance(args[2], int) else 0
            # A folder opened for writing is an anonymous O_TMPFILE that never gets a name.
            hit = (flags & _WRITE or any(c in mode for c in "wax+")) and not os.path.isdir(args[0])
            paths = args[:1]
        elif event in ("os.rename", "os.remove", "os.rmdir", "os.truncate"):
            hit, paths = True, args[:2] if event == "os.rename" else args[:1]
        elif event == "os.mkdir":
            hit, paths = not os.path.exists(args[0]), args[:1]
        else:
            return
        if hit and any(_under(p) for p in paths):
            with open(_log, "a") as fh:
                fh.write("\\t".join([event, *(os.path.realpath(os.fsdecode(p)) for p in paths)]) + "\\n")

    with open(_log, "a") as fh:
        fh.write(f"armed\\trank {os.environ['RANK']}\\n")
    sys.addaudithook(_hook)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=["one node", "two nodes"])
def run(request, tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, audit log) of a 3-step toy SCOPE run on two processes: one torchrun with two processes,
    or two torchruns of one process each as two "nodes" (--nnodes 2 --node_rank 0/1, rendezvous on
    127.0.0.1, gloo), as a multi-node launch runs."""
    tmp = tmp_path_factory.mktemp("distributed")
    out, audit_dir, audit_log = tmp / "run", tmp / "audit", tmp / "audit.log"
    audit_dir.mkdir()
    (audit_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUDIT_ROOT": str(out), "AUDIT_LOG": str(audit_log),
           "PYTHONPATH": os.pathsep.join(p for p in (str(audit_dir), os.environ.get("PYTHONPATH")) if p)}
    train = ["-m", "train.cli", "--config", "train/recipes/toy_scope.yaml",
             "--per_device_train_batch_size", str(PER_DEVICE), "--max_steps", str(STEPS),
             "--toy_problems_per_tier", "4", "--heldout_every", "0", "--output_dir", str(out)]
    launcher = [sys.executable, "-m", "torch.distributed.run"]
    if request.param == "one node":
        launches = [[*launcher, "--standalone", "--nproc_per_node", str(WORLD), *train]]
    else:
        port = free_port()
        launches = [[*launcher, "--nnodes", str(WORLD), "--nproc_per_node", "1", "--node_rank", str(node),
                     "--master_addr", "127.0.0.1", "--master_port", str(port), *train] for node in range(WORLD)]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in launches]
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=900)
            assert proc.returncode == 0, stdout[-3000:] + stderr[-5000:]
    finally:
        for proc in procs:  # a node that failed leaves the other waiting at the rendezvous
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out, audit_log


@pytest.fixture(scope="module")
def snapshots(run) -> pd.DataFrame:
    return read_records(run[0] / "snapshots").sort_values("sample_idx").reset_index(drop=True)


@pytest.fixture(scope="module")
def history(run) -> list[dict]:
    rows = [json.loads(line) for line in (run[0] / "log_history.jsonl").read_text().splitlines()]
    steps = [h for h in rows if "loss" in h]
    assert [h["step"] for h in steps] == list(range(1, STEPS + 1))
    return steps


def test_only_rank_0_writes_one_whole_run_folder(run):
    out, audit_log = run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == WORLD and manifest["status"] == "finished"
    assert sorted(p.name for p in out.iterdir()) == [
        "log_history.csv", "log_history.jsonl", "manifest.json", "model", "snapshots"]
    assert len(list((out / "snapshots").iterdir())) == 1  # one shard, no leftover temporary file
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (out / "model").iterdir()}
    audit = [line.split("\t") for line in audit_log.read_text().splitlines()]
    assert ["armed", "rank 1"] in audit
    # Rank 1 may probe that the folder is writable with a file it removes again, nothing more.
    created = {path for event, *paths in audit if event in ("open", "os.mkdir", "os.rename") for path in paths}
    removed = {path for event, *paths in audit if event in ("os.remove", "os.rmdir") for path in paths}
    assert created - removed == set(), audit


def test_snapshots_hold_every_rollout_of_every_step_once(snapshots):
    assert len(snapshots) == STEPS * BATCH
    assert snapshots["sample_idx"].tolist() == list(range(STEPS * BATCH))
    assert (snapshots["generation"] == snapshots["sample_idx"] // BATCH).all()
    assert (snapshots["group_id"] == snapshots["sample_idx"] // GROUP).all()
    assert (snapshots["step"] == snapshots["generation"]).all()


def test_weights_are_normalised_over_whole_groups_across_processes(snapshots):
    rank = (snapshots["sample_idx"] % BATCH) // PER_DEVICE
    # A (group, path) with rollouts on both processes: what a per-process softmax would get wrong.
    ranks_per_segment = rank.groupby([snapshots["group_id"], snapshots["path"]]).nunique()
    assert (ranks_per_segment == WORLD).any()

    sums = snapshots.groupby(["group_id", "path"])["weight"].sum()
    assert sums.to_numpy() == pytest.approx(1.0, abs=1e-5)
    expected = scope_weights(
        torch.tensor(snapshots["group_id"].to_numpy()),
        torch.tensor((snapshots["path"] == "mle").to_numpy()),
        torch.tensor(snapshots["student_log_ppl"].to_numpy(), dtype=torch.float32),
        torch.tensor(snapshots["teacher_log_ppl"].to_numpy(), dtype=torch.float32),
        WeightConfig(),
    )
    diff = np.abs(snapshots["weight"].to_numpy() - expected.numpy()).max()
    print(f"weights of {len(snapshots)} rollouts vs a single-process recomputation: max |diff| {diff:.3g}")
    assert diff <= 1e-6


def test_logged_losses_and_metrics_cover_both_processes(snapshots, history):
    groups = BATCH / GROUP
    for h, (_, gen) in zip(history, snapshots.groupby("generation"), strict=True):
        assert h["loss"] == pytest.approx(h["loss/mle"] + h["loss/opd"], rel=1e-5, abs=1e-5)
        # On-policy (one update per batch), rho = 1 in Eqs. 2-3: the step's J is
        # (1/G) [sum_C w * (-|y|) + sum_W w * sum_t (log pi_S - log pi_T)] over all 24 rollouts.
        mle, opd = gen[gen["path"] == "mle"], gen[gen["path"] == "opd"]
        log_ratio = [sum(s) - sum(t) for s, t in zip(opd["student_logps"], opd["teacher_logps"], strict=True)]
        assert h["loss/mle"] == pytest.approx(-(mle["weight"] * mle["n_tokens"]).sum() / groups, rel=1e-4)
        assert h["loss/opd"] == pytest.approx((opd["weight"] * log_ratio).sum() / groups, rel=1e-4, abs=1e-6)
        assert h["frac_correct"] == pytest.approx(gen["correct"].mean())
        assert h["ppl/student_mle"] == pytest.approx(np.exp(mle["student_log_ppl"]).mean(), rel=1e-5)
        if len(opd):
            assert h["opd/log_ratio"] == pytest.approx(sum(log_ratio) / opd["n_tokens"].sum(), rel=1e-4)
