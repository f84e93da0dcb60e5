"""The health endpoints, answered before any other middleware.

``/health/live/`` (liveness), ``/health/ready/`` and ``/health/`` (readiness) are polled
by a load balancer or compose, by address, over plain HTTP inside the network. Answered
first, they never meet ``ALLOWED_HOSTS`` (the probe's Host header is an address), the
HTTPS redirect, sessions, sign-in, two-factor or the audit trail (a probe is no user
action: no event per poll). Their answer names no host and nothing of a person.
"""

from __future__ import annotations

from django.http import HttpResponse, JsonResponse

from ops import health

PROBES = {
    "/health": health.readiness,
    "/health/ready": health.readiness,
    "/health/live": health.liveness,
}


class HealthCheckMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path_info
        probe = PROBES.get(path.rstrip("/") or path)
        if probe is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response: HttpResponse = JsonResponse(
                {"error": {"code": "method_not_allowed", "message": "Health checks answer GET and HEAD."}}, status=405
            )
            response["Allow"] = "GET, HEAD"
        else:
            ok, body = probe()
            response = JsonResponse(body, status=200 if ok else 503)
        response["Cache-Control"] = "no-store"
        response["X-Content-Type-Options"] = "nosniff"
        return response
