"""A WSGI app for tests/config/test_request_body.py, served by a real gunicorn.

It moves the request body into a file through ``config.request_body.body_source`` and
answers ``<bytes moved> <sha256 of the file> <source>``, where source names the path
taken: ``_GunicornBody:splice`` (socket to file in the kernel), ``_GunicornBody:copy``
(``recv_into`` and ``write``, as behind gunicorn's own TLS; forced with ``?copy=1``) or
``ReadIntoSource``. ``?limit=N`` stops after N bytes, leaving the rest of the body unread;
``?step=N`` is the most asked of one ``write_into``.
"""

import hashlib
import os
import tempfile

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.core.handlers.wsgi import WSGIRequest  # noqa: E402

from config.request_body import body_source  # noqa: E402


def application(environ, start_response):
    request = WSGIRequest(environ)
    limit = int(request.GET.get("limit", 1 << 62))
    step = int(request.GET.get("step", 1 << 20))
    count = 0
    with tempfile.TemporaryFile() as fh, body_source(request) as source:
        if request.GET.get("copy"):
            source.splice = False
        name = type(source).__name__
        if hasattr(source, "splice"):
            name += ":splice" if source.splice else ":copy"
        while count < limit and (moved := source.write_into(fh.fileno(), min(step, limit - count))):
            count += moved
        fh.seek(0)
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    body = f"{count} {digest} {name}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
