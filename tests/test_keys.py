"""Redis key layouts: the single-stream one keeps its names, the partitioned one fits a cluster."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from app.errors import ConfigurationError
from app.keys import KeyBuilder, glob_escape, partition_tags
from app.settings import RedisSettings, WorkerSettings, load_settings, parse_partitions


def _slots(keys: KeyBuilder, tenant_id: str, user_id: str, session_id: str) -> set[int]:
    session = keys.session(tenant_id, user_id, session_id)
    names = (session.window, session.turns, session.meta, session.user_sessions, session.stream)
    return {key_slot(name.encode()) for name in names}


def test_single_stream_layout_keeps_its_key_names() -> None:
    keys = KeyBuilder("engram")
    session = keys.session("acme", "sam", "s1")

    assert session.window == "engram:{acme|sam}:session:s1:window"
    assert session.user_sessions == "engram:{acme|sam}:sessions"
    assert session.stream == keys.stream() == "engram:stream:turns"
    assert keys.dead_letter_stream() == "engram:stream:turns:dead"
    assert keys.failure_counts() == "engram:stream:turns:failures"
    assert keys.learning_due == "engram:learning:due"
    assert not keys.partitioned


@pytest.mark.parametrize(("partitions", "cluster"), [(1, True), (8, False), (48, True)])
def test_partitioned_session_keys_share_slot(partitions: int, cluster: bool) -> None:
    keys = KeyBuilder("engram", partitions, cluster=cluster)

    for number in range(200):
        assert len(_slots(keys, "acme", f"user-{number}", f"session-{number % 7}")) == 1
    stream = keys.stream(keys.partition_of("acme", "user-3"))
    assert key_slot(keys.dead_letter_stream(0).encode()) == key_slot(keys.stream(0).encode())
    assert key_slot(keys.failure_counts(0).encode()) == key_slot(keys.stream(0).encode())
    assert stream.startswith("engram:{p")
    assert key_slot(keys.learning_due.encode()) == key_slot(keys.learning_pending.encode())


def test_user_partition_is_stable_and_even() -> None:
    keys = KeyBuilder("engram", 16)
    counts = [0] * 16
    for number in range(4000):
        counts[keys.partition_of("acme", f"user-{number}")] += 1

    assert min(counts) > 4000 / 16 * 0.8
    assert max(counts) < 4000 / 16 * 1.2
    # Another process, with another string-hash seed, puts the users where this one does.
    names = ("sam", "kim", "lou", "عمر", "🦊")
    script = (
        "from app.keys import KeyBuilder; k = KeyBuilder('engram', 16); "
        f"print([k.partition_of('acme', name) for name in {names!r}])"
    )
    other = subprocess.run(  # noqa: S603  (this interpreter, fixed script)
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout.strip() == str([keys.partition_of("acme", name) for name in names])


@pytest.mark.parametrize("partitions", [1, 3, 6, 64, 1024])
def test_partition_tags_spread_over_slots(partitions: int) -> None:
    tags = partition_tags(partitions)
    width = REDIS_CLUSTER_HASH_SLOTS / partitions

    assert len(set(tags)) == partitions
    for number, tag in enumerate(tags):
        assert int(key_slot(tag.encode()) // width) == number


def test_partition_numbers_are_checked() -> None:
    keys = KeyBuilder("engram", 4)

    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        keys.stream(4)
    with pytest.raises(ValueError, match="at least 1"):
        KeyBuilder("engram", 0)


def test_glob_escape_matches_ids_literally() -> None:
    assert glob_escape("engram:{acme|a*b?[c]}") == r"engram:\{acme|a\*b\?\[c\]\}"


def test_worker_partitions_parse_numbers_and_ranges() -> None:
    assert parse_partitions("0-3,8, 5") == [0, 1, 2, 3, 5, 8]
    assert WorkerSettings(partitions="2-3").owned_partitions(4) == [2, 3]
    assert WorkerSettings().owned_partitions(3) == [0, 1, 2]


@pytest.mark.parametrize(
    ("value", "message"),
    [("a-b", "not a number"), ("3-1", "runs backwards"), ("", "not a number"), ("5000", "1024")],
)
def test_bad_worker_partitions_name_the_setting(value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WorkerSettings(partitions=value)


def test_worker_partitions_beyond_count_rejected() -> None:
    with pytest.raises(ConfigurationError, match="REDIS_STREAM_PARTITIONS is 4"):
        WorkerSettings(partitions="2-5").owned_partitions(4)


def test_cluster_and_sentinels_exclude_each_other() -> None:
    with pytest.raises(ValidationError, match="exclude each other"):
        RedisSettings(cluster=True, sentinels=["127.0.0.1:26379"])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (None, "needs REDIS_URL naming one node"),
        ("unix:///run/redis.sock", "needs a redis:// or rediss:// REDIS_URL"),
        ("redis://10.0.0.5:6379/3", "needs database 0"),
    ],
)
def test_cluster_url_is_checked(url: str | None, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RedisSettings(cluster=True, url=url)


def test_cluster_url_accepts_database_zero() -> None:
    assert RedisSettings(cluster=True, url="redis://10.0.0.5:6379/0").cluster
    assert RedisSettings(cluster=True, url="rediss://10.0.0.5:6379").cluster


def test_settings_errors_name_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_STREAM_PARTITIONS", "0")

    with pytest.raises(ConfigurationError) as raised:
        load_settings()

    assert str(raised.value).startswith("invalid settings: REDIS_STREAM_PARTITIONS: ")
    assert "greater than or equal to 1" in str(raised.value)
