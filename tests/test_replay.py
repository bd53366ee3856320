"""``traffic replay`` / ``traffic refresh`` argument handling and the refresh window (no Airflow run)."""

from __future__ import annotations

import pytest

from traffic import pipeline
from traffic.airflow_runner import replay_steps
from traffic.cli import main


def test_replay_steps():
    assert replay_steps("2012-03-07") == [f"2012-03-07 {h:02d}:00" for h in range(5, 11)]
    assert replay_steps("2012-03-07", "07:00", "08:00", 30) == [
        "2012-03-07 07:00",
        "2012-03-07 07:30",
        "2012-03-07 08:00",
    ]
    assert replay_steps("2012-03-07", "23:00", "24:00") == ["2012-03-07 23:00", "2012-03-08 00:00"]
    for args, match in [
        (("7am", "10:00", 60), "--from '7am'"),
        (("07:00", "06:00", 60), "--to 06:00 is before --from 07:00"),
        (("07:00", "25:00", 60), "--to '25:00'"),
        (("07:00", "08:00", 0), "--every 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            replay_steps("2012-03-07", *args)


def test_refresh_window_takes_yesterday_in_the_first_hours():
    assert pipeline.refresh_window("los_angeles", "2012-03-07 08:10") == {
        "start": "2012-03-07",
        "end": "2012-03-07",
        "until": "2012-03-07 08:10",
    }
    assert pipeline.refresh_window("los_angeles", "2012-03-07 01:05")["start"] == "2012-03-06"
    # an offset is converted to the city's clock
    assert pipeline.refresh_window("berlin", "2024-12-01T23:30Z") == {
        "start": "2024-12-01",
        "end": "2024-12-02",
        "until": "2024-12-02 00:30",
    }
    with pytest.raises(ValueError, match="YYYY-MM-DD HH:MM"):
        pipeline.refresh_window("berlin", "08:00")


def test_replay_without_champion_says_run_make_nightly(capsys):
    assert main(["replay", "los_angeles", "--date", "2012-03-07"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # (MLflow may log its own set-up lines first)
    assert err[-1] == "traffic replay: no champion model for los_angeles yet: run `make nightly` first"


def test_replay_of_a_date_outside_the_shipped_data(capsys):
    assert main(["replay", "los_angeles", "--date", "2012-04-01"]) == 2
    assert "holds local dates 2012-03-01 .. 2012-03-07" in capsys.readouterr().err
