"""A WSGI app for tests/config/test_request_body.py, served by a real gunicorn.

It reads the request body through ``config.request_body.body_source`` into a file and
answers ``<bytes read> <sha256 of the file> <source>``, where source names the class that
gave the body (``_GunicornBody``: straight from gunicorn's socket; ``_RequestBody``: through
Django). ``?limit=N`` stops after N bytes, leaving the rest of the body unread;
``?step=N`` is the size of the buffer handed to ``readinto``.
"""

import hashlib
import os
import tempfile

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.core.handlers.wsgi import WSGIRequest  # noqa: E402

from config.request_body import body_source  # noqa: E402


def application(environ, start_response):
    request = WSGIRequest(environ)
    limit = int(request.GET.get("limit", 1 << 62))
    buffer = memoryview(bytearray(int(request.GET.get("step", 1 << 20))))
    count = 0
    with tempfile.TemporaryFile() as fh, body_source(request) as source:
        while count < limit and (got := source.readinto(buffer[: min(len(buffer), limit - count)])):
            fh.write(buffer[:got])
            count += got
        fh.seek(0)
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
        name = type(source).__name__
    body = f"{count} {digest} {name}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
