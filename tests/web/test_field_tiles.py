"""Imagery tiles as WebP for the field app's offline download: same pixels as the PNG within lossy-coding error,
alpha kept (nodata transparent), a fraction of the bytes; masks and probability stay PNG only."""

from __future__ import annotations

import io

import morecantile
import numpy as np
from PIL import Image
from webtest_support import COUNTY, PERIOD, Seeded

BASE = f"/map/{COUNTY}/{PERIOD}/tiles"


def test_webp_imagery_tiles_are_small_and_match_the_png(seeded: Seeded) -> None:
    with seeded.server.client(seeded.field_token) as c:
        index = c.get(BASE).json()
        info = index["layers"]["after"]
        (s, w), (n, e) = index["bounds"]
        z = info["max_native_zoom"]
        tms = morecantile.tms.get("WebMercatorQuad")
        centre = tms.tile((w + e) / 2, (s + n) / 2, z)
        edge = tms.tile(w + 1e-6, (s + n) / 2, z)  # on the scene's west edge: part nodata
        png_bytes = webp_bytes = 0
        for t in (centre, edge, tms.tile((w + e) / 2, (s + n) / 2, z - 1), tms.tile((w + e) / 2, (s + n) / 2, z - 2)):
            for layer in ("after", "before"):
                png = c.get(f"{BASE}/{layer}/{t.z}/{t.x}/{t.y}.png")
                webp = c.get(f"{BASE}/{layer}/{t.z}/{t.x}/{t.y}.webp")
                assert png.status_code == webp.status_code == 200, webp.text
                assert webp.headers["content-type"] == "image/webp" and webp.headers["etag"] != png.headers["etag"]
                a = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGBA"), dtype=float)
                b = np.asarray(Image.open(io.BytesIO(webp.content)).convert("RGBA"), dtype=float)
                assert np.array_equal(a[..., 3] > 0, b[..., 3] > 0)  # nodata stays transparent
                opaque = a[..., 3] > 0
                if opaque.any():
                    assert np.abs(a[..., :3][opaque] - b[..., :3][opaque]).mean() < 12
                png_bytes += len(png.content)
                webp_bytes += len(webp.content)
        assert c.get(f"{BASE}/mask/{centre.z}/{centre.x}/{centre.y}.webp").status_code == 404
    print(f"\nimagery tiles: PNG {png_bytes / 1024:.0f} KB, WebP {webp_bytes / 1024:.0f} KB "
          f"({webp_bytes / png_bytes:.0%} of the PNG)")
    assert webp_bytes < 0.5 * png_bytes
