"""The writable-directory probe: whether a results, checkpoint or figures directory can be
written, checked before any work so a long run never fails at its first save."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def check_writable_dir(path: str | Path, what: str) -> None:
    """Raise ``ValueError`` unless ``path`` is, or can be created as, a directory we can
    write to. Probes with a temporary file in the nearest existing ancestor and leaves
    nothing behind (no directory is created)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} exists and is not a directory; pick a directory")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what} {path} cannot be created: {existing} is a file, not a "
                         "directory; pick another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=existing)
    except OSError as exc:
        raise ValueError(f"{what} {path} is not writable ({exc.strerror or exc} in "
                         f"{existing}); pick a writable directory") from None
    os.close(fd)
    os.unlink(probe)
