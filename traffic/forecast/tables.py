"""Text tables of metrics: the evaluation report of ``traffic grid evaluate`` as per-horizon and per-group tables.

The numbers come from the report (:func:`traffic.forecast.evaluation.evaluate_array`), whose
per-group figures are :func:`traffic.forecast.metrics.group_table`, the one computation behind
the metric tables of the model card too (``traffic.registry``, Markdown); this module only
lays them out as plain text.
"""

from __future__ import annotations

from typing import Any

from traffic.forecast.evaluation import is_metric


def _fmt(v: Any, width: int) -> str:
    if v is None:
        return "-".rjust(width)
    if isinstance(v, float):
        return f"{v:{width}.{3 if abs(v) < 100 else 1}f}"
    return str(v).rjust(width)


def _pct_cell(v: float | None, width: int) -> str:
    return ("-" if v is None else f"{v:+.1f} %").rjust(width)


def comparison_lines(comp: dict[str, Any], width: int) -> list[str]:
    """The ablation and GBM tables of :func:`format_report` from :func:`~traffic.forecast.evaluation.comparison_by_group` (one per metric, rows = horizon groups)."""
    if not comp.get("groups"):
        return []
    keys, labels = comp["keys"], comp["columns"]
    lines: list[str] = []
    for metric in ("rmse", "mae"):
        lines += [
            "",
            f"{metric.upper()} per group of hours ahead: the network with parts switched off (base = linear base "
            "alone, base+head = no recurrent path), the full model and gradient boosting",
            f"{'hours':>8} {'steps':>7} "
            + " ".join(lab.rjust(width) for lab in labels)
            + f" {'full vs base+head':>18} {'full vs gbm':>12}",
        ]
        for g in comp["groups"]:
            steps = f"{g['steps'][0]}-{g['steps'][1]}"
            vs_head = (g.get("full_vs_base_head_pct") or {}).get(metric)
            vs_gbm = (g.get("full_vs_gbm_pct") or {}).get(metric)
            lines.append(
                f"{g['label']:>8} {steps:>7} "
                + " ".join(_fmt(g[metric].get(k), width) for k in keys)
                + f" {_pct_cell(vs_head, 18)} {_pct_cell(vs_gbm, 12)}"
            )
    return lines


def combination_lines(comb: dict[str, Any], width: int) -> list[str]:
    """The backtest per horizon group of every candidate, the combination's comparisons and its weights."""
    if not comb or not comb.get("backtest"):
        return []
    bt = comb["backtest"]
    names = list(bt)
    tags = list(next(iter(bt.values()))["rmse"])
    w = max(width, *(len(n) for n in names))
    lines = [
        "",
        f"Backtest RMSE per horizon group ({comb['folds']} folds over {comb['days']} target days; the combination "
        "forecasts each fold with weights fitted on the other folds)",
        f"{'group':>8} " + " ".join(n.rjust(w) for n in names),
    ]
    for t in [*tags, "all"]:
        row = [bt[n]["rmse"].get(t) if t != "all" else bt[n]["rmse_mean"] for n in names]
        lines.append(f"{t:>8} " + " ".join(_fmt(v, w) for v in row))
    for pair, groups in (comb.get("vs") or {}).items():
        cells = []
        for t, c in groups.items():
            ok = c["lo"] is not None and c["hi"] is not None
            iv = f" [{100 * c['lo']:+.1f}, {100 * c['hi']:+.1f}]" if ok else ""
            cells.append(f"{t} {100 * c['mean']:+.1f} %{iv}" if c["mean"] is not None else f"{t} -")
        lines.append(f"{pair.replace('_vs_', ' vs ')}: " + "; ".join(cells))
    for name, spec in (comb.get("weights") or {}).items():
        members = spec["members"]
        lines += [
            "",
            f"weights of {name} (rows: group / channel / last value fresh or stale)",
            f"{'':>22} " + " ".join(m[:10].rjust(10) for m in members),
        ]
        for gi, g in enumerate(spec["groups"]):
            for ci, ch in enumerate(spec["channels"]):
                for ri, regime in ((1, "fresh"), (0, "stale")):
                    label = f"{g['tag']} {ch[-7:]} {regime}"
                    lines.append(f"{label:>22} " + " ".join(f"{v:10.2f}" for v in spec["weights"][gi][ci][ri]))
    return lines


def format_report(report: dict[str, Any]) -> str:
    """Per-horizon tables (one per metric: model and every baseline) and a summary, as text."""
    d, sp, tr = report["data"], report["split"], report["training"]
    metrics = report["metrics"]
    names = ["model", *[k for k in metrics if k != "model"]]
    width = max(10, *(len(n) for n in names))
    lines = [
        f"grid {'x'.join(str(v) for v in d['shape'])} (T, C, H, W), channels {', '.join(d['channels'])}, "
        f"{d['bin_minutes']:g}-min bins {d['start']} .. {d['end']}, observed {100 * d['observed_share']:.1f} %",
        f"samples: train {sp['train_samples']}, validation {sp['val_samples']}, holdout {sp['holdout_samples']} "
        f"(targets {sp['holdout_start']} .. {sp['holdout_end']})",
        f"training: {tr['steps']} steps in {tr['train_seconds']:.1f} s on {tr['device']} "
        f"(stopped: {tr['stopped_reason']}), total {tr['total_seconds']:.1f} s",
    ]
    n_h = len(report["horizon_minutes"])
    keys = [k for k, v in metrics["model"].items() if is_metric(k, v) and len(v) == n_h]
    for key in keys:
        unit = "%" if key == "mape" else "original units"
        n_key = f"n_{key}" if len(metrics["model"].get(f"n_{key}") or ()) == n_h else "n"
        lines += ["", f"{key.upper()} per horizon (masked, {unit}; n = targets scored)"]
        lines.append(f"{'horizon':>8} {'min':>6} {'n':>9} " + " ".join(n.rjust(width) for n in names))
        for j, minutes in enumerate(report["horizon_minutes"]):
            row = [metrics[n][key][j] if len(metrics[n].get(key) or ()) == n_h else None for n in names]
            lines.append(
                f"{j + 1:>8} {minutes:>6} {metrics['model'][n_key][j]:>9} " + " ".join(_fmt(v, width) for v in row)
            )
        lines.append(
            f"{'mean':>8} {'':>6} {'':>9} " + " ".join(_fmt(metrics[n].get(f"{key}_mean"), width) for n in names)
        )
    lines += comparison_lines(report.get("comparison") or {}, width)
    lines += combination_lines(report.get("combination") or {}, width)
    best = report["best_baseline"]
    skill = report["skill_pct"]
    lines += [
        "",
        f"best baseline (mean RMSE): {best}; model skill vs it: "
        + ", ".join(
            f"{k.upper()} {v['mean']:+.1f} %" if v["mean"] is not None else f"{k.upper()} -" for k, v in skill.items()
        ),
        "modality weights: " + ", ".join(f"{k} {v:.2f}" for k, v in report["modality_weights"].items()),
    ]
    if report.get("saved_model"):
        lines.append(f"model saved to {report['saved_model']}")
    return "\n".join(lines)
