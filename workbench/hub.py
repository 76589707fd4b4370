"""Is a Hugging Face hub model or dataset reachable from here? Asked once, in seconds, before anything loads.

Offline, the hub clients retry for half a minute and then raise a connection traceback from deep inside
transformers or datasets. One request with a short timeout (or a look into the local cache) tells the
user the same thing at once, in one line that says what to do instead: a local folder, or
``HF_HUB_OFFLINE=1`` for what the cache already holds.
"""

from __future__ import annotations

import threading

from huggingface_hub import HfApi, constants, is_offline_mode, try_to_load_from_cache
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

from workbench.errors import UserError

try:  # the HTTP client huggingface_hub is built on: httpx2 in its 2.x releases, httpx before
    from httpx2 import TransportError
except ImportError:  # pragma: no cover - older huggingface_hub
    from httpx import TransportError

PROBE_TIMEOUT_S = 4.0
"""One metadata request, given this long in all: the check answers within it even when the hub hangs."""


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as huggingface_hub reads it."""
    return bool(is_offline_mode())


def _ask(repo_id: str, repo_type: str) -> str | None:
    api = HfApi()
    info = api.model_info if repo_type == "model" else api.dataset_info
    try:
        info(repo_id, timeout=PROBE_TIMEOUT_S + 1)  # the join in _probe gives up first
    except GatedRepoError:
        return None  # it exists; access is the download's business and its error says so
    except RepositoryNotFoundError:
        return "not found"
    except (TransportError, HfHubHTTPError, OSError) as exc:
        return f"unreachable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no answer'})"
    return None


def _probe(repo_id: str, repo_type: str) -> str | None:
    """None when the hub knows ``repo_id``; else why not, as a phrase ("not found", "unreachable (...)").
    The request runs in a daemon thread given PROBE_TIMEOUT_S in all: the client's own timeout applies
    per connect/read step, and it retries some of them."""
    answer: list[str | None] = []
    thread = threading.Thread(target=lambda: answer.append(_ask(repo_id, repo_type)), daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S)
    return answer[0] if answer else f"unreachable (no answer within {PROBE_TIMEOUT_S:.0f} s)"


def check_hub_model(flag: str, model: str, filename: str = "config.json") -> None:
    """A hub model id must be in the local cache or known to a reachable hub; else one UserError line."""
    if isinstance(try_to_load_from_cache(model, filename), str):
        return
    local = "or give a local model folder"
    if offline():
        raise UserError(f"{flag} {model}: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set; "
                        f"download it where there is network (hf download {model}) {local}")
    why = _probe(model, "model")
    if why == "not found":
        raise UserError(f"{flag} {model}: no such model on the hub {constants.ENDPOINT} (a private one needs "
                        f"`hf auth login`); check the name {local}")
    if why:
        raise UserError(f"{flag} {model}: the hub {constants.ENDPOINT} is {why} and the model is not in the local "
                        f"cache; download it where there is network (hf download {model}) and set "
                        f"HF_HUB_OFFLINE=1, {local}")


def check_hub_datasets(repo_ids: list[str], data_hint: str) -> None:
    """The hub datasets the real benchmarks come from when no data folder is set; ``data_hint`` says how
    to set one. Offline mode is left to datasets' cache (its failure is caught by the caller)."""
    if offline():
        return
    for repo_id in repo_ids:
        why = _probe(repo_id, "dataset")
        if why:
            raise UserError(f"the real benchmarks come from the hub when no data folder is set, and dataset "
                            f"{repo_id} is {why} on {constants.ENDPOINT}; {data_hint}")
