"""The operator's web page (``/``): static files shipped in the package, served by the status
listener (see docs/web.md).

Three hand-written files, no framework, no build step and no CDN (gateways are often offline).
They are read from the package on the first request and kept (about 30 KB), so a gateway whose
page nobody opens pays nothing. The page itself holds no plant data: it is served without a
login, and reads the REST API, which applies the read and operator rules.
"""

from __future__ import annotations

from importlib import resources

from gateway.core.httpd import Response

#: URL path -> (file in this package, Content-Type).
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/web/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/web/style.css": ("style.css", "text/css; charset=utf-8"),
}
#: Only this listener's own files and API: no inline script, no other origin, no framing.
SECURITY_HEADERS = [
    ("Content-Security-Policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
     "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
]  # fmt: skip
_cache: dict[str, bytes] = {}


def is_page(path: str) -> bool:
    """``path`` is the page's (``/`` or under ``/web/``), not the API's."""
    return path == "/" or path == "/index.html" or path.startswith("/web/")


def serve(path: str) -> Response:
    """The file at ``path`` (a GET); 404 for any other path under ``/web/``."""
    entry = FILES.get("/" if path == "/index.html" else path)
    if entry is None:
        return Response(404, b"no such file; the page is at /\n", "text/plain")
    name, ctype = entry
    body = _cache.get(name)
    if body is None:
        body = _cache[name] = resources.files(__name__).joinpath(name).read_bytes()
    return Response(200, body, ctype, list(SECURITY_HEADERS))


def total_size() -> int:
    """Bytes of every file the page loads."""
    return sum(len(resources.files(__name__).joinpath(n).read_bytes()) for n, _ in FILES.values())
