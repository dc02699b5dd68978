"""The warning store (SQLAlchemy; SQLite/GeoPackage by default, PostGIS by URL)."""
