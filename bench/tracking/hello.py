"""The bare WSGI callable the tracking endpoints are compared with (same gunicorn settings)."""


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]
