"""Error maps of verified runs (`traffic export CITY --format png --errors`)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.verify import verify_cases as vc
from traffic import pipeline
from traffic.cli import main
from traffic.verify.maps import ErrorMapError, write_error_maps

DAYS = ("2024-03-01", "2024-03-02", "2024-03-03")


def test_the_error_map_colours_the_scored_cells_of_a_verified_run(tiny, tmp_path, capsys):
    c, res = tiny
    with pytest.raises(ErrorMapError, match="has no verified run to draw"):
        write_error_maps(c.name, db_path=res.warehouse.path, out=tmp_path)
    for d in DAYS:
        vc.write_raster(c, res, d, day_offset=0.5 * (d == DAYS[2]))
    vc.publish_day_ahead(c, res, DAYS[1])
    (run,) = pipeline.verify(c, res=res)["verified"]
    paths = write_error_maps(c.name, db_path=res.warehouse.path, out=tmp_path / "maps")
    assert len(paths) == len(c.channels) and all(p.name.startswith(f"{run}_errors_") for p in paths)
    img = np.asarray(Image.open(paths[0]).convert("RGB")).reshape(-1, 3).astype(int)
    grey = (np.abs(img - [221, 221, 221]).sum(axis=1) < 6).sum()
    coloured = ((img.max(axis=1) - img.min(axis=1)) > 60).sum()  # the magma cells and the colour bar
    assert grey > 0 and coloured > 500
    with pytest.raises(ErrorMapError, match="is not verified"):
        write_error_maps(c.name, run_id="nope", db_path=res.warehouse.path, out=tmp_path)
    with pytest.raises(ErrorMapError, match="no verified channel 'x.y'"):
        write_error_maps(c.name, channel="x.y", db_path=res.warehouse.path, out=tmp_path)
    assert main(["export", c.name, "--format", "html", "--errors"]) == 2
    assert "--errors draws PNG maps" in capsys.readouterr().err
