"""What each city's decision rests on: the backtest of its newest nightly run, and what the backtest cost.

Reads the MLflow store of a home after ``make nightly`` (nothing is trained here: the figures are those
the nightly logged and decided on) and writes the ``backtest`` section of ``bench/RESULTS.md``:

    python bench/bench_backtest.py                  # the home of `make nightly` (var/)
    python bench/bench_backtest.py --home /tmp/h --no-write

Per city: the folds (holiday folds marked), every candidate's backtest mean RMSE and its paired
difference against GBM with the 90 % interval, the decision, and the training task's time with the
share spent on the backtest (``train.backtest_seconds``: the interval models of the three network
variants and every candidate scored from every origin on every fold) against the whole training call
(``train.total_seconds``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import ROOT, load_average, machine, replace_block, today  # noqa: E402

from traffic.forecast.backtest import CANDIDATES as BACKTEST_CANDIDATES  # noqa: E402

CANDIDATES = (*BACKTEST_CANDIDATES, "champion")
#: The network issue's first hours per city (weights 1 : 2 for h01 and h02-03, as its self-check reads them)
#: and its targets: combination / GBM over the day, over the first hours, combination / without network
#: over the first hours (``../shared/checks/network-learns``).
FIRST_HOURS = {"los_angeles": {"h01": 1.0}}
DEFAULT_FIRST = {"h01": 1.0, "h02-03": 2.0}
TARGETS = {"melbourne": (0.98, 0.95, 0.97)}
DEFAULT_TARGETS = (0.99, 0.97, 0.98)


def _pct(v: float) -> str:
    return f"{100 * v:+.1f} %" if math.isfinite(v) else "n/a"


def city_section(client, exp) -> list[str]:
    runs = client.search_runs(
        [exp.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"]
    )
    run = next((r for r in runs if "backtest.folds" in r.data.metrics), None)
    if run is None:
        return [f"### {exp.name}", "", "No nightly run with a backtest yet.", ""]
    m, tags = run.data.metrics, run.data.tags
    folds, days, hol = int(m["backtest.folds"]), int(m["backtest.days"]), int(m.get("backtest.holiday_folds", 0))
    lines = [
        f"### {exp.name}: run `{run.info.run_name}` ({run.info.run_id})",
        "",
        f"{folds} folds over {days} target days ({hol} holiday fold{'s' if hol != 1 else ''}, reported apart).",
        "",
        "| candidate | backtest mean RMSE | without holiday folds | vs gbm (90 % interval) |",
        "|---|---:|---:|---:|",
    ]
    names = [c for c in CANDIDATES if f"backtest.{c}.rmse_mean" in m]
    for c in sorted(names, key=lambda c: m[f"backtest.{c}.rmse_mean"]):
        vs = "(reference)"
        if f"backtest.{c}.vs_gbm.mean" in m:
            vs = f"{_pct(m[f'backtest.{c}.vs_gbm.mean'])} [{_pct(m[f'backtest.{c}.vs_gbm.lo'])}, {_pct(m[f'backtest.{c}.vs_gbm.hi'])}]"
        lines.append(
            f"| {c} | {m[f'backtest.{c}.rmse_mean']:.4f} | {m.get(f'backtest.{c}.rmse_mean_regular', math.nan):.4f} | {vs} |"
        )
    lines += network_targets(exp.name.removeprefix("traffic-"), m)
    lines += validation_line(client, run.info.run_id)
    bt_s, total_s = m.get("train.backtest_seconds", math.nan), m.get("train.total_seconds", math.nan)
    share = bt_s / total_s if total_s and math.isfinite(total_s) else math.nan
    lines += [
        "",
        f"Decision: {tags.get('promotion.decision', '(not recorded)')}",
        "",
        f"Training call {total_s:.0f} s, of it the backtest {bt_s:.0f} s ({share:.0%}); "
        f"optimiser steps {m.get('train.steps', math.nan):.0f}.",
        "",
    ]
    return lines


def validation_line(client, run_id: str) -> list[str]:
    """The full model against base + head on validation, after training: the learning curve's step 0 and best.

    Step 0 of the full model is base + head exactly (the recurrent path enters the pre-fitted head
    through zero weights: ``tests/test_model.py``); the validated state with the lowest loss ships,
    step 0 included, so the shipped model is never worse than base + head there.
    """
    curve = sorted(client.get_metric_history(run_id, "curve.val_loss"), key=lambda r: r.step)
    if not curve or curve[0].step != 0:
        return ["", "Validation: no step-0 point on the learning curve (a run logged before it)."]
    best = min(curve, key=lambda r: r.value)
    return [
        "",
        f"Validation loss on the trained forecast steps: base + head (step 0) {curve[0].value:.4f}, shipped full "
        f"model (step {best.step}) {best.value:.4f}: full / base + head = {best.value / curve[0].value:.3f}.",
    ]


def _first(m, cand: str, groups: dict[str, float]) -> float:
    vals = [(m.get(f"backtest.{cand}.rmse.{g}"), w) for g, w in groups.items()]
    if any(v is None for v, _ in vals):
        return math.nan
    return sum(v * w for v, w in vals) / sum(w for _, w in vals)


def network_targets(city: str, m) -> list[str]:
    """The network issue's targets for one city's run: the combination against GBM and without the network."""
    if "backtest.combination.rmse_mean" not in m:
        return ["", "No combination in this run (logged before per-horizon combinations)."]
    groups = FIRST_HOURS.get(city, DEFAULT_FIRST)
    want = TARGETS.get(city, DEFAULT_TARGETS)
    day = m["backtest.combination.rmse_mean"] / m["backtest.gbm.rmse_mean"]
    fh = _first(m, "combination", groups) / _first(m, "gbm", groups)
    net = _first(m, "combination", groups) / _first(m, "combination_without_network", groups)
    first = " + ".join(f"{g}" + (f" x{w:g}" if w != 1 else "") for g, w in groups.items())

    def verdict(v: float, w: float) -> str:
        return "met" if v <= w else f"**missed** by {100 * (v - w):.1f} points"

    lines = [
        "",
        f"Network issue targets (first hours = {first}):",
        "",
        "| figure | ratio | target | |",
        "|---|---:|---:|---|",
        f"| combination / gbm, whole day | {day:.3f} | <= {want[0]} | {verdict(day, want[0])} |",
        f"| combination / gbm, first hours | {fh:.3f} | <= {want[1]} | {verdict(fh, want[1])} |",
        f"| combination / combination_without_network, first hours | {net:.3f} | <= {want[2]} | {verdict(net, want[2])} |",
        "",
        "Per horizon group (relative RMSE, 90 % interval over target days):",
        "",
    ]
    tags = sorted(
        {k.split(".")[-2] for k in m if k.startswith("backtest.combination.vs_gbm.h") and k.endswith(".mean")}
    )
    lines += ["| pair | " + " | ".join(tags) + " |", "|---|" + "---:|" * len(tags)]
    for a, b in (("combination", "combination_without_network"), ("combination", "gbm"), ("model", "base_head")):
        cells = []
        for t in tags:
            k = f"backtest.{a}.vs_{b}.{t}"
            cells.append(
                f"{_pct(m.get(k + '.mean', math.nan))} [{_pct(m.get(k + '.lo', math.nan))}, {_pct(m.get(k + '.hi', math.nan))}]"
            )
        lines.append(f"| {a} vs {b} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default=str(ROOT / "var"), help="the TRAFFIC_HOME `make nightly` wrote (default var/)")
    ap.add_argument("--no-write", action="store_true", help="print only, do not touch bench/RESULTS.md")
    args = ap.parse_args()
    os.environ["TRAFFIC_HOME"] = args.home
    import mlflow

    from traffic.config import mlflow_uri

    client = mlflow.MlflowClient(tracking_uri=mlflow_uri())
    exps = [e for e in client.search_experiments() if e.name.startswith("traffic-")]
    body = [
        "## Backtests: what each city's decision rests on (newest nightly run)",
        "",
        f"- Machine: {machine()}",
        f"- Date: {today()}; load average {load_average()}",
        "- Command: `make nightly`, then `python bench/bench_backtest.py` (reads the runs `make nightly` logged)",
        "- Intervals: Diebold–Mariano with the HLN small-sample correction over target days (docs/backtests.md).",
        "",
    ]
    for exp in sorted(exps, key=lambda e: e.name):
        body += city_section(client, exp)
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        replace_block("backtest", text)


if __name__ == "__main__":
    main()
