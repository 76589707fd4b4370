"""Whether the tests may make a user+mount namespace (for a tiny tmpfs or a read-only bind mount): the
full-disk and read-only-folder cases need one, and say why they are skipped where it cannot be made."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def _namespace_mounts() -> str | None:
    """Why a user+mount namespace cannot be made here, else None."""
    if shutil.which("unshare") is None:
        return "the unshare tool is not installed"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare -rm cannot mount a tmpfs here: {probe.stderr.strip()}"


NO_NAMESPACE = _namespace_mounts()
needs_namespace = pytest.mark.skipif(NO_NAMESPACE is not None, reason=f"needs a mount namespace: {NO_NAMESPACE}")
