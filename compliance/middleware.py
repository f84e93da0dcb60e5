from __future__ import annotations

import re
import uuid

from compliance.context import request_context

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestContextMiddleware:
    """Give every request an id (or keep a sane one sent as X-Request-ID) and note the
    client address, so each audit event says where the action came from."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        sent = request.headers.get("X-Request-ID", "")
        request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex
        # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted proxy rewrites it.
        with request_context(request_id=request_id, client_address=request.META.get("REMOTE_ADDR")):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
