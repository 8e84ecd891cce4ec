"""Every Redis key the service reads or writes is built here.

Two layouts exist.

- **Single stream** (the default: one partition, no cluster). A user's keys
  share the hash tag ``{tenant|user}`` and all promotion events go to one
  stream, ``engram:stream:turns``.
- **Partitioned** (``REDIS_STREAM_PARTITIONS`` above 1, or ``REDIS_CLUSTER``).
  Each user belongs to one of N partitions, chosen by a CRC32 of the tenant and
  user ids. The partition's hash tag comes first in every key of its users and
  of its stream, so the script that appends a turn to a session and emits its
  promotion event touches one Redis Cluster slot. Each tag is picked so that
  partition n of N hashes into the n-th of N equal slices of the 16,384 slots;
  a cluster whose primaries hold equal slot ranges (as ``redis-cli --cluster
  create`` assigns them) therefore gets an equal share of the partitions.
  Workers read the partitions' streams independently, so they spread over the
  nodes too.

Tenant, user and session ids are validated elsewhere to exclude ``:``, ``|``,
``{`` and ``}``, so no two scopes can produce the same key. Changing the
layout or the partition count moves every user's keys, so it is done with
the stream drained (see docs/scaling.md).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

STREAM_GROUP = "promotion"


@functools.cache
def partition_tags(partitions: int) -> tuple[str, ...]:
    """Pick each partition's hash tag so that the partitions spread evenly over the slots.

    Partition n's tag is ``p<n>.<k>`` with the smallest k whose slot falls in
    the n-th of ``partitions`` equal slices of the slot space. The result
    depends on nothing but ``partitions``, so every process agrees on it.
    """
    tags = []
    for number in range(partitions):
        low = number * REDIS_CLUSTER_HASH_SLOTS // partitions
        high = (number + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
        suffix = 0
        while not low <= key_slot(f"p{number}.{suffix}".encode()) < high:
            suffix += 1
        tags.append(f"p{number}.{suffix}")
    return tuple(tags)


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The keys that hold one session's short-term window."""

    window: str
    """Sorted set of turn ids, scored by their order of arrival."""
    turns: str
    """Hash of turn id to the turn as JSON."""
    meta: str
    """Hash with the session's sequence counter and timestamps."""
    user_sessions: str
    """Sorted set of the user's session ids, scored by last activity (ms)."""
    stream: str
    """The promotion stream of the user's partition."""


@dataclass(frozen=True, slots=True)
class KeyBuilder:
    """Builds namespaced keys under one prefix, in the single-stream or partitioned layout."""

    prefix: str = "engram"
    partitions: int = 1
    """How many promotion streams there are; users are spread over them."""
    cluster: bool = False
    """Redis Cluster: the partitioned layout even with one partition."""

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError("partitions must be at least 1")

    @property
    def partitioned(self) -> bool:
        return self.cluster or self.partitions > 1

    def partition_of(self, tenant_id: str, user_id: str) -> int:
        """Return the partition of a user's keys and promotion events, the same in every process."""
        if self.partitions == 1:
            return 0
        return zlib.crc32(f"{tenant_id}|{user_id}".encode()) % self.partitions

    def _partition_tag(self, partition: int) -> str:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} is outside 0..{self.partitions - 1}")
        return f"{self.prefix}:{{{partition_tags(self.partitions)[partition]}}}"

    def user_tag(self, tenant_id: str, user_id: str) -> str:
        """The beginning shared by all of a user's keys."""
        if not self.partitioned:
            return f"{self.prefix}:{{{tenant_id}|{user_id}}}"
        partition = self.partition_of(tenant_id, user_id)
        return f"{self._partition_tag(partition)}:{tenant_id}|{user_id}"

    def user_sessions(self, tenant_id: str, user_id: str) -> str:
        return f"{self.user_tag(tenant_id, user_id)}:sessions"

    def session(self, tenant_id: str, user_id: str, session_id: str) -> SessionKeys:
        base = f"{self.user_tag(tenant_id, user_id)}:session:{session_id}"
        return SessionKeys(
            window=f"{base}:window",
            turns=f"{base}:turns",
            meta=f"{base}:meta",
            user_sessions=self.user_sessions(tenant_id, user_id),
            stream=self.stream(self.partition_of(tenant_id, user_id)),
        )

    def stream(self, partition: int = 0) -> str:
        """Return the name of one partition's stream of accepted turns."""
        if not self.partitioned:
            return f"{self.prefix}:stream:turns"
        return f"{self._partition_tag(partition)}:stream:turns"

    def dead_letter_stream(self, partition: int = 0) -> str:
        """Events of one partition that failed promotion too often, with their last error."""
        return f"{self.stream(partition)}:dead"

    def failure_counts(self, partition: int = 0) -> str:
        """Hash of event id to the number of failed promotion attempts, per partition."""
        return f"{self.stream(partition)}:failures"

    @property
    def layout(self) -> str:
        """String key that records the partition count and layout the first process used."""
        return f"{self.prefix}:layout"

    @property
    def learning_due(self) -> str:
        """Sorted set of sessions to learn from, scored by when they are due (epoch seconds)."""
        return f"{self._learning_tag}:due"

    @property
    def learning_pending(self) -> str:
        """Hash of session to the number of turns promoted since it was last claimed."""
        return f"{self._learning_tag}:pending"

    @property
    def _learning_tag(self) -> str:
        # The claim script reads both learning keys, so on a cluster they share a slot.
        return f"{self.prefix}:{{learning}}" if self.partitioned else f"{self.prefix}:learning"


def glob_escape(text: str) -> str:
    """Escape the characters that SCAN's MATCH pattern treats specially."""
    return "".join(f"\\{char}" if char in "\\*?[]{}^" else char for char in text)
