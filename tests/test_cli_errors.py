"""One error path for users (issue 9): every fault is one line on stderr, exit 2; ``--debug`` shows the traceback.

The CLI runs in-process through ``traffic.cli.main`` (stderr captured), and once through the
installed entry point in a child process, as a user runs it. The faults are real: city files,
deliveries and option values written by the test, no stand-ins.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from traffic import cli
from traffic.cli import main
from traffic.config import PROJECT_ROOT

TINY = """
name = "{name}"
timezone = "Europe/Berlin"
crs_epsg = {epsg}
bbox = [13.0, 52.0, 14.0, 53.0]
cell_size_m = 1000
time_bin = "1h"

[[feeds]]
name = "f"
kind = "sensor"
adapter = "canonical"
observations = "../raw/{obs}"
registry = "../raw/registry.csv"
channels = ["speed_kmh"]
"""


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``traffic *argv`` (argparse's own errors raise SystemExit)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> str:
    """The error line of stderr: it must be the only line, without a traceback."""
    lines = [ln for ln in err.splitlines() if ln.strip() and "day/s]" not in ln]  # (a tqdm bar may come first)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def cities(tmp_path, monkeypatch) -> Path:
    """A cities folder with a tiny canonical city per fault; the deliveries in ``raw/`` next to it."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "registry.csv").write_text("source_id,lon,lat\na,13.40,52.50\nb,13.41,52.51\n")
    (raw / "good.csv").write_text(
        "source_id,timestamp,interval_s,speed_kmh\na,2024-03-01T10:00:00+01:00,3600,50\n"
        "b,2024-03-01T11:00:00+01:00,3600,40\n"
    )
    (raw / "empty.csv").write_text("")
    folder = tmp_path / "cities"
    folder.mkdir()
    for name, epsg, obs in (("good", 25833, "good.csv"), ("badepsg", 99999, "good.csv"), ("empty", 25833, "empty.csv")):
        (folder / f"{name}.toml").write_text(TINY.format(name=name, epsg=epsg, obs=obs))
    monkeypatch.setenv("TRAFFIC_CITIES", str(folder))
    return folder


# ------------------------------------------------------------------ domain errors: one line, exit 2


@pytest.mark.parametrize("name", ["../../x", "../../x.toml", "../cities/good"])
def test_a_city_name_outside_the_cities_folder_is_refused(cities, capsys, name):
    (cities.parent / "x.toml").write_text(TINY.format(name="x", epsg=25833, obs="good.csv"))
    code, out, err = run_cli(capsys, "ingest", name, "--start", "2024-03-01")
    assert code == 2 and out == ""
    line = one_line(err)
    assert line.startswith(f"traffic ingest: city {name!r} is not a city name: a name matches ^[a-z]")
    assert "known cities: ['badepsg', 'empty', 'good']" in line


def test_a_bad_city_file_is_one_line_naming_file_key_value_and_allowed(cities, capsys):
    code, out, err = run_cli(capsys, "ingest", "badepsg", "--start", "2024-03-01")
    assert code == 2 and out == ""
    assert one_line(err).startswith(
        f"traffic ingest: {cities / 'badepsg.toml'}: crs_epsg = 99999 is not an EPSG code pyproj knows; allowed: "
        "a projected CRS in metres"
    )


def test_an_unreadable_delivery_is_one_line_naming_the_file(cities, capsys):
    code, out, err = run_cli(capsys, "ingest", "empty", "--start", "2024-03-01")
    assert code == 2 and out == ""
    assert one_line(err).startswith(f"traffic ingest: cannot read {cities.parent / 'raw' / 'empty.csv'} as CSV")


def test_debug_shows_the_traceback_before_or_after_the_sub_command(cities, capsys):
    for argv in (["--debug", "ingest", "badepsg"], ["ingest", "badepsg", "--debug"]):
        code, _, err = run_cli(capsys, *argv, "--start", "2024-03-01")
        assert code == 2
        assert err.startswith("Traceback (most recent call last):") and "traffic.errors.ConfigError: " in err
        assert err.splitlines()[-1].startswith(f"traffic ingest: {cities / 'badepsg.toml'}: crs_epsg = 99999")


def test_an_unexpected_error_is_one_line_with_a_hint_and_exit_1(cities, tmp_path, monkeypatch, capsys):
    home = tmp_path / "not_a_folder"
    home.write_text("a file where TRAFFIC_HOME should be a folder")
    monkeypatch.setenv("TRAFFIC_HOME", str(home))
    code, _, err = run_cli(capsys, "ingest", "good", "--start", "2024-03-01")
    assert code == 1
    line = one_line(err)
    assert line.startswith(f"traffic ingest: NotADirectoryError: [Errno 20] Not a directory: '{home}/lake/")
    assert line.endswith("(an unexpected error: run again with --debug for the traceback)")
    code, _, err = run_cli(capsys, "ingest", "good", "--start", "2024-03-01", "--debug")
    assert code == 1 and "Traceback (most recent call last):" in err and "NotADirectoryError" in err


