"""Reading and writing vector layers (GeoPackage, Shapefile, GeoJSON, ...) with clear errors."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyogrio
import shapely
from pyproj import CRS

from cspon_rs.errors import CorruptFileError, CRSError, MissingFileError

__all__ = ["read_vector", "repair_geometries", "write_vector_atomic"]


def read_vector(
    path: str | Path,
    *,
    layer: str | None = None,
    to_crs: Any | None = None,
    default_crs: Any | None = None,
) -> gpd.GeoDataFrame:
    """Read a vector layer, reprojecting it when asked.

    Args:
        path: GeoPackage, Shapefile, GeoJSON, FlatGeobuf...
        layer: Layer name for multi-layer sources (GeoPackage); the first layer when omitted.
        to_crs: Reproject to this CRS (anything pyproj accepts).
        default_crs: CRS assumed when the file declares none; without it such a file is an error.

    Raises:
        MissingFileError: No such file.
        CorruptFileError: GDAL cannot read it, or the layer does not exist (the message lists the layers).
        CRSError: The file has no CRS and no ``default_crs`` was given.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: vector file not found")
    try:
        if layer is not None:
            names = [str(row[0]) for row in pyogrio.list_layers(path)]
            if layer not in names:
                raise CorruptFileError(f"{path}: no layer {layer!r}; layers are {names}")
        gdf = gpd.read_file(path, layer=layer, engine="pyogrio")
    except CorruptFileError:
        raise
    except Exception as exc:  # pyogrio raises DataSourceError, DataLayerError, ... for bad files
        raise CorruptFileError(f"{path}: not a readable vector layer ({exc})") from exc
    if gdf.crs is None:
        if default_crs is None:
            raise CRSError(f"{path}: layer has no CRS; write a .prj / set one, or pass a default CRS")
        gdf = gdf.set_crs(default_crs)
    if to_crs is not None and CRS.from_user_input(gdf.crs) != CRS.from_user_input(to_crs):
        gdf = gdf.to_crs(to_crs)
    return gdf


def repair_geometries(gdf: gpd.GeoDataFrame, *, what: str = "layer") -> tuple[gpd.GeoDataFrame, list[str]]:
    """Make geometries valid, dropping empty ones, and report what was done per feature.

    Self-intersections and other invalid rings are repaired with :func:`shapely.make_valid`, keeping
    only the polygonal part.

    Returns:
        The repaired layer (index kept) and one message per repaired or dropped feature.
    """
    messages: list[str] = []
    geoms = gdf.geometry.array
    out = gdf.copy()
    keep = []
    for idx, geom in zip(gdf.index, geoms, strict=True):
        if geom is None or geom.is_empty:
            messages.append(f"{what}: feature {idx}: empty geometry dropped")
            keep.append(False)
            continue
        if not geom.is_valid:
            reason = shapely.is_valid_reason(geom)
            fixed = shapely.make_valid(geom)
            if fixed.geom_type == "GeometryCollection":
                polys = [g for g in fixed.geoms if g.geom_type in ("Polygon", "MultiPolygon")]
                fixed = shapely.unary_union(polys) if polys else shapely.Polygon()
            if fixed.is_empty:
                messages.append(f"{what}: feature {idx}: invalid geometry ({reason}) could not be repaired, dropped")
                keep.append(False)
                continue
            out.loc[idx, out.geometry.name] = fixed
            messages.append(f"{what}: feature {idx}: invalid geometry ({reason}) repaired")
        keep.append(True)
    return out.loc[keep], messages


def write_vector_atomic(gdf: gpd.GeoDataFrame, path: str | Path, *, layer: str | None = None,
                        driver: str | None = None, **kwargs: Any) -> Path:
    """Write a layer to a temporary file beside ``path`` and rename it into place.

    A killed run therefore never leaves a half-written file under the final name. Writing a layer into
    an existing GeoPackage replaces the file only when ``layer`` is None; otherwise the layer is written
    to a copy of the existing file, which is then renamed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        if layer is not None and path.exists():
            import shutil

            shutil.copyfile(path, tmp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            gdf.to_file(tmp, layer=layer, driver=driver, engine="pyogrio", **kwargs)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
