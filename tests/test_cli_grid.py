"""The `traffic grid` commands: info and evaluate on array files, their errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.grid.arrays_data import TINY, flows, make_grid
from traffic.cli import main
from traffic.grid.writers import save_array


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
