"""Shared fixtures: real frames from ../shared/data, skipped cleanly where the data is absent."""

from __future__ import annotations

import numpy as np
import pytest

from endolight.data import default_data_root, list_frames, load_frame


@pytest.fixture(scope="session")
def data_root():
    root = default_data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}")
    return root


@pytest.fixture(scope="session")
def real_frames(data_root) -> list[np.ndarray]:
    """One real well-lit frame per organ of the held-out split, shrunk to 256 px."""
    seen, frames = set(), []
    for ref in list_frames("heldout", data_root):
        if ref.organ not in seen:
            seen.add(ref.organ)
            frames.append(load_frame(ref, 256))
    return frames


@pytest.fixture(scope="session", autouse=True)
def network_cache(tmp_path_factory):
    """The exported network graphs (endolight.network_runtime) go to a folder of the test run,
    not the user's cache."""
    folder = tmp_path_factory.mktemp("endolight-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENDOLIGHT_CACHE", str(folder))
        yield folder
