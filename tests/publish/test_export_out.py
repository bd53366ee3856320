"""`traffic export` into a place that cannot be written: one line naming the path the user gave (issue 18, part 5)."""

from __future__ import annotations

import pytest
from publish_cases import metr_la_case

from traffic.cli import main
from traffic.publish import duckdb_publish as dp


@pytest.fixture
def la(db):
    dp.publish_forecast(db, **metr_la_case())
    return db


def test_an_unwritable_out_names_the_given_path_not_a_temporary_file(la, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "maps" / "la.geojson"  # its "folder" is a file: no user can write there
    try:
        code = main(["export", "los_angeles", "--format", "geojson", "--out", str(out)])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"--out {out}: cannot write there" in err and ".tmp" not in err
    assert blocker.read_text() == "not a folder"
