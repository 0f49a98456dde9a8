"""A token bucket per API caller, kept in the database like everything else."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from imagetotext.models import TokenBucket


def take(key: str, per_minute: int) -> float:
    """Take one token; 0 when allowed, else the seconds until the next token."""
    if per_minute <= 0:
        return 0.0
    now = timezone.now()
    rate = per_minute / 60
    with transaction.atomic():
        bucket, _ = TokenBucket.objects.select_for_update().get_or_create(
            key=key, defaults={"tokens": float(per_minute), "updated_at": now}
        )
        elapsed = (now - bucket.updated_at).total_seconds()
        tokens = min(float(per_minute), bucket.tokens + max(elapsed, 0) * rate)
        if tokens < 1:
            return (1 - tokens) / rate
        TokenBucket.objects.filter(pk=bucket.pk).update(tokens=tokens - 1, updated_at=now)
    return 0.0
