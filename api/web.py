"""The review map and the field view: static pages served by the API service.

:func:`mount_web` is called at the end of :func:`cspon_rs.api.app.create_app`. It adds

* ``GET /`` -- the review map (``api/static/index.html``) for supervision staff;
* ``GET /field`` -- the field app for phones, usable without signal (``api/static/field.html``);
* ``/static/...`` -- plain HTML/CSS/JS and the vendored Leaflet (no build step, nothing from the internet);
* the map endpoints of :mod:`cspon_rs.api.routers.map` and the XYZ tiles of
  :mod:`cspon_rs.api.routers.tiles` under ``/api/v1/map``;
* ``GET /sw.js`` -- the field app's service worker (served from the root so that it controls ``/field``).

The static files are public and hold no data; the pages sign in with the user's token once
(``POST /api/v1/session``: HttpOnly session cookie + CSRF token; a bearer token against older services),
so they see exactly what the API lets them see. They have no inline scripts (strict CSP). ``/field`` is an
installable web app (``static/manifest.webmanifest``) whose service worker keeps its shell for offline use.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "mount_web"]

#: Folder of the web assets (shipped inside the wheel as package data).
STATIC_DIR = Path(__file__).resolve().parent / "static"

_NO_CACHE = {"Cache-Control": "no-cache"}
mimetypes.add_type("application/manifest+json", ".webmanifest")


def mount_web(app: FastAPI, *, api_prefix: str = "/api/v1") -> None:
    """Serve the review map at ``/``, the field view at ``/field`` and the map endpoints.

    Args:
        app: The application built by ``create_app``.
        api_prefix: Prefix of the JSON API (the map router goes under ``<api_prefix>/map``).
    """
    from cspon_rs.api.routers import map as map_router
    from cspon_rs.api.routers import tiles as tiles_router

    app.include_router(map_router.router, prefix=api_prefix)
    app.include_router(tiles_router.router, prefix=api_prefix)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def review_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_NO_CACHE)

    @app.get("/field", include_in_schema=False)
    def field_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "field.html", media_type="text/html", headers=_NO_CACHE)

    @app.get("/sw.js", include_in_schema=False)
    def service_worker() -> FileResponse:
        # From the root so that its scope covers /field; never cached by HTTP (a new version must get through).
        return FileResponse(STATIC_DIR / "sw.js", media_type="text/javascript",
                            headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")
