"""Grids from anywhere: loading/saving (T, C, H, W) arrays, their checks, evaluation and the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from traffic.cli import main
from traffic.forecast.baselines import BASELINES
from traffic.forecast.evaluation import evaluate_array
from traffic.forecast.inference import evaluate_module
from traffic.forecast.model_folder import load_model
from traffic.forecast.tables import format_report
from traffic.grid.arrays import load_array, model_channels
from traffic.grid.tensor import GridTensor, describe
from traffic.grid.writers import save_array

#: Few optimisation steps: the end-to-end checks test the plumbing, not accuracy.
TINY = {"max_steps": 3, "max_epochs": 1, "batch_size": 8, "eval_every_steps": 2, "max_val_samples": 8, "cpu_threads": 1}


def flows(t: int = 192, c: int = 2, h: int = 8, w: int = 8, *, missing: float = 0.1, seed: int = 0) -> np.ndarray:
    """In/out-flow-like counts ``(T, C, H, W)`` at 30-minute bins: a daily cycle per cell, NaN where missing."""
    rng = np.random.default_rng(seed)
    tod = np.sin(2 * np.pi * np.arange(t) / 48)[:, None, None, None]
    v = rng.uniform(10, 100, (1, c, h, w)) * (1.2 + tod) + rng.normal(0, 3, (t, c, h, w))
    v = np.maximum(v, 0).astype(np.float32)
    v[rng.random(v.shape) < missing] = np.nan
    return v


def make_grid(t: int = 192, c: int = 2, h: int = 8, w: int = 8) -> GridTensor:
    v = flows(t, c, h, w)
    v[:, :, -1, :] = np.nan  # an edge row and the last bin never observed: the shape must survive
    v[-1] = np.nan
    m = np.isfinite(v)
    times = pd.date_range("2015-03-02", periods=t, freq="30min", tz="UTC")
    cells = np.arange(100, 100 + h * w, dtype=np.int32).reshape(h, w)
    return GridTensor(v, m, m.astype(np.int32) * 2, times, tuple(f"bike.ch{i}" for i in range(c)), cells)


def long_table(**cols) -> pa.Table:
    return pa.table(cols)


# ----------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_round_trip_keeps_everything(tmp_path, suffix):
    g = make_grid()
    path = save_array(g, tmp_path / f"a{suffix}")
    back = load_array(path)
    assert back.shape == g.shape
    np.testing.assert_array_equal(back.mask, g.mask)
    np.testing.assert_array_equal(back.values, g.values)  # NaN where missing in both
    np.testing.assert_array_equal(back.coverage, g.coverage)
    np.testing.assert_array_equal(back.cell_ids, g.cell_ids)
    assert back.channels == g.channels
    assert (back.times == g.times).all()
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_save_is_atomic_on_failure(tmp_path, suffix, monkeypatch):
    g = make_grid(t=8, h=2, w=2)
    path = save_array(g, tmp_path / f"a{suffix}")
    before = path.read_bytes()
    bad = GridTensor(g.values, g.mask, g.coverage, g.times, g.channels, g.cell_ids)
    bad.times = None  # type: ignore[assignment]  # breaks the writer after the temporary file exists
    with pytest.raises(TypeError):
        save_array(bad, path)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*tmp"))


def test_mask_defaults_to_finite_values_and_times_from_start(tmp_path):
    v = flows(t=10, h=3, w=2)
    np.savez(tmp_path / "a.npz", values=v)
    g = load_array(tmp_path / "a.npz", start="2015-01-01T00:00", bin_minutes=30)
    np.testing.assert_array_equal(g.mask, np.isfinite(v))
    assert g.times[0] == pd.Timestamp("2015-01-01", tz="UTC")  # naive start labelled UTC
    assert (np.diff(g.times.asi8) == pd.Timedelta("30min").value).all() and len(g.times) == 10
    assert g.channels == ("grid.c0", "grid.c1")
    assert g.coverage.sum() == g.mask.sum()


def test_npz_accepts_the_data_alias_iso_times_and_channel_names(tmp_path):
    v = flows(t=6, h=2, w=2, missing=0)
    times = np.array([f"2016-05-01T0{i}:00" for i in range(6)])
    np.savez(tmp_path / "a.npz", data=v, times=times, channels=np.array(["inflow", "taxi.outflow"]))
    g = load_array(tmp_path / "a.npz")
    assert g.channels == ("grid.inflow", "taxi.outflow")
    assert g.times[1] - g.times[0] == pd.Timedelta("1h")
    np.testing.assert_array_equal(g.values, v)
    g2 = load_array(tmp_path / "a.npz", channels=["in", "out"])
    assert g2.channels == ("grid.in", "grid.out")


def test_explicit_mask_hides_values(tmp_path):
    v = flows(t=4, h=2, w=2, missing=0)
    m = np.ones(v.shape, dtype=np.uint8)
    m[0, 0, 0, 0] = 0
    np.savez(tmp_path / "a.npz", values=v, mask=m)
    g = load_array(tmp_path / "a.npz", start="2015-01-01", bin_minutes=60)
    assert not g.mask[0, 0, 0, 0] and np.isnan(g.values[0, 0, 0, 0]) and g.mask.sum() == m.sum()


def test_fill_gaps_inserts_unobserved_bins(tmp_path):
    v = flows(t=5, h=2, w=2, missing=0)
    times = pd.to_datetime(
        ["2015-01-01 00:00", "2015-01-01 00:30", "2015-01-01 02:00", "2015-01-01 02:30", "2015-01-01 03:00"]
    )
    np.savez(tmp_path / "a.npz", values=v, times=times.values.astype("datetime64[ns]").astype(np.int64))
    with pytest.raises(ValueError, match=r"not evenly spaced: bin 2 .*--fill-gaps"):
        load_array(tmp_path / "a.npz")
    g = load_array(tmp_path / "a.npz", fill_gaps=True)
    assert g.shape[0] == 7
    assert g.mask.any(axis=(1, 2, 3)).tolist() == [True, True, False, False, True, True, True]
    np.testing.assert_array_equal(g.values[4], v[2])


def test_parquet_long_table_with_indices_and_missing_rows(tmp_path):
    # t/c indices: 3 bins, 2 channels, a 2x3 grid, most rows absent (= missing)
    tbl = long_table(
        t=pa.array([0, 0, 2, 1], pa.int16()),
        c=pa.array([0, 1, 1, 0], pa.int8()),
        row=pa.array([0, 1, 1, 0], pa.int32()),
        col=pa.array([2, 0, 2, 1], pa.int32()),
        value=pa.array([1.5, 2.0, None, 4.0], pa.float64()),
        observed=pa.array([True, True, False, False]),
    )
    pq.write_table(tbl, tmp_path / "a.parquet")
    with pytest.raises(ValueError, match=r"pass start and bin_minutes \(CLI: --start, --bin-minutes\)"):
        load_array(tmp_path / "a.parquet")
    g = load_array(tmp_path / "a.parquet", start="2015-01-01T00:00Z", bin_minutes=60)
    assert g.shape == (3, 2, 2, 3)
    assert g.mask.sum() == 2 and g.values[0, 0, 0, 2] == 1.5 and g.values[0, 1, 1, 0] == 2.0
    assert not g.mask[1, 0, 0, 1]  # observed=False hides the value 4.0
    assert g.times[-1] == pd.Timestamp("2015-01-01T02:00Z")


def test_parquet_with_times_and_channel_names(tmp_path):
    times = pd.to_datetime(["2015-01-01T00:00", "2015-01-01T01:30", "2015-01-01T00:30"]).tz_localize("UTC")
    tbl = long_table(
        time=pa.array(times),
        channel=pa.array(["out", "in", "in"]),
        row=pa.array([0, 0, 1]),
        col=pa.array([0, 1, 0]),
        value=pa.array([1, 2, 3]),
    )
    pq.write_table(tbl, tmp_path / "a.parquet")
    g = load_array(tmp_path / "a.parquet")
    assert g.channels == ("grid.in", "grid.out")  # sorted names
    assert g.shape == (4, 2, 2, 2)  # 00:00 .. 01:30 at the common 30-minute step; 01:00 empty
    assert g.values[3, 0, 0, 1] == 2 and g.values[1, 0, 1, 0] == 3 and not g.mask[2].any()
    g2 = load_array(tmp_path / "a.parquet", channels=["out", "in", "extra"])
    assert g2.channels == ("grid.out", "grid.in", "grid.extra") and not g2.mask[:, 2].any()
    assert g2.values[0, 0, 0, 0] == 1


# ---------------------------------------------------------------------------------------- errors
def _npz(tmp_path, **arrays):
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


@pytest.mark.parametrize(
    ("arrays", "kwargs", "match"),
    [
        (
            {"values": np.zeros((4, 3, 3))},
            {},
            r"bad.npz: values has shape \(4, 3, 3\); expected 4 axes .*values\[:, None\]",
        ),
        (
            {"values": np.zeros((4, 1, 2, 2)), "mask": np.ones((4, 1, 2, 3), bool)},
            {},
            r"mask has shape \(4, 1, 2, 3\), values \(4, 1, 2, 2\)",
        ),
        ({"values": np.zeros((4, 1, 2, 2))}, {"bin_minutes": 30}, r"bad.npz has no times: pass start \(CLI: --start\)"),
        (
            {"values": np.zeros((4, 1, 2, 2)), "data": np.zeros((4, 1, 2, 2))},
            {},
            r"exactly one of the keys \['values', 'data', 'X'\]",
        ),
        ({"values": np.zeros((4, 1, 2, 2)), "time": np.arange(4)}, {}, r"unknown keys \['time'\]; allowed: \['values'"),
        (
            {"values": np.zeros((4, 1, 2, 2))},
            {"start": "2015-01-01", "bin_minutes": 7},
            r"bin length 420 s is not allowed",
        ),
        (
            {"values": np.full((4, 1, 2, 2), np.inf), "mask": np.ones((4, 1, 2, 2), bool)},
            {"start": "2015-01-01", "bin_minutes": 60},
            r"NaN/inf where the mask says observed, first at .* \(0, 0, 0, 0\)",
        ),
        (
            {"values": np.zeros((3, 1, 1, 1)), "times": np.array([0, 2, 1]) * 3_600_000_000_000},
            {},
            r"times must increase: bin 2",
        ),
        (
            {"values": np.zeros((2, 1, 1, 1)), "channels": np.array(["calendar.x"])},
            {"start": "2015-01-01", "bin_minutes": 60},
            r"feed names \['calendar'\] are reserved",
        ),
    ],
)
def test_npz_errors_name_the_problem(tmp_path, arrays, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_array(_npz(tmp_path, **arrays), **kwargs)


def _pq(tmp_path, **cols):
    pq.write_table(pa.table(cols), tmp_path / "bad.parquet")
    return tmp_path / "bad.parquet"


BASE_COLS = {"t": [0, 1], "c": [0, 0], "row": [0, 0], "col": [0, 1], "value": [1.0, 2.0]}


@pytest.mark.parametrize(
    ("cols", "match"),
    [
        ({**BASE_COLS, "speed": [1, 2]}, r"bad.parquet: unknown columns \['speed'\]; allowed: \['time', 't'"),
        ({**BASE_COLS, "row": [0.0, 1.0]}, r"column 'row' has type double; allowed: integer"),
        ({**BASE_COLS, "col": [0, -1]}, r"column 'col' is -1 at row 1; allowed: >= 0"),
        (
            {**BASE_COLS, "t": [0, 0], "col": [1, 1]},
            r"duplicate \(time, channel, row, col\) = \(2015-01-01T00:00:00\+00:00, c0, 0, 1\) at rows 0 and 1",
        ),
        ({k: v for k, v in BASE_COLS.items() if k != "value"}, r"needs column 'value'"),
        ({**BASE_COLS, "time": ["2015-01-01", "2015-01-02"]}, r"exactly one of column 'time' or 't'"),
        ({**BASE_COLS, "value": [1.0, float("inf")]}, r"column 'value' is inf at row 1"),
        ({**BASE_COLS, "mask": [1, 0]}, r"column 'mask' has type int64; allowed: bool"),
    ],
)
def test_parquet_errors_name_the_problem(tmp_path, cols, match):
    with pytest.raises(ValueError, match=match):
        load_array(_pq(tmp_path, **cols), start="2015-01-01T00:00Z", bin_minutes=60)


def test_parquet_duplicates_are_reported_in_file_order(tmp_path):
    cols = {"t": [3, 0, 1, 0, 1], "c": [0] * 5, "row": [0] * 5, "col": [0] * 5, "value": [1.0] * 5}
    with pytest.raises(ValueError, match=r"at rows 1 and 3"):
        load_array(_pq(tmp_path, **cols), start="2015-01-01", bin_minutes=60)


def test_parquet_times_off_the_bins(tmp_path):
    times = pd.to_datetime(["2015-01-01T00:00Z", "2015-01-01T00:30Z", "2015-01-01T00:45Z"])
    path = _pq(tmp_path, time=pa.array(times), c=[0, 0, 0], row=[0, 0, 0], col=[0, 0, 0], value=[1.0, 2.0, 3.0])
    with pytest.raises(
        ValueError, match=r"column 'time' is 2015-01-01T00:45:00\+00:00 at row 2; allowed: 30-minute bins"
    ):
        load_array(path, bin_minutes=30)
    assert load_array(path).shape[0] == 4  # without a bin length: the common 15-minute step


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"unknown file type '.csv'; allowed: \['.npz', '.parquet', '.pq'\]"):
        load_array(tmp_path / "a.csv")
    with pytest.raises(FileNotFoundError):
        load_array(tmp_path / "a.npz")


@pytest.mark.parametrize(
    ("names", "expected"),
    [(["in", "out"], ("grid.in", "grid.out")), (["cam.car", "speed"], ("cam.car", "grid.speed"))],
)
def test_model_channels(names, expected):
    assert model_channels(names) == expected


@pytest.mark.parametrize(
    ("names", "match"), [(["in", "grid.in"], "repeat"), (["a."], "non-empty"), (["prior.x"], "reserved")]
)
def test_model_channels_errors(names, match):
    with pytest.raises(ValueError, match=match):
        model_channels(names)


def test_holidays_from_a_country_code_or_dates(tmp_path):
    np.savez(tmp_path / "a.npz", values=flows(t=48, h=1, w=1))
    g = load_array(tmp_path / "a.npz", start="2015-07-02", bin_minutes=60, holidays="US")
    assert "2015-07-03" in g.holidays and "2015-12-25" in g.holidays  # Independence Day observed on the Friday
    assert not g.holiday[:24].any() and g.holiday[24:].all()
    g2 = load_array(tmp_path / "a.npz", start="2015-07-02", bin_minutes=60, holidays="2015-07-03,2015-07-05")
    assert g2.holidays == ("2015-07-03", "2015-07-05") and g2.holiday.sum() == 24
    back = load_array(save_array(g2, tmp_path / "b.parquet"))
    assert back.holidays == g2.holidays


# ------------------------------------------------------------------------------------ evaluation
@pytest.fixture(scope="module")
def grid() -> GridTensor:
    v = flows(t=192)  # 4 days of 30-minute bins, 2 channels, 8x8
    m = np.isfinite(v)
    times = pd.date_range("2015-03-02", periods=len(v), freq="30min", tz="UTC")
    return GridTensor(v, m, m.astype(np.int32), times, ("inflow", "outflow"), np.arange(64).reshape(8, 8))


@pytest.fixture(scope="module")
def report(grid, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("model")
    return evaluate_array(
        grid,
        context_steps=4,
        horizon_steps=3,
        holdout_days=1,
        budget_s=60,
        seed=0,
        model_overrides=TINY,
        save_model_dir=out,
    )


@pytest.mark.slow
def test_evaluate_reports_every_model_on_the_same_holdout(report, grid):
    assert json.loads(json.dumps(report, allow_nan=False)) == report  # strict JSON
    assert report["data"]["shape"] == [192, 2, 8, 8] and report["data"]["channels"] == ["grid.inflow", "grid.outflow"]
    assert report["horizon_minutes"] == [30, 60, 90]
    metrics = report["metrics"]
    assert set(metrics) == {"model", *BASELINES}
    for name, m in metrics.items():
        assert len(m["rmse"]) == len(m["mae"]) == 3, name
        assert all(np.isfinite(m["rmse"])) and all(np.isfinite(m["mae"])), name
        assert m["n"] == metrics["model"]["n"], name  # same holdout targets for everyone
    # a holdout of 1 day = 48 bins: samples whose three targets all lie in it
    assert report["split"]["holdout_samples"] == 48 - 3 + 1
    assert metrics["model"]["n"][0] == int(grid.mask[-48:].sum()) - int(grid.mask[-2:].sum())
    best = report["best_baseline"]
    assert best == min((k for k in metrics if k != "model"), key=lambda k: metrics[k]["rmse_mean"])
    skill = report["skill_pct"]["rmse"]["mean"]
    assert skill == pytest.approx(100 * (1 - metrics["model"]["rmse_mean"] / metrics[best]["rmse_mean"]))
    assert report["training"]["steps"] == TINY["max_steps"] and report["training"]["device"] == "cpu"
    assert "grid" in report["modality_weights"] and all(0 < w < 1 for w in report["modality_weights"].values())
    text = format_report(report)
    assert "RMSE per horizon" in text and "MAE per horizon" in text and f"best baseline (mean RMSE): {best}" in text
    # the ablation and the GBM comparison per group of hours ahead (30-min bins, 3 steps: "1 h", "2–3 h")
    comp = report["comparison"]
    assert {"full", "gbm"} <= set(comp["columns"]) and [g["label"] for g in comp["groups"]] == ["1 h", "2–3 h", "all"]
    assert comp["groups"][-1]["rmse"]["model"] == pytest.approx(metrics["model"]["rmse_mean"])
    assert comp["groups"][-1]["rmse"]["gbm"] == pytest.approx(metrics["gbm"]["rmse_mean"])
    assert set(report["ablation"]) <= {"base", "base_head"}
    assert "RMSE per group of hours ahead: the network with parts switched off" in text


@pytest.mark.slow
def test_saved_model_scores_the_same_when_loaded_back(report, grid):
    module = load_model(report["saved_model"])
    named = GridTensor(
        grid.values, grid.mask, grid.coverage, grid.times, ("grid.inflow", "grid.outflow"), grid.cell_ids
    )
    again = evaluate_module(module, named, holdout_days=1)
    np.testing.assert_allclose(again.rmse, report["metrics"]["model"]["rmse"], rtol=1e-5)
    assert again.n == report["metrics"]["model"]["n"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"holdout_days": 1, "holdout_fraction": 0.2}, "exactly one of holdout_days and holdout_fraction"),
        ({}, "exactly one of holdout_days and holdout_fraction"),
        ({"holdout_fraction": 1.5}, r"holdout_fraction=1.5 must lie in \(0, 1\)"),
        ({"holdout_days": 5}, r"holdout of 5 days = 240 bins must .* grid of 192 bins"),
        ({"holdout_days": 1, "context_steps": 0}, "context_steps=0 must be a whole number >= 1"),
    ],
)
def test_evaluate_rejects_bad_setups_early(grid, kwargs, match):
    kw = {"context_steps": 4, "horizon_steps": 3, "budget_s": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        evaluate_array(grid, **kw)


def test_evaluate_rejects_uneven_times(grid):
    times = grid.times.delete(5).append(pd.DatetimeIndex([grid.times[-1] + pd.Timedelta("1h")]))
    uneven = GridTensor(grid.values, grid.mask, grid.coverage, times, grid.channels, grid.cell_ids)
    with pytest.raises(ValueError, match=r"grid times: times are not evenly spaced: bin 5"):
        evaluate_array(uneven, context_steps=4, horizon_steps=3, holdout_days=1, budget_s=1)


def test_describe(grid):
    d = describe(grid)
    assert d["shape"] == [192, 2, 8, 8] and d["bin_minutes"] == 30 and d["days"] == 4
    assert d["observed_share"] == pytest.approx(grid.mask.mean())


# ------------------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_grid_evaluate_from_parquet(tmp_path, capsys):
    g = make_grid(t=192, h=4, w=4)
    path = save_array(g, tmp_path / "flows.parquet")
    out = tmp_path / "out" / "report.json"
    argv = ["grid", "evaluate", str(path), "--context", "4", "--horizon", "2", "--holdout-fraction", "0.25"]
    argv += ["--budget", "60", "--json", str(out)]
    for k, v in TINY.items():
        argv += ["--set", f"{k}={v}"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["data"]["channels"] == ["bike.ch0", "bike.ch1"]
    assert report["setup"]["holdout_days"] == 1  # 25 % of 4 days
    assert report["setup"]["model_overrides"]["max_steps"] == TINY["max_steps"]
    assert "RMSE per horizon" in printed and f"report written to {out}" in printed
    assert len(report["metrics"]["model"]["rmse"]) == 2


def test_cli_grid_info_and_errors(tmp_path, capsys):
    np.savez(tmp_path / "a.npz", values=flows(t=6, h=2, w=3))
    assert main(["grid", "info", str(tmp_path / "a.npz"), "--start", "2015-01-01", "--bin-minutes", "60"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [6, 2, 2, 3] and info["start"] == "2015-01-01T00:00:00+00:00"
    # a bad file or setting: one line on stderr, exit code 2 (issue 9: was SystemExit(message), exit code 1)
    assert main(["grid", "info", str(tmp_path / "a.npz")]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"traffic grid info: .*a.npz has no times: pass start and bin_minutes.*\n", err)
    argv = ["grid", "evaluate", str(tmp_path / "a.npz"), "--start", "2015-01-01", "--bin-minutes", "60"]
    assert main([*argv, "--holdout-days", "5"]) == 2
    assert re.fullmatch(r"traffic grid evaluate: holdout of 5 days = 120 bins must.*\n", capsys.readouterr().err)
    assert main([*argv, "--holdout-days", "0.1", "--set", "max_steps"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a holdout is required (argparse)
        main(["grid", "evaluate", str(tmp_path / "a.npz")])


def test_ablation_and_gbm_comparison_per_horizon_group():
    """What ``traffic grid evaluate`` prints besides the per-horizon tables, from the metrics of a result."""
    from traffic.forecast.evaluation import comparison_by_group
    from traffic.forecast.result import Holdout, HorizonMetrics, TrainResult
    from traffic.forecast.tables import comparison_lines

    def hm(*rmse: float) -> HorizonMetrics:
        return HorizonMetrics(mae=[0.5 * v for v in rmse], rmse=list(rmse), n=[10] * len(rmse))

    res = TrainResult(
        module=None,
        metrics={"model": hm(1.0, 2.0, 3.0), "gbm": hm(1.0, 2.5, 2.5), "persistence": hm(5.0, 5.0, 5.0)},
        holdout=Holdout("a", "b", 1, "d"),
        learning_curve=[],
        params={},
        input_example=np.zeros((1, 1, 1, 1, 1), np.float32),
        example_forecast=np.zeros((3, 1, 1, 1)),
        example_target=np.zeros((3, 1, 1, 1)),
        example_mask=np.zeros((3, 1, 1, 1), bool),
        channels=("grid.x",),
        train_window=("a", "b"),
        train_seconds=1.0,
        device="cpu",
        stopped_reason="max_steps",
        ablation={"base": hm(2.0, 4.0, 6.0), "base_head": hm(1.0, 2.0, 4.0)},
    )
    comp = comparison_by_group(res, 1800)  # 30-min bins: step 1-2 = "1 h", step 3 = "2–3 h"
    assert comp["columns"] == ["base", "base+head", "full", "gbm"]
    one, two, mean = comp["groups"]
    assert (one["label"], one["steps"], two["label"], two["steps"]) == ("1 h", [1, 2], "2–3 h", [3, 3])
    assert one["rmse"] == {"base": 3.0, "base_head": 1.5, "model": 1.5, "gbm": 1.75}
    assert two["mae"] == {"base": 3.0, "base_head": 2.0, "model": 1.5, "gbm": 1.25}
    assert two["full_vs_base_head_pct"]["rmse"] == pytest.approx(-25.0)  # 3 vs 4
    assert two["full_vs_gbm_pct"]["rmse"] == pytest.approx(20.0)  # 3 vs 2.5: GBM wins the later hours
    assert mean["rmse"]["model"] == pytest.approx(2.0) and mean["full_vs_gbm_pct"]["rmse"] == pytest.approx(0.0)
    assert mean["full_vs_base_head_pct"]["rmse"] == pytest.approx(100 * (2.0 - 7 / 3) / (7 / 3))
    lines = comparison_lines(comp, 10)
    assert "full vs base+head" in lines[2] and "full vs gbm" in lines[2]
    assert lines[5].split()[:2] == ["all", "1-3"] and lines[5].split()[-4:] == ["-14.3", "%", "+0.0", "%"]

    res.ablation = {}  # a result without the ablation: the comparison is the model against GBM
    assert comparison_by_group(res, 1800)["columns"] == ["full", "gbm"]
