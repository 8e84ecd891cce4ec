"""Retention: long-term memories older than a tenant's maximum age are purged.

The age is measured from ``created_at`` (when Engram stored the memory), so
importing old conversations does not purge them at once. Memories whose own
``expires_at`` has passed are purged too. Workers run the purge every
``WORKER_PURGE_INTERVAL_S``; running it in several workers at once is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from app.logging import get_logger

if TYPE_CHECKING:
    from app.longterm import LongTermStore

log = get_logger("retention")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    default_days: int = 0
    """Maximum age for tenants without their own setting; 0 keeps memories forever."""
    days_by_tenant: dict[str, int] = field(default_factory=dict)
    """Maximum age per tenant; 0 keeps that tenant's memories forever."""


async def purge_once(
    store: LongTermStore, policy: RetentionPolicy, now: datetime | None = None
) -> dict[str, int]:
    """Delete what the policy no longer keeps; return rows deleted per tenant rule."""
    now = now or datetime.now(UTC)
    deleted = {"expired": await store.purge_expired(now)}
    for tenant_id, days in policy.days_by_tenant.items():
        if days > 0:
            cutoff = now - timedelta(days=days)
            deleted[tenant_id] = await store.purge_created_before(cutoff, tenant_id=tenant_id)
    if policy.default_days > 0:
        cutoff = now - timedelta(days=policy.default_days)
        deleted["default"] = await store.purge_created_before(
            cutoff, exclude_tenants=sorted(policy.days_by_tenant)
        )
    for rule, count in deleted.items():
        if count:
            log.info("retention.purged", rule=rule, memories_deleted=count)
    return deleted


async def purge_periodically(
    store: LongTermStore, policy: RetentionPolicy, interval_s: float, stop: asyncio.Event
) -> None:
    """Run ``purge_once`` every ``interval_s`` until ``stop`` is set; log and go on after errors."""
    log.info("retention.started", interval_s=interval_s, default_days=policy.default_days)
    while not stop.is_set():
        try:
            await purge_once(store, policy)
        except Exception:
            log.exception("retention.failed", retry_in_s=interval_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
    log.info("retention.stopped")
