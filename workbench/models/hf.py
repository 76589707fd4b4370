"""The transformers backend: runs anywhere (CPU laptop, one GPU), the reference for the other backends.

Scoring never builds a [batch, length, vocab] log-softmax: hidden states of the completion positions are
gathered first, then projected to the vocabulary a few thousand positions at a time, and only the
log-prob of the sampled token is kept. With 150k-token vocabularies and 10k-token completions that is
the difference between fitting on one GPU and not.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from workbench.models.base import Completion, SamplingConfig, encode_prompt

log = logging.getLogger(__name__)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class HFBackend:
    """Sampler and scorer over a transformers causal LM (hub id, local folder, or GGUF file).

    `max_batch_sequences` bounds how many sequences one `generate` call decodes together;
    `score_tokens_per_batch` bounds the padded tokens of one scoring forward pass and
    `logit_chunk_elems` the size of one vocabulary projection (positions x vocab).
    """

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        gguf_file: str | None = None,
        tokenizer: str | None = None,
        max_batch_sequences: int = 64,
        score_tokens_per_batch: int = 16384,
        logit_chunk_elems: int = 1 << 25,
        progress: bool = True,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = model if gguf_file is None else f"{model}/{gguf_file}"
        self.device = torch.device(device or _default_device())
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        tok_kwargs = {"gguf_file": gguf_file} if gguf_file and tokenizer is None else {}
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or model, **tok_kwargs)
        loaded = AutoModelForCausalLM.from_pretrained(
            model, dtype=dtype, **({"gguf_file": gguf_file} if gguf_file else {}), **(model_kwargs or {})
        ).to(self.device)
        loaded.eval()
        self._adopt(loaded, max_batch_sequences, score_tokens_per_batch, logit_chunk_elems, progress)

    @classmethod
    def wrap(cls, model: Any, tokenizer: Any, *, name: str = "in-memory model", max_batch_sequences: int = 64,
             score_tokens_per_batch: int = 16384, logit_chunk_elems: int = 1 << 25,
             progress: bool = False) -> "HFBackend":
        """A backend over a model already in memory (e.g. the one being trained), without reloading it.

        The caller owns the model's train/eval mode; sampling and scoring run under no_grad either way.
        """
        self = cls.__new__(cls)
        self.name = name
        self.device = next(model.parameters()).device
        self.tokenizer = tokenizer
        self._adopt(model, max_batch_sequences, score_tokens_per_batch, logit_chunk_elems, progress)
        return self

    def _adopt(self, model: Any, max_batch_sequences: int, score_tokens_per_batch: int, logit_chunk_elems: int,
               progress: bool) -> None:
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model
        self.max_batch_sequences = max_batch_sequences
        self.score_tokens_per_batch = score_tokens_per_batch
        self.logit_chunk_elems = logit_chunk_elems
        self.progress = progress
        eos = self.model.generation_config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos_ids = frozenset([eos] if isinstance(eos, int) else eos or [])
        if not self.eos_ids:
            raise ValueError(f"{self.name}: no EOS token id in the generation config or the tokenizer")

    # ----------------------------------------------------------------------------------- encoding
    def encode(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text)

    # ----------------------------------------------------------------------------------- sampling
    def _split(self, ids: Sequence[int], prompt_width: int) -> tuple[tuple[int, ...], str]:
        out: list[int] = []
        for t in ids[prompt_width:]:
            out.append(int(t))
            if t in self.eos_ids:
                return tuple(out), "stop"
        pad = self.tokenizer.pad_token_id
        while out and out[-1] == pad and pad not in self.eos_ids:
            out.pop()
        return tuple(out), "length"

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], sampling: SamplingConfig) -> list[list[Completion]]:
        """Sample `sampling.n` completions per prompt; the call is seeded once with `sampling.seed`,
        so the same prompts in the same order give the same samples on the same hardware."""
        from transformers import set_seed

        set_seed(sampling.seed)
        per_batch = max(1, self.max_batch_sequences // sampling.n)
        encoded = [self.encode(p) for p in prompts]
        results: list[list[Completion]] = []
        greedy = sampling.temperature == 0
        copies = 1 if greedy else sampling.n  # greedy samples are identical: decode once, repeat
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=sampling.max_new_tokens,
            num_return_sequences=copies,
            repetition_penalty=sampling.repetition_penalty,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_ids),
        )
        if not greedy:
            gen_kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                              top_k=sampling.top_k or None)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        bar = tqdm(total=len(prompts) * sampling.n, desc=f"sampling {self.name}", unit="sample",
                   disable=not self.progress, leave=False)
        n_tokens = 0
        for start in range(0, len(encoded), per_batch):
            chunk = encoded[start : start + per_batch]
            width = max(len(c) for c in chunk)
            pad = self.tokenizer.pad_token_id
            input_ids = torch.tensor([[pad] * (width - len(c)) + list(c) for c in chunk], device=self.device)
            attention = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk], device=self.device)
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, **gen_kwargs)
            rows = out.tolist()
            for i in range(len(chunk)):
                group = []
                for j in range(sampling.n):
                    token_ids, reason = self._split(rows[i * copies + (0 if greedy else j)], width)
                    text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
                    group.append(Completion(text, token_ids, reason))
                    n_tokens += len(token_ids)
                results.append(group)
            bar.update(len(chunk) * sampling.n)
            bar.set_postfix(tok_per_s=f"{n_tokens / max(bar.format_dict['elapsed'], 1e-9):.0f}")
        bar.close()
        return results

    # ------------------------------------------------------------------------------------ scoring
    def _project(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log-softmax of the LM head at each position, read off at the target token, chunk by chunk."""
        head = self.model.get_output_embeddings()
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        vocab = head.weight.shape[0]
        step = max(1, self.logit_chunk_elems // vocab)
        out = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
        for s in range(0, len(targets), step):
            logits = head(hidden[s : s + step]).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            tgt = targets[s : s + step]
            out[s : s + step] = logits.gather(1, tgt[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)
        return out

    @torch.no_grad()
    def token_logprobs(self, prompt_ids: Sequence[Sequence[int]],
                       completion_ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
        for i, p in enumerate(prompt_ids):
            if len(p) == 0:
                raise ValueError(f"prompt {i} is empty: the first completion token needs a context")
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]) + len(completion_ids[i]))
        results: list[torch.Tensor | None] = [None] * len(prompt_ids)
        decoder = self.model.get_decoder()
        pad = self.tokenizer.pad_token_id
        batch: list[int] = []

        def flush() -> None:
            width = max(len(prompt_ids[i]) + len(completion_ids[i]) for i in batch)
            seqs = [list(prompt_ids[i]) + list(completion_ids[i]) for i in batch]
            ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=self.device)
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=self.device)
            hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
            rows, cols, targets = [], [], []
            for r, i in enumerate(batch):
                p, c = len(prompt_ids[i]), len(completion_ids[i])
                rows += [r] * c
                cols += range(p - 1, p + c - 1)
                targets += list(completion_ids[i])
            logps = self._project(hidden[rows, cols], torch.tensor(targets, device=self.device, dtype=torch.long))
            offset = 0
            for i in batch:
                c = len(completion_ids[i])
                results[i] = logps[offset : offset + c].cpu()
                offset += c
            batch.clear()

        bar = tqdm(total=len(order), desc=f"scoring {self.name}", unit="seq", disable=not self.progress, leave=False)
        for i in order:
            longest = len(prompt_ids[i]) + len(completion_ids[i])
            if batch and (len(batch) + 1) * longest > self.score_tokens_per_batch:
                bar.update(len(batch))
                flush()
            batch.append(i)
        if batch:
            bar.update(len(batch))
            flush()
        bar.close()
        return [r if r is not None else torch.empty(0) for r in results]

