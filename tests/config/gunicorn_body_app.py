"""A WSGI app for tests/config/test_request_body.py, served by a real gunicorn.

It reads the request body through ``config.request_body.RequestBody`` into a file and
answers ``<bytes read> <sha256 of the file>``, or 400 ``<code>: <message>`` when the body
ended early. ``?limit=N`` stops after N bytes, leaving the
rest of the body unread; ``?step=N`` is the size asked of each ``read``.
"""

import hashlib
import os
import tempfile

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.core.handlers.wsgi import WSGIRequest  # noqa: E402

from config.request_body import IncompleteBody, RequestBody  # noqa: E402


def application(environ, start_response):
    request = WSGIRequest(environ)
    limit = int(request.GET.get("limit", 1 << 62))
    step = int(request.GET.get("step", 1 << 20))
    source, count = RequestBody(request), 0
    try:
        with tempfile.TemporaryFile() as fh:
            while count < limit and (data := source.read(min(step, limit - count))):
                fh.write(data)
                count += len(data)
            fh.seek(0)
            body, status = f"{count} {hashlib.file_digest(fh, 'sha256').hexdigest()}".encode(), "200 OK"
    except IncompleteBody as exc:
        body, status = f"{exc.code}: {exc.message}".encode(), "400 Bad Request"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