def test_the_installed_command_prints_one_line_and_exits_2(cities):
    env = {**__import__("os").environ, "TRAFFIC_CITIES": str(cities)}
    proc = subprocess.run(
        [sys.executable, "-m", "traffic.cli", "ingest", "../../x"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert one_line(proc.stderr).startswith("traffic ingest: city '../../x' is not a city name")


# ------------------------------------------------------------------ numbers: the option and its range, exit 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["hotspots", "los_angeles", "--hours", "3e9"],
            "argument --hours: '3e9' is not allowed; allowed: a number with 0 < hours <= 744",
        ),
        (["hotspots", "los_angeles", "--hours", "1e400"], "argument --hours: '1e400' is not allowed"),
        (
            ["hotspots", "los_angeles", "--limit", "1e20"],
            "argument --limit: '1e20' is not allowed; allowed: a whole number with 1 <= limit <= 100000",
        ),
        (["hotspots", "los_angeles", "--limit", "99999999999999999999999"], "1 <= limit <= 100000"),
        (
            ["train", "nowhere", "--budget", "1e400"],
            "argument --budget: '1e400' is not allowed; allowed: a number with 0 < x <= 604800",
        ),
        (["train", "nowhere", "--budget", "-5"], "argument --budget: '-5' is not allowed"),
        (
            ["replay", "los_angeles", "--date", "2012-03-07", "--every", "1e9"],
            "argument --every: '1e9' is not allowed; allowed: a whole number with 1 <= x <= 1440",
        ),
        (["replay", "los_angeles", "--date", "2012-03-07", "--top", "1" + "0" * 30], "argument --top:"),
        (
            ["replay", "los_angeles", "--date", "2012-13-07"],
            "argument --date: '2012-13-07' is not a date; allowed: YYYY-MM-DD",
        ),
        (["ingest", "nowhere", "--start", "yesterday"], "argument --start: 'yesterday' is not a date"),
        (
            ["grid", "evaluate", "x.npz", "--holdout-days", "1", "--context", "1" + "0" * 20],
            "argument --context: '100000000000000000000' is not allowed; allowed: a whole number with 1 <= x <= 100000",
        ),
        (
            ["grid", "evaluate", "x.npz", "--holdout-days", "1", "--seed", "1e20"],
            "argument --seed: '1e20' is not allowed; allowed: a whole number with 0 <= x <= 4294967295",
        ),
        (
            ["grid", "evaluate", "x.npz", "--holdout-fraction", "1.5"],
            "argument --holdout-fraction: '1.5' is not allowed; allowed: a number with 0 < x < 1",
        ),
        (["grid", "evaluate", "x.npz", "--holdout-days", "inf"], "argument --holdout-days: 'inf' is not allowed"),
        (["grid", "info", "x.npz", "--bin-minutes", "1e20"], "argument --bin-minutes: '1e20' is not allowed"),
    ],
)
def test_a_number_out_of_range_names_the_option_and_its_range(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    line = one_line(err)
    assert line.startswith(f"traffic {' '.join(argv[:2]) if argv[0] == 'grid' else argv[0]}: ")
    assert message in line and line.endswith("--help)")


def test_the_cli_ranges_are_those_of_find_hotspots():
    from traffic.publish import duckdb_publish as dp

    assert (cli.MAX_HOURS, cli.MAX_LIMIT) == (dp.MAX_HOURS, dp.MAX_LIMIT)


def test_end_before_start_is_one_line(capsys):
    code, _, err = run_cli(capsys, "ingest", "los_angeles", "--start", "2012-03-05", "--end", "2012-03-01")
    assert code == 2
    assert one_line(err) == "traffic ingest: end '2012-03-01' is before start '2012-03-05'"


def test_a_project_root_path_is_refused_with_the_rule(tmp_path, monkeypatch, capsys):
    # a city file written for the rule before issue 9 (paths relative to the project root)
    text = (PROJECT_ROOT / "cities" / "los_angeles.toml").read_text().replace('"../data/', '"data/')
    (tmp_path / "los_angeles.toml").write_text(text)
    monkeypatch.setenv("TRAFFIC_CITIES", str(tmp_path))
    code, _, err = run_cli(capsys, "ingest", "los_angeles", "--start", "2012-03-01")
    assert code == 2
    line = one_line(err)
    assert "a relative path resolves against the city file's folder" in line
    assert "exists relative to the project root: write '" in line
