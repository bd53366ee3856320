"""Registry faults get the hint that fits what was delivered (issue 18, part 5), built from the shipped registries.

A registry that declares its CRS is never told to declare one: the declared CRS is named as the
likely fault. A Telraam GeoJSON whose legacy ``crs`` member names its projected CRS is read in it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from pyproj import Transformer

from tests.ingest.test_faults import SEGMENTS, city_config, metr_city, metr_lines, projected_registry
from traffic.ingest import IngestError, ingest_registry
from traffic.ingest.run import registry_crs_source


def test_a_declared_registry_crs_that_is_wrong_is_named_not_asked_for(tmp_path):
    reg = projected_registry(tmp_path / "reg", 26945)  # metres (California zone 5)
    city = metr_city(tmp_path / "raw", metr_lines(), registry=reg, registry_crs="EPSG:4326")
    with pytest.raises(IngestError, match="coordinates look projected") as err:
        ingest_registry(city, city.feeds[0])
    line = str(err.value)
    assert "declare `registry_crs`" not in line
    assert "read in the feed's option `registry_crs` = 'EPSG:4326': that CRS is not the one" in line


def test_a_wrong_projected_registry_crs_is_named_in_the_outside_the_box_hint(tmp_path):
    reg = projected_registry(tmp_path / "reg", 26945)
    city = metr_city(tmp_path / "raw", metr_lines(), registry=reg, registry_crs="EPSG:2229")  # feet, not metres
    with pytest.raises(IngestError, match="lies outside the city's bbox") as err:
        ingest_registry(city, city.feeds[0])
    assert "once reprojected from the feed's option `registry_crs` = 'EPSG:2229'" in str(err.value)


def test_an_undeclared_projected_registry_is_still_told_to_declare_it(tmp_path):
    reg = projected_registry(tmp_path / "reg", 26945)
    city = metr_city(tmp_path / "raw", metr_lines(), registry=reg)
    assert registry_crs_source(city.feeds[0]) is None
    with pytest.raises(IngestError, match="nothing declares their CRS.*declare `registry_crs`"):
        ingest_registry(city, city.feeds[0])


def _telraam_registry(tmp_path, crs_member: str | None):
    """The shipped Telraam segments with coordinates in EPSG:25833 and a ``crs`` member as given."""
    doc = json.loads(SEGMENTS.read_text(encoding="utf-8"))
    tr = Transformer.from_crs("EPSG:4326", "EPSG:25833", always_xy=True)
    for f in doc["features"]:
        if f.get("geometry"):
            g = shapely.geometry.shape(f["geometry"])
            moved = shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
            f["geometry"] = shapely.geometry.mapping(moved)
    if crs_member is None:
        doc.pop("crs", None)
    else:
        doc["crs"] = {"type": "name", "properties": {"name": crs_member}}
    path = tmp_path / "segments_25833.geojson"
    path.write_text(json.dumps(doc), encoding="utf-8")
    feed = {
        "name": "telraam",
        "kind": "camera",
        "adapter": "telraam",
        "observations": str(tmp_path / "none.parquet"),
        "registry": str(path),
        "channels": ["car"],
    }
    return city_config(
        tmp_path,
        feed,
        name="berlin_faults",
        timezone="Europe/Berlin",
        epsg=25833,
        bbox=[13.02, 52.24, 13.78, 52.76],
        time_bin="1h",
    )


def test_a_geojson_whose_crs_member_names_its_crs_is_read_in_it(tmp_path):
    city = _telraam_registry(tmp_path, "urn:ogc:def:crs:EPSG::25833")
    info = ingest_registry(city, city.feeds[0])
    assert info["n_invalid"] == 0 and info["n_sources"] > 0


def test_a_geojson_whose_crs_member_is_wrong_is_told_so_not_to_deliver_a_crs(tmp_path):
    city = _telraam_registry(tmp_path, "urn:ogc:def:crs:OGC:1.3:CRS84")  # what a careless export writes
    with pytest.raises(IngestError, match="coordinates look projected") as err:
        ingest_registry(city, city.feeds[0])
    line = str(err.value)
    assert (
        "deliver GeoParquet/GeoJSON" not in line and "the CRS its file declares (urn:ogc:def:crs:OGC:1.3:CRS84" in line
    )
