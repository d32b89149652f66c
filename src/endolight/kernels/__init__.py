"""Fused CPU kernels for the inference fast path."""

from __future__ import annotations

import hashlib
from pathlib import Path

_HERE = Path(__file__).parent
# numba's on-disk cache (``cache=True``) is keyed on each compiled function's own source file: a
# kernel in fused.py or planar.py is not recompiled when a helper it calls in common.py, or a
# constant it bakes in from io/yuv.py, changes. Their digest is kept beside the cache, and a
# different one clears the cache. (A cache elsewhere, NUMBA_CACHE_DIR or numba's per-user
# fallback for a read-only install, belongs to an installed copy that nobody edits.)
DEPENDENCIES = (_HERE / "common.py", _HERE.parent / "io" / "yuv.py")


def clear_stale_cache(cache: Path = _HERE / "__pycache__",
                      dependencies: tuple[Path, ...] = DEPENDENCIES) -> bool:
    """Delete numba's cached kernels in ``cache`` when ``dependencies`` changed since the last
    call; returns whether it did."""
    digest = hashlib.sha256(b"\0".join(p.read_bytes() for p in dependencies)).hexdigest()
    stamp = cache / "kernels.dependencies"
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass
    for cached in cache.glob("*.nb[ic]"):
        cached.unlink(missing_ok=True)
    try:
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # a read-only install: numba caches elsewhere
        pass
    return True


clear_stale_cache()
