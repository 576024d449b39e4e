"""A two-node local Ray cluster shared by every test of this folder (started once, torn down after)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ray_cluster import LocalCluster  # noqa: E402

pytest.importorskip("ray", reason="the Ray backend's tests need the ray extra: pip install 'oplora[ray]'")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster().start()
    try:
        yield cluster
    finally:
        pids = cluster.all_pids()
        cluster.stop()
        left = [p for p in pids if Path(f"/proc/{p}").exists()]
        assert not left, f"processes of the test cluster still running: {left}"
