"""Character-level tokenizer for the toy world, in Hugging Face format.

One token per character keeps the toy's arithmetic legible token by token (a per-token teacher
log-ratio lines up with one written symbol) and makes every task string round-trip exactly.
It is a ``PreTrainedTokenizerFast`` built from the ``tokenizers`` library, so the rest of the
workbench loads it with ``AutoTokenizer`` exactly as it loads a real model's tokenizer.

There is no BOS token and no post-processor: ``tok(prompt)`` is just the characters, so the ids
of a prompt followed by the ids of a completion are the ids of their concatenation. The plain
prompt's own ``Q:`` opening marks the start of a sequence.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN)
# Every character the task writes: digits, operators, the prompt frame, the boxed answer and the
# correction marker.
CHARACTERS: str = "0123456789+-*=;:?QA\\boxed{}!"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the toy tokenizer; ids are fixed (specials first, then ``CHARACTERS`` in order)."""
    if len(set(CHARACTERS)) != len(CHARACTERS):
        raise ValueError("CHARACTERS must not repeat a character")
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *CHARACTERS))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="right",
        model_max_length=256,  # a prompt, a student's prefix and a teacher's restart after it
        clean_up_tokenization_spaces=False,
    )
    return tok
