"""Small helpers shared by the grid tests."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import shapely


def to_wgs84(geoms: list[shapely.Geometry], epsg: int) -> list[shapely.Geometry]:
    """Projected geometries (metres) to EPSG:4326."""
    return list(gpd.GeoSeries(geoms, crs=f"EPSG:{epsg}").to_crs(4326))


def utc(*stamps: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(list(stamps), utc=True, format="ISO8601")).as_unit("us")
