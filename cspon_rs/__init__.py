"""cspon-rs: remote-sensing change detection and early warning for spatial-planning supervision.

The package is organised by pipeline stage, each a plain typed function usable from Python:

* :mod:`cspon_rs.geo` -- rasters, vectors, CRS and area helpers.
* :mod:`cspon_rs.models` -- change-detection networks, registry and checkpoints.
* :mod:`cspon_rs.training` -- datasets, augmentation, training loop and metrics.
* :mod:`cspon_rs.inference` -- tiled, Dask-parallel scene prediction and vectorisation.
* :mod:`cspon_rs.rules` -- classification of change patches against permits and control lines.
* :mod:`cspon_rs.store` -- the warning database (SQLite/GeoPackage or PostGIS).
* :mod:`cspon_rs.exports` -- XLSX/CSV/GeoPackage warning lists, KML/GPX/GeoJSON patrols, chips.
* :mod:`cspon_rs.api` -- the FastAPI service.
"""

__version__ = "0.1.0"
