"""Holdout accuracy of the forecaster and its variants against the baselines, on both shipped cities.

For each city the nightly window of its last date is loaded from the lake (ingested and
rasterized first if missing), and ``train_forecaster`` runs once per model variant with the
same seed and step budget. Every variant and every baseline is scored on the same
holdout with the same masked metrics. Writes two sections of ``bench/RESULTS.md``:

* ``accuracy``: per city, the RMSE / MAE / MAPE table per group of hours ahead (day-ahead:
  1, 2-3, 4-6, 7-12, 13-24 h) of the default model, its ablations (``base``: the linear base
  alone; ``base+head``: base and the per-cell head, no recurrent or attention path) and every
  baseline; the two targets of the ConvLSTM issue (the full model >= 5 % below base + head and
  >= 5 % below GBM, over the whole day ahead and over the first 3 hours), and the 80 %
  interval's coverage on the holdout;
* ``variants``: per city, ConvLSTM vs ConvGRU, parallel vs recurrent (direct, autoregressive)
  decoders, with and without attention: mean RMSE, steps, time per step.

Runs use the city's step budget (``[forecast] train_steps``; ``--steps`` overrides it), so the
figures do not depend on the machine's load; the wall clock is only a safety net.

    python bench/bench_model_accuracy.py --variants default          # both cities, nightly budgets
    python bench/bench_model_accuracy.py --steps 1200                # a longer step budget per run
    python bench/bench_model_accuracy.py --cities los_angeles --variants default,convgru
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from results import load_average, machine, replace_block, today  # noqa: E402

#: Model variants: overrides of ``models/convlstm_attention.toml``'s [model] section.
VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "convgru": {"cell": "convgru"},
    "direct": {"decoder": "direct"},
    "autoregressive": {"decoder": "autoregressive"},
    "plain": {"attention": False},
}
AS_OF = {"berlin": "2024-12-31", "los_angeles": "2012-03-07"}


def load_grid(city_name: str):
    """The nightly window of ``AS_OF[city]`` as a GridTensor (ingesting/rasterizing into the lake if needed)."""
    from traffic import lake, pipeline
    from traffic.config import load_city

    city = load_city(city_name)
    win = pipeline.training_window(city, AS_OF[city_name])
    have = set(lake.list_dates("raster", city=city.name))
    days = {str(d.date()) for d in pd.date_range(win["start"], win["end"], freq="D")}
    if not days <= have:
        pipeline.ingest(city, win["start"], win["end"])
        pipeline.rasterize(city, win["start"], win["end"])
    return city, pipeline._load_window(city, AS_OF[city_name])[1]


def run(city_name: str, variant: str, steps: int | None, seed: int) -> dict:
    from traffic.forecast.metrics import skill
    from traffic.forecast.train import train_forecaster

    city, grid = load_grid(city_name)
    fc = city.forecast
    t0 = time.perf_counter()
    res = train_forecaster(
        grid,
        context_steps=fc.context_steps,
        horizon_steps=fc.horizon_steps,
        holdout_days=fc.holdout_days,
        train_days=fc.train_days,
        budget_s=fc.train_budget_s,
        seed=seed,
        max_steps=steps if steps is not None else fc.train_steps,
        epochs=fc.train_epochs if steps is None else None,  # --steps: that many steps, else the city's budget
        model_overrides=dict(VARIANTS[variant]),
    )
    best_name, best = res.best_baseline()
    steps = int(res.extra.get("steps", 0))
    return {
        "city": city_name,
        "variant": variant,
        "grid": list(grid.shape),
        "holdout": {"start": res.holdout.start, "end": res.holdout.end, "digest": res.holdout.digest[:12]},
        "metrics": {
            **{k: v.as_dict() for k, v in res.metrics.items()},
            **{f"ablation.{k}": v.as_dict() for k, v in res.ablation.items()},
        },
        "best_baseline": best_name,
        "skill": skill(res.metrics["model"].rmse_mean, best.rmse_mean),
        "steps": steps,
        "train_s": res.train_seconds,
        "s_per_step": res.train_seconds / max(steps, 1),
        "total_s": time.perf_counter() - t0,
        "stopped": res.stopped_reason,
        "n_parameters": res.params.get("n_parameters"),
        "base": res.extra.get("base"),
        "modality_weights": res.extra.get("modality_weights"),
        "budget_s": fc.train_budget_s,
        "max_steps": steps if steps is not None else fc.train_steps,
        "best_step": res.extra.get("best_step"),
        "device": res.device,
        "bin_seconds": city.bin_seconds,
    }


def _f(v: float, pct: bool = False) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:.1f}%" if pct else f"{v:.2f}"


def accuracy_table(r: dict) -> str:
    """Per horizon group (hours ahead) RMSE / MAE / MAPE of the model and every baseline, and the interval coverage."""
    from traffic.forecast.horizons import horizon_groups
    from traffic.forecast.metrics import group_table
    from traffic.forecast.result import HorizonMetrics

    m = r["metrics"]
    names = ["model", *[k for k in m if k.startswith("ablation.")], *[k for k in m if k != "model" and "." not in k]]
    groups = horizon_groups(r["bin_seconds"], len(m["model"]["rmse"]))
    scored = {k: HorizonMetrics(**{f: m[k][f] for f in ("mae", "rmse", "n", "mape", "n_mape")}) for k in names}
    lines = []
    for metric in ("rmse", "mae", "mape"):
        lines.append(f"\n{metric.upper()}{' (%)' if metric == 'mape' else ''} per group of hours ahead:\n")
        lines.append("| hours ahead | " + " | ".join(names) + " |")
        lines.append("|---|" + "---:|" * len(names))
        *rows, mean = group_table(scored, metric, r["bin_seconds"])
        for row in rows:
            lines.append(f"| {row.label} | " + " | ".join(_f(row.values[k]) for k in names) + " |")
        lines.append("| **all (mean)** | " + " | ".join(f"**{_f(mean.values[k])}**" for k in names) + " |")
    cov = np.asarray(m["model"].get("coverage") or [], dtype=float)
    if len(cov):
        n = np.asarray(m["model"]["n"], dtype=float)
        lines.append("\nEmpirical coverage of the 80 % interval on the holdout (target 75–85 %):\n")
        lines.append("| hours ahead | " + " | ".join(g.label for g in groups) + " | all |")
        lines.append("|---|" + "---:|" * (len(groups) + 1))
        parts = [np.average(cov[g.steps], weights=np.maximum(n[g.steps], 1e-9)) for g in groups]
        lines.append(
            "| coverage | "
            + " | ".join(f"{100 * v:.1f}%" for v in parts)
            + f" | {100 * np.average(cov, weights=np.maximum(n, 1e-9)):.1f}% |"
        )
    return "\n".join(lines)


def _group_rmse(r: dict, name: str, steps: slice | np.ndarray | None = None) -> float:
    """Mean over horizons (all, or ``steps``) of ``name``'s per-horizon RMSE."""
    v = np.asarray(r["metrics"][name]["rmse"], dtype=float)
    return float(np.nanmean(v if steps is None else v[steps]))


