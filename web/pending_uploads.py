"""A file attached to a form that was refused, kept for the corrected submission, so the
person does not have to attach it again (the lot's certificate of analysis).

The file is stored under ``MEDIA_ROOT/pending/<user id>/`` and named in the form by a
signed token (a hidden field): the token is the user's own (another user's is refused) and
expires after ``MAX_AGE``; files older than that are removed whenever a new one is kept.
Nothing of it enters the record until the form is saved: then the service stores the
file as if it had just been uploaded (its SHA-256 computed from the same bytes)."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from pathlib import Path

from django.conf import settings
from django.core import signing
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils.text import get_valid_filename

MAX_AGE = dt.timedelta(days=1)
_SALT = "web.pending_uploads"


def _root() -> Path:
    return Path(settings.MEDIA_ROOT) / "pending"


def _prune() -> None:
    cutoff = time.time() - MAX_AGE.total_seconds()
    for path in _root().glob("*/*/*"):
        if path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            with_parent = path.parent
            if not any(with_parent.iterdir()):
                with_parent.rmdir()


def keep(user, uploaded) -> str:
    """Store ``uploaded`` for ``user``; the token that names it."""
    _prune()
    name = get_valid_filename(Path(uploaded.name).name) or "upload"
    folder = _root() / str(user.pk) / secrets.token_hex(16)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / name).open("wb") as out:
        for chunk in uploaded.chunks():
            out.write(chunk)
    uploaded.seek(0)
    relative = (folder / name).relative_to(_root())
    return signing.dumps(
        {"user": user.pk, "path": str(relative), "type": getattr(uploaded, "content_type", "")}, salt=_SALT
    )


def take(user, token: str) -> SimpleUploadedFile | None:
    """The file a token names, for its own user, or None (unknown, expired or another's)."""
    try:
        data = signing.loads(token, salt=_SALT, max_age=MAX_AGE)
    except signing.BadSignature:
        return None
    if data.get("user") != user.pk:
        return None
    path = (_root() / data["path"]).resolve()
    if _root().resolve() not in path.parents or not path.is_file():
        return None
    return SimpleUploadedFile(path.name, path.read_bytes(), content_type=data.get("type") or "application/octet-stream")


def name_of(token: str) -> str:
    try:
        return Path(signing.loads(token, salt=_SALT, max_age=MAX_AGE)["path"]).name
    except (signing.BadSignature, KeyError):
        return ""
