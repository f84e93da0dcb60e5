"""A WSGI app for tests/config/test_request_body.py, served by a real gunicorn.

It reads the request body through ``config.request_body.body_reader`` and answers
``<bytes read> <sha256 of them> <reader>``, where reader names the path taken
(``_GunicornSocketBody`` when the body came straight from gunicorn's socket). ``?limit=N``
stops after N bytes, leaving the rest of the body unread; ``?piece=N`` is the buffer size.
"""

import hashlib
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.core.handlers.wsgi import WSGIRequest  # noqa: E402

from config.request_body import body_reader  # noqa: E402


def application(environ, start_response):
    request = WSGIRequest(environ)
    limit = int(request.GET.get("limit", 1 << 62))
    buffer = memoryview(bytearray(int(request.GET.get("piece", 65536))))
    digest, count = hashlib.sha256(), 0
    with body_reader(request) as readinto:
        reader = type(getattr(readinto, "__self__", None)).__name__
        while count < limit and (got := readinto(buffer[:min(len(buffer), limit - count)])):
            digest.update(buffer[:got])
            count += got
    body = f"{count} {digest.hexdigest()} {reader}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