def targets_table(r: dict) -> str:
    """The ConvLSTM issue's two targets: model >= 5 % below base + head and below GBM (all hours; first 3 h)."""
    n_first = max(1, int(round(3 * 3600 / r["bin_seconds"])))
    rows = [
        "| over | model | base+head | gbm | vs base+head | vs gbm | targets (<= -5 % each) |",
        "|---|" + "---:|" * 6,
    ]
    for label, steps in (("day ahead (mean)", None), ("first 3 h", slice(0, n_first))):
        mod, bh, gbm = (_group_rmse(r, k, steps) for k in ("model", "ablation.base_head", "gbm"))
        d_bh, d_g = 100 * (mod / bh - 1), 100 * (mod / gbm - 1)
        ok = "met" if d_bh <= -5 and d_g <= -5 else "**missed**"
        rows.append(f"| {label} | {mod:.2f} | {bh:.2f} | {gbm:.2f} | {d_bh:+.1f}% | {d_g:+.1f}% | {ok} |")
    return "\n".join(rows)


def write(results: list[dict], args: argparse.Namespace) -> None:
    cmd = "python bench/bench_model_accuracy.py" + (f" --steps {args.steps}" if args.steps else "")
    head = (
        f"- Machine: {machine()}; load average at the end {load_average()}\n"
        f"- Date: {today()}; command: `{cmd}`; seed {args.seed}\n"
        "- Every row is scored on the same holdout (the city's last `holdout_days`), masked, original units. "
        "MAPE counts only targets with |y| >= the rule's threshold (see `traffic/forecast/metrics.py`).\n"
    )
    acc = ["## Forecast accuracy on the shipped cities (default model vs baselines)\n", head]
    for r in (r for r in results if r["variant"] == "default"):
        target = "met" if r["skill"] >= 0.10 else f"**missed** by {100 * (0.10 - r['skill']):.1f} points"
        acc.append(
            f"\n### {r['city']}: grid {r['grid']}, holdout {r['holdout']['start']} .. {r['holdout']['end']} "
            f"(digest {r['holdout']['digest']}), {r['steps']} of {r['max_steps']} steps on {r['device']} "
            f"(best at step {r['best_step']}, stopped: {r['stopped']}, {r['train_s']:.0f} s)\n"
        )
        acc.append(
            f"Mean RMSE {r['metrics']['model']['rmse_mean']:.2f} vs best baseline `{r['best_baseline']}` "
            f"{r['metrics'][r['best_baseline']]['rmse_mean']:.2f}: **{100 * r['skill']:+.1f}%** "
            f"(target >= 10 % lower: {target}). Linear base chosen: `{r['base']}`.\n"
        )
        acc.append("\nTargets of the ConvLSTM issue (mean masked RMSE):\n")
        acc.append(targets_table(r))
        acc.append(accuracy_table(r))
    replace_block("accuracy", "\n".join(acc))
    if len({r["variant"] for r in results}) < 2:  # a default-only run leaves the variants section as it was
        return
    var = ["## Model variants (same seed, step budget and holdout)\n", head]
    var.append("| city | variant | mean RMSE | skill vs best baseline | steps | s/step | parameters |")
    var.append("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        var.append(
            f"| {r['city']} | {r['variant']} | {r['metrics']['model']['rmse_mean']:.2f} | {100 * r['skill']:+.1f}% "
            f"| {r['steps']} | {r['s_per_step']:.2f} | {r['n_parameters']} |"
        )
    replace_block("variants", "\n".join(var))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cities", default="berlin,los_angeles")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per run (default: the city's train_steps)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write all results as JSON here")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = ap.parse_args()
    results = []
    for city in args.cities.split(","):
        for variant in args.variants.split(","):
            if variant not in VARIANTS:
                raise SystemExit(f"unknown variant {variant!r}; allowed: {sorted(VARIANTS)}")
            r = run(city, variant, args.steps, args.seed)
            print(
                f"{city:12s} {variant:15s} rmse {r['metrics']['model']['rmse_mean']:.3f} "
                f"best {r['best_baseline']} {r['metrics'][r['best_baseline']]['rmse_mean']:.3f} "
                f"skill {100 * r['skill']:+.1f}% steps {r['steps']} ({r['total_s']:.0f} s)",
                flush=True,
            )
            results.append(r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.no_write:
        write(results, args)


if __name__ == "__main__":
    main()
