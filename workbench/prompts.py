"""Prompt construction, in one place so eval, training and analysis ask the model the same question.

The paper's prompt is the question followed by "Put your final answer within \\boxed{}." as a single user
turn, with the model's chat template applied. Models without a chat template (base models, the toy
world) get the plain text. The toy world's problems are already prompts (`Q:...?A:`), so its style passes
them through unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

PAPER_INSTRUCTION = "Put your final answer within \\boxed{}."
PromptStyle = Literal["paper", "raw"]


def question_text(question: str, style: PromptStyle = "paper") -> str:
    if style == "paper":
        return f"{question.strip()}\n{PAPER_INSTRUCTION}"
    if style == "raw":
        return question
    raise ValueError(f"unknown prompt style {style!r}; expected 'paper' or 'raw'")


def render_prompt(question: str, tokenizer: Any | None = None, style: PromptStyle = "paper") -> str:
    """The exact string fed to the model: chat-templated when the tokenizer has a template."""
    text = question_text(question, style)
    if style == "raw" or tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return text
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
