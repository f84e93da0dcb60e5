"""Double submission, answered once for every page and every API endpoint.

- A page's form carries a one-time ``form_token`` (``{% form_token %}``, issued when the
  form is rendered). The first POST with it runs; a successful one (a redirect) is stored
  under the token. A second POST of the same token writes nothing and no audit event: it
  is sent where the first one went, with a message saying so. Two POSTs at once: the
  second waits for the first's answer.
- An API POST may carry an ``Idempotency-Key`` header (any string up to 255 characters,
  scoped to the authenticated user). The same key with the same request (method, path,
  query and body) replays the stored first response (status, body, ``Location``) with
  ``Idempotent-Replayed: true``; with another request it is refused (422
  ``idempotency_key_reused``); while the first is still running, 409
  ``idempotency_key_in_use``. Only a 2xx answer is stored: a refused request releases
  its key. Keys expire ``IDEMPOTENCY_KEY_TTL`` seconds (24 hours) after first use.
"""

from __future__ import annotations

import hashlib
import json
import time

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.settings import api_settings

from idempotency import store

FORM_FIELD = "form_token"
HEADER = "Idempotency-Key"
FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# How long a second submission of a page's form waits for the first one's answer.
FORM_WAIT_SECONDS = 15.0

ALREADY_SAVED = (
    "This form had already been submitted: nothing was saved again. Shown is what the first submission saved."
)
STILL_SAVING = "This form is still being saved from your first submission: reload this page in a moment to see it."


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "fields": {}}}, status=status)


def _form_body_digest(request: HttpRequest) -> str:
    digest = hashlib.sha256()
    for name in sorted(request.POST):
        digest.update(json.dumps([name, request.POST.getlist(name)]).encode())
    for name in sorted(request.FILES):
        for uploaded in request.FILES.getlist(name):
            digest.update(json.dumps([name, uploaded.name, uploaded.size]).encode())
            for chunk in uploaded.chunks():
                digest.update(chunk)
            uploaded.seek(0)
    return digest.hexdigest()


def _api_user(request: HttpRequest):
    """The user DRF will authenticate (a session or an API token), or an error response."""
    if request.user.is_authenticated:
        return request.user, None
    # The API's own authentication classes (a token refused is audited by them, once).
    authenticators = [cls() for cls in api_settings.DEFAULT_AUTHENTICATION_CLASSES]  # type: ignore[operator]  # the setting holds the imported classes
    drf = Request(request, authenticators=authenticators)
    try:
        user = drf.user
    except APIException as exc:  # refused (and audited) once, here: the view is not run
        response = _error(exc.status_code, str(exc.get_codes()), str(exc.detail))
        response["WWW-Authenticate"] = "Token"
        return None, response
    return (user if user.is_authenticated else None), None


class IdempotencyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return self.get_response(request)
        key = request.headers.get(HEADER)
        if key is not None:
            return self._api(request, key)
        if request.content_type in FORM_CONTENT_TYPES and request.user.is_authenticated:
            token = request.POST.get(FORM_FIELD, "")
            if token and len(token) <= store.MAX_KEY_LENGTH:
                return self._form(request, token)
        return self.get_response(request)

    # ------------------------------------------------------------------ API

    def _api(self, request: HttpRequest, key: str) -> HttpResponse:
        if not key.strip() or len(key) > store.MAX_KEY_LENGTH:
            return _error(400, "idempotency_key_invalid", f"An {HEADER} is 1 to {store.MAX_KEY_LENGTH} characters.")
        user, refused = _api_user(request)
        if refused is not None:
            return refused
        if user is None:  # not signed in: the view answers 401
            return self.get_response(request)
        body = _form_body_digest(request) if request.content_type == "multipart/form-data" else request.body
        fingerprint = store.fingerprint("api", request.path, request.META.get("QUERY_STRING", ""), body)
        claim = store.claim(user=user, key=f"api:{key}", fingerprint=fingerprint)
        if claim.outcome == "mismatch":
            return _error(
                422,
                "idempotency_key_reused",
                f"This {HEADER} was already used for another request (method, path or body differ). "
                "Use a new key for a new request.",
            )
        if claim.outcome == "pending":
            return _error(
                409,
                "idempotency_key_in_use",
                f"A request with this {HEADER} is still being processed: retry once it has finished.",
            )
        record = claim.record
        if record is None:
            raise RuntimeError("an idempotency claim without its record")
        if claim.outcome == "done":
            replay = HttpResponse(record.content, status=record.status_code, content_type=record.content_type)
            if record.location:
                replay["Location"] = record.location
            replay["Idempotent-Replayed"] = "true"
            return replay
        try:
            response = self.get_response(request)
        except BaseException:
            store.release(record)
            raise
        if 200 <= response.status_code < 300 and not response.streaming:
            try:
                content = response.content.decode("utf-8")
            except UnicodeDecodeError:
                store.release(record)
                return response
            store.complete(
                record,
                status_code=response.status_code,
                content=content,
                content_type=response.get("Content-Type", ""),
                location=response.get("Location", ""),
            )
        else:
            store.release(record)
        return response

    # ------------------------------------------------------------------ pages

    def _form(self, request: HttpRequest, token: str) -> HttpResponse:
        fingerprint = store.fingerprint("form", request.path)
        claim = store.claim(user=request.user, key=f"form:{token}", fingerprint=fingerprint)
        deadline = time.monotonic() + FORM_WAIT_SECONDS
        while claim.outcome == "pending" and time.monotonic() < deadline:
            time.sleep(0.05)
            claim = store.claim(user=request.user, key=f"form:{token}", fingerprint=fingerprint)
        if claim.outcome == "mismatch":  # a token of another form: it guards nothing here
            return self.get_response(request)
        if claim.outcome == "pending":
            messages.warning(request, STILL_SAVING)
            return HttpResponseRedirect(request.headers.get("Referer") or "/")
        record = claim.record
        if record is None:
            raise RuntimeError("an idempotency claim without its record")
        if claim.outcome == "done":
            messages.info(request, ALREADY_SAVED)
            return HttpResponseRedirect(record.location)
        try:
            response = self.get_response(request)
        except BaseException:
            store.release(record)
            raise
        location = response.get("Location", "")
        if 300 <= response.status_code < 400 and location:
            store.complete(record, status_code=response.status_code, location=location)
        else:  # refused (the form is shown again with its errors): the token may be used again
            store.release(record)
        return response
