"""Claim a key before the request runs, store the answer after it: the one home of the
double-submission rule, for pages (form token) and the API (``Idempotency-Key``).

A key is claimed by inserting its row (unique per user and key), so of two submissions
at once exactly one runs; the other finds the row and, once the first is done, gets its
answer. A request that did not succeed releases its key (the row is deleted), so the
corrected submission can use it again. Rows are kept ``IDEMPOTENCY_KEY_TTL`` (24 hours by
default); a row still pending after ``PENDING_STALE`` (the process that claimed it died)
may be claimed again."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from idempotency.models import IdempotencyKey

MAX_KEY_LENGTH = 255
PENDING_STALE = dt.timedelta(minutes=2)


def ttl() -> dt.timedelta:
    return dt.timedelta(seconds=getattr(settings, "IDEMPOTENCY_KEY_TTL", 24 * 3600))


def fingerprint(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


@dataclass(frozen=True)
class Claim:
    """``outcome``: "claimed" (run the request, then ``complete`` or ``release``),
    "done" (answer ``record``'s stored response), "mismatch" (the key was used for
    another request), or "pending" (the first request is still running)."""

    outcome: str
    record: IdempotencyKey | None = None


def purge(now: dt.datetime | None = None) -> int:
    now = now or timezone.now()
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=now - ttl()).delete()
    return deleted


def claim(*, user, key: str, fingerprint: str) -> Claim:
    now = timezone.now()
    purge(now)
    try:
        with transaction.atomic():
            created = IdempotencyKey.objects.create(user=user, key=key, fingerprint=fingerprint, created_at=now)
        return Claim("claimed", created)
    except IntegrityError:
        pass
    record = IdempotencyKey.objects.filter(user=user, key=key).first()
    if record is None:  # released between the insert and the read: try once more
        return claim(user=user, key=key, fingerprint=fingerprint)
    if record.fingerprint != fingerprint:
        return Claim("mismatch", record)
    if record.state == IdempotencyKey.State.DONE:
        return Claim("done", record)
    if now - record.created_at > PENDING_STALE:
        # The process that claimed it died before answering: the request runs again.
        taken = IdempotencyKey.objects.filter(pk=record.pk, state=IdempotencyKey.State.PENDING).update(created_at=now)
        if taken:
            record.created_at = now
            return Claim("claimed", record)
    return Claim("pending", record)


def complete(
    record: IdempotencyKey, *, status_code: int, content: str = "", content_type: str = "", location: str = ""
):
    record.state = IdempotencyKey.State.DONE
    record.status_code = status_code
    record.content = content
    record.content_type = content_type
    record.location = location
    record.completed_at = timezone.now()
    record.save(update_fields=["state", "status_code", "content", "content_type", "location", "completed_at"])


def release(record: IdempotencyKey) -> None:
    IdempotencyKey.objects.filter(pk=record.pk, state=IdempotencyKey.State.PENDING).delete()


def refresh(record: IdempotencyKey) -> IdempotencyKey | None:
    return IdempotencyKey.objects.filter(pk=record.pk).first()
