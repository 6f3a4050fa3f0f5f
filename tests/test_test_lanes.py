"""``scripts/test_lanes.py`` (``make test``): lane 2's broker and its files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _lanes():
    spec = importlib.util.spec_from_file_location("test_lanes", ROOT / "scripts" / "test_lanes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/5", "redis://127.0.0.1:6379/11"),
        ("redis://127.0.0.1:6379/5/", "redis://127.0.0.1:6379/11"),
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379/11"),
        ("rediss://user:secret@redis.example:6380/0", "rediss://user:secret@redis.example:6380/11"),
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:guest@127.0.0.1:5672//"),
        ("rediss://redis.example:6380/0?ssl_cert_reqs=required",
         "rediss://redis.example:6380/11?ssl_cert_reqs=required"),
    ],
)
def test_lane_2_uses_its_own_redis_database(url: str, expected: str) -> None:
    assert _lanes().lane_2_broker(url) == expected


def test_lane_2_files_exist_and_keep_a_redis_database_of_their_own() -> None:
    lanes = _lanes()
    for path in lanes.LANE_2:
        assert (ROOT / path).is_file(), path
    # The Redis database of lane 2 is not one that make stress's lanes (15, 14, ...) or the
    # CI's tox envs (5, 6) use.
    assert lanes.LANE_2_REDIS_DB not in {5, 6, 12, 13, 14, 15}
