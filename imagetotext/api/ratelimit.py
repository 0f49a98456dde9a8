"""A token bucket per API caller, kept in the database like everything else.

One token per request from the database would be a write transaction on every API call, a
large share of a small request's cost. So a process takes a caller's tokens in batches (as
many as the caller used here in the last CREDIT_SECONDS, growing while it keeps spending them
all, never more than a second's worth of its limit) and spends them locally. Credit left over
when CREDIT_SECONDS pass is given back with the next batch. The database stays the one count
across processes; a caller can run ahead of it by at most one batch per process.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from imagetotext.models import TokenBucket

CREDIT_SECONDS = 1.0


@dataclass
class Credit:
    left: int = 0
    batch: int = 1
    used: int = 0  # since it was taken
    taken_at: float = float("-inf")


_credits: dict[str, Credit] = {}
_lock = threading.Lock()


def forget_credit() -> None:
    """Drop every process-local batch (tests: a new database owes nothing to an old one)."""
    with _lock:
        _credits.clear()


def take(key: str, per_minute: int) -> float:
    """Take one token; 0 when allowed, else the seconds until the next token."""
    if per_minute <= 0:
        return 0.0
    now = time.monotonic()
    with _lock:
        credit = _credits.setdefault(key, Credit())
        fresh = now - credit.taken_at < CREDIT_SECONDS
        if credit.left > 0 and fresh:
            credit.left -= 1
            credit.used += 1
            return 0.0
        # Spent within the period: the caller is busy, take more; else take what it used.
        wanted = credit.batch * 2 if fresh else credit.used + 1
        batch = max(1, min(wanted, per_minute // 60))
        unspent, credit.left = credit.left, 0
    wait, got = take_from_bucket(key, per_minute, batch, unspent)
    if got:
        with _lock:
            credit.left, credit.batch, credit.used, credit.taken_at = got - 1, batch, 1, time.monotonic()
    return wait


def take_from_bucket(key: str, per_minute: int, wanted: int, give_back: int = 0) -> tuple[float, int]:
    """Take up to `wanted` tokens (at least one) after returning `give_back`.

    Returns (seconds until a token, 0) when there is none, else (0, tokens taken).
    """
    now = timezone.now()
    rate = per_minute / 60
    with transaction.atomic():
        bucket, _ = TokenBucket.objects.select_for_update().get_or_create(
            key=key, defaults={"tokens": float(per_minute), "updated_at": now}
        )
        elapsed = (now - bucket.updated_at).total_seconds()
        tokens = min(float(per_minute), bucket.tokens + max(elapsed, 0) * rate + give_back)
        if tokens < 1:
            if give_back:
                TokenBucket.objects.filter(pk=bucket.pk).update(tokens=tokens, updated_at=now)
            return (1 - tokens) / rate, 0
        got = min(wanted, math.floor(tokens))
        TokenBucket.objects.filter(pk=bucket.pk).update(tokens=tokens - got, updated_at=now)
    return 0.0, got
