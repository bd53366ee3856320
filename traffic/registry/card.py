"""The model card: the Markdown page of a training run, built from its figures (no MLflow).

:func:`render_model_card` fills the ``string.Template`` of :data:`MODEL_CARD_TEMPLATE` with the
run's metric tables per horizon group, coverage, ablation, training facts and parameters;
:func:`with_decision` and :func:`decision_markdown` write the promotion decision into the card's
decision block. :mod:`traffic.registry.mlflow_registry` logs the card with the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from traffic.config import PROJECT_ROOT, CityConfig
from traffic.forecast.intervals import INTERVAL_METHOD
from traffic.forecast.metrics import group_table
from traffic.forecast.metrics import skill as skill_of
from traffic.forecast.result import MAPE_MIN_TARGET, HorizonMetrics, TrainResult
from traffic.provenance import code_version as current_code_version
from traffic.registry.names import model_name
from traffic.registry.promotion import Decision, pct_change

#: Default model card template (``string.Template`` placeholders).
MODEL_CARD_TEMPLATE = PROJECT_ROOT / "models" / "model_card.md"


def fmt(v: float) -> str:
    """A metric value as the card and the registry tags show it: 4 decimals, ``"n/a"`` when not finite."""
    return f"{v:.4f}" if math.isfinite(v) else "n/a"


def lead_labels(city: CityConfig, n: int) -> list[str]:
    """Lead time of each of ``n`` horizons of the city's bins: ``["+15min", ..., "+1h", ...]``."""
    import pandas as pd

    step = pd.Timedelta(city.time_bin)
    return [_duration(step * (h + 1)) for h in range(n)]


def _duration(td: Any) -> str:
    secs = int(td.total_seconds())
    if secs % 3600 == 0:
        return f"+{secs // 3600}h"
    return f"+{secs // 60}min"


def _groups(city: CityConfig, n_h: int) -> list[Any]:
    """Horizon groups of the card and the grouped metrics (:func:`traffic.forecast.horizons.horizon_groups`)."""
    from traffic.forecast.horizons import horizon_groups

    return horizon_groups(city.bin_seconds, n_h)


def pooled_mean(vals: np.ndarray, counts: np.ndarray) -> float:
    """Observation-weighted mean of per-horizon values (RMSE: root of the pooled mean square)."""
    ok = np.isfinite(vals) & (counts > 0)
    return float(np.average(vals[ok], weights=counts[ok])) if ok.any() else math.nan


def _metric_table(metric: str, result: TrainResult, champion_metrics: HorizonMetrics | None, city: CityConfig) -> str:
    """Table of one metric (``rmse``, ``mae`` or ``mape``) per horizon group for the model, the baselines and the champion.

    A group's value is the mean of its horizons' values; the last row is the mean over all
    horizons, the figure the promotion rule compares. The count column is the model's number
    of scored targets in the group: every observed target for RMSE/MAE, those passing the
    zero-denominator rule (``n_mape``) for MAPE.
    """
    columns: dict[str, HorizonMetrics] = {"model": result.metrics["model"], **result.baselines}
    if champion_metrics is not None:
        columns["current champion"] = champion_metrics
    count_label = "counted values" if metric == "mape" else "observed values"
    header = f"| hours ahead | steps | {count_label} | " + " | ".join(columns) + " |"
    rule = "|---|---|---:|" + "---:|" * len(columns)
    lines = [header, rule]

    def row(label: str, steps: str, n: str, vals: np.ndarray) -> str:
        finite = vals[np.isfinite(vals)]
        best = finite.min() if finite.size else None
        cells = [f"**{fmt(v)}**" if best is not None and v == best else fmt(v) for v in vals]
        return f"| {label} | {steps} | {n} | " + " | ".join(cells) + " |"

    # the model's counts; the last row holds each column's <metric>_mean, as the promotion rule
    for g in group_table(columns, metric, city.bin_seconds):
        first, last = g.steps
        label, steps = (
            ("all (mean)", f"1–{last}")
            if g.label == "all"
            else (g.label, f"{first}" if first == last else f"{first}–{last}")
        )
        lines.append(row(label, steps, f"{g.n:,}", np.array(list(g.values.values()), dtype=float)))
    return "\n".join(lines)


def _coverage_table(result: TrainResult, city: CityConfig) -> str:
    """Empirical coverage of the 80 % interval on the holdout, per horizon group, of every kind that can serve.

    Columns: the full model, its deployable ablations and every baseline that was scored with its bounds
    (the bounds a serving baseline is published with, :mod:`traffic.forecast.fallback`).
    """
    cols = {"model": result.metrics["model"]}
    cols.update({k: v for k, v in (getattr(result, "ablation", None) or {}).items() if v.coverage})
    cols.update({k: v for k, v in result.baselines.items() if v.coverage})
    cols = {k: v for k, v in cols.items() if v.coverage}
    if not cols:
        return "No interval model was fitted for this run."
    first = next(iter(cols.values()))
    n = np.asarray(first.n[: len(first.coverage)], dtype=float)
    lines = ["| hours ahead | observed values | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for g in _groups(city, len(first.coverage)):
        cells = []
        for m in cols.values():
            cov = np.asarray(m.coverage, dtype=float)
            cells.append(f"{pooled_mean(cov[g.steps], np.asarray(m.n, dtype=float)[g.steps]):.1%}")
        lines.append(f"| {g.label} | {int(n[g.steps].sum()):,} | " + " | ".join(cells) + " |")
    lines.append(f"| all | {int(n.sum()):,} | " + " | ".join(f"{m.coverage_mean:.1%}" for m in cols.values()) + " |")
    return "\n".join(lines)


#: ``result.params`` keys that name the model variant, in the order shown on the card.
VARIANT_KEYS = ("cell", "decoder", "attention", "peephole")


def _variant(params: Mapping[str, Any]) -> str:
    shown = [f"{k} `{params[k]}`" for k in VARIANT_KEYS if k in params]
    return ", ".join(shown) if shown else "(not recorded)"


def _modality_table(weights: Any) -> str:
    """Table of the fusion gate per modality (``TrainResult.extra["modality_weights"]``)."""
    if not isinstance(weights, Mapping) or not weights:
        return "(not recorded for this model)"
    lines = ["| modality | gate |", "|---|---:|"]
    for name, gate in weights.items():
        try:
            lines.append(f"| {name} | {fmt(float(gate))} |")
        except (TypeError, ValueError):
            lines.append(f"| {name} | `{gate}` |")
    return "\n".join(lines)


def _maps(channels: tuple[str, ...]) -> str:
    """Markdown images of the maps :func:`traffic.registry.log_training` logs under ``plots/`` next to the card."""
    from traffic.registry.plots import ERROR_MAP, forecast_map_name

    lines = [f"![forecast vs observed: {c}](plots/{forecast_map_name(c)})" for c in channels]
    lines.append(f"![mean absolute error per cell](plots/{ERROR_MAP})")
    return "\n\n".join(lines)


def _bullets(d: Mapping[str, Any], indent: str = "  ") -> str:
    if not d:
        return f"{indent}- (none given)"
    return "\n".join(f"{indent}- {k}: {v}" for k, v in d.items())


def _params_table(params: Mapping[str, Any]) -> str:
    if not params:
        return "(none)"
    lines = ["| parameter | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in sorted(params.items())]
    return "\n".join(lines)


#: Names of the ablation rows on the card, in order (``TrainResult.ablation`` keys, then the full model).
ABLATION_ROWS = (("base", "base (linear)"), ("base_head", "base + head"))
#: Markers around the promotion decision on the card: :func:`traffic.registry.promote` rewrites what lies between.
DECISION_START, DECISION_END = "<!-- promotion-decision -->", "<!-- /promotion-decision -->"
#: The card's decision before :func:`traffic.registry.promote` has run.
DECISION_PENDING = "Not decided yet: the version was registered as `challenger`; the nightly run decides next."


def _decision_block(text: str) -> str:
    return f"{DECISION_START}\n{text}\n{DECISION_END}"


def with_decision(card: str, text: str) -> str:
    """The card with its promotion-decision block replaced by ``text`` (idempotent).

    Parameters
    ----------
    card : str
        A card rendered by :func:`render_model_card` (it holds the block once).
    text : str
        Markdown of the decision.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If the card has no decision block (a card made from another template).
    """
    i, j = card.find(DECISION_START), card.find(DECISION_END)
    if i < 0 or j < i:
        raise ValueError(f"the model card has no {DECISION_START} ... {DECISION_END} block to write the decision in")
    return card[:i] + _decision_block(text) + card[j + len(DECISION_END) :]


def _ablation_table(metric: str, result: TrainResult, city: CityConfig) -> str:
    """The model with parts switched off, per horizon group: base, base + head, full, and GBM.

    Every column is scored on the same holdout (``TrainResult.ablation``); the last two columns
    say how much the recurrent/attention path (full vs base + head) and the whole network (full
    vs GBM) change the error, negative = better.
    """
    ablation = getattr(result, "ablation", None) or {}
    if not ablation:
        return "Not recorded for this run (the training code did not score the model with parts switched off)."
    model = result.metrics["model"]
    n_h = len(model.rmse)
    cols: dict[str, HorizonMetrics] = {label: ablation[k] for k, label in ABLATION_ROWS if k in ablation}
    cols.update({f"{k} (ablation)": v for k, v in ablation.items() if k not in dict(ABLATION_ROWS)})
    cols["full model"] = model
    gbm = result.metrics.get("gbm")
    if gbm is not None:
        cols["gbm"] = gbm
    head_key = dict(ABLATION_ROWS)["base_head"]
    header = "| hours ahead | " + " | ".join(cols) + " | full vs base + head | full vs gbm |"
    lines = [header, "|---|" + "---:|" * (len(cols) + 2)]
    rows = [
        ("all (mean)" if g.label == "all" else g.label, g.values)
        for g in group_table(cols, metric, city.bin_seconds, n_h)
    ]
    for label, vals in rows:
        full = vals["full model"]
        vs_head = pct_change(full, vals[head_key]) if head_key in vals else "n/a"
        vs_gbm = pct_change(full, vals["gbm"]) if "gbm" in vals else "n/a"
        lines.append(f"| {label} | " + " | ".join(fmt(v) for v in vals.values()) + f" | {vs_head} | {vs_gbm} |")
    return "\n".join(lines)


def backtest_table(result: TrainResult) -> str:
    """The backtest on the card: the folds, then per candidate its mean RMSE overall, per fold and per horizon
    group, and its paired difference against GBM with the 90 % interval.

    Every figure is a value of :func:`traffic.forecast.backtest.backtest_metrics`, the dict logged as the run's
    ``backtest.*`` metrics, shown with :func:`fmt`: the card and MLflow agree to the last digit.
    """
    from traffic.forecast.backtest import REFERENCE, Comparison, backtest_metrics

    bt = getattr(result, "backtest", None)
    if bt is None:
        return "Not recorded for this run (trained before rolling-origin backtests): decided on one holdout."
    m = backtest_metrics(bt)
    names = [n for n in bt.errors]
    lines = [
        f"{len(bt.folds)} folds over {len(bt.days)} target days; every candidate fitted once before the "
        "holdout and forecasting from every origin in it (rolling origins):",
        "",
    ]
    lines += [f"- {f.label}" + (" — reported apart" if f.holiday else "") for f in bt.folds]
    groups = [tag for tag, _ in bt.groups()[:-1]]
    folds = [f"fold {f.index}{' (hol.)' if f.holiday else ''}" for f in bt.folds]
    head = ["candidate", "mean RMSE", "without holiday folds", *folds, *groups, f"vs {REFERENCE} (90 % interval)"]
    lines += ["", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for n in names:
        vs = "(reference)"
        if n != REFERENCE and f"backtest.{n}.vs_{REFERENCE}.mean" in m:
            key = f"backtest.{n}.vs_{REFERENCE}"
            vs = Comparison(m[f"{key}.mean"], m[f"{key}.lo"], m[f"{key}.hi"], len(bt.days)).text()
        cells = [
            fmt(m[f"backtest.{n}.rmse_mean"]),
            fmt(m[f"backtest.{n}.rmse_mean_regular"]),
            *(fmt(m[f"backtest.{n}.fold{f.index}.rmse_mean"]) for f in bt.folds),
            *(fmt(m[f"backtest.{n}.rmse.{g}"]) for g in groups),
            vs,
        ]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    if bt.channels:
        chans = list(bt.channels)
        lines += [
            "",
            "Per channel (mean over horizons of the RMSE, in the channel's unit), every candidate on the same folds:",
            "",
            "| candidate | " + " | ".join(f"`{ch}`" for ch in chans) + " |",
            "|---|" + "---:|" * len(chans),
        ]
        for n in names:
            cells = [fmt(m.get(f"backtest.{n}.channel.{ch}.rmse_mean", math.nan)) for ch in chans]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += combination_section(result, m)
    lines += [
        "",
        "Logged as `backtest.<candidate>.rmse_mean`, `.rmse.<group>`, `.fold<k>.rmse_mean`, "
        "`.channel.<channel>.rmse_mean` and the paired "
        "differences against every other candidate, `backtest.<candidate>.vs_<other>.mean` / `.lo` / `.hi` "
        "(relative, negative = better; docs/backtests.md says how the intervals are made).",
    ]
    return "\n".join(lines)


def combination_section(result: TrainResult, m: Mapping[str, float]) -> list[str]:
    """Card lines of the per-horizon combination: what each pair adds per horizon group, then the weights.

    Per horizon group, with the 90 % interval over the target days (``backtest.<a>.vs_<b>.<group>.*``):
    the network's marginal contribution (``combination`` against ``combination_without_network``),
    the combination against GBM, and the recurrent path (``model`` against ``base_head``). Then the
    serving weights of each combination (fitted on every fold; each fold was judged with weights
    fitted on the others: :mod:`traffic.forecast.combination`).
    """
    from traffic.forecast.backtest import GROUP_PAIRS, Comparison

    combos = list(getattr(result, "combinations", None) or [])
    bt = result.backtest
    if not combos or bt is None:
        return []
    groups = [tag for tag, _ in bt.groups()[:-1]]
    what = {
        ("combination", "combination_without_network"): "the network's marginal contribution",
        ("combination", "gbm"): "the combination against GBM",
        ("model", "base_head"): "the recurrent path (full model against base + head)",
    }
    lines = [
        "",
        "**Combination** (published forecast = members weighted per horizon group and channel; non-negative "
        "least squares, each fold forecast with weights fitted on the other folds, never on itself):",
        "",
        "| comparison (relative RMSE, 90 % interval) | " + " | ".join(groups) + " | all |",
        "|---|" + "---:|" * (len(groups) + 1),
    ]
    for a, b in GROUP_PAIRS:
        cells = []
        for tag in [*groups, ""]:
            key = f"backtest.{a}.vs_{b}" + (f".{tag}" if tag else "")
            if f"{key}.mean" not in m:
                cells.append("n/a")
                continue
            c = Comparison(m[f"{key}.mean"], m[f"{key}.lo"], m[f"{key}.hi"], len(bt.days))
            cells.append(c.text() + (" ✓" if c.better else ""))
        lines.append(f"| `{a}` vs `{b}`: {what.get((a, b), '')} | " + " | ".join(cells) + " |")
    lines += ["", "✓: significantly better (the whole interval below zero)."]
    steps, ac = result.extra.get("network_steps"), result.extra.get("anomaly_autocorrelation") or []
    if steps is not None:
        shown = ", ".join(f"{v:.2f}" for v in ac[: int(steps) + 2])
        lines += [
            "",
            f"The network was trained on the first {int(steps)} forecast step(s) of {bt.horizon}: where the training "
            f"window's seasonal anomaly stays correlated with the last one (lags 1, 2, …: {shown}; threshold "
            f"`signal_threshold` {result.params.get('signal_threshold', 'n/a')}). "
            + (
                f"It serves those steps only: from step {int(steps) + 1} on, the full model is base + the head as "
                "pre-fitted (a frozen copy), so there it equals the `base_head` ablation."
                if 0 < int(steps) < bt.horizon
                else "It serves every step."
            ),
        ]
    for combo in combos:
        lines += ["", f"Serving weights of `{combo.name}` (every origin: the refresh):", "", combo.weights_table()]
        if combo.nightly_weights is not None:
            lines += [
                "",
                f"Serving weights of `{combo.name}` at the nightly origin (local midnight: the day-ahead forecast):",
                "",
                combo.weights_table(nightly=True),
            ]
    return lines


def yes_no(v: Any) -> str:
    """``"yes"``/``"no"`` for a recorded flag, ``"(not recorded)"`` for None."""
    if v is None:
        return "(not recorded)"
    return "yes" if bool(v) else "no"


def _count(v: Any) -> str:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return f"{int(v):,}"
    return "(not recorded)"


def warm_start_text(warm: Any) -> str:
    """What a warm start copied (``TrainResult.extra["warm_start"]``): ``{"copied": [...], "skipped": [...]}``."""
    if warm is None:
        return "none (trained from freshly initialised weights)"
    if not isinstance(warm, Mapping):
        return f"`{warm}`"
    copied, skipped = list(warm.get("copied") or ()), list(warm.get("skipped") or ())

    def names(xs: list[Any]) -> str:
        shown = ", ".join(f"`{x}`" for x in xs[:12])
        return shown + (f" and {len(xs) - 12} more" if len(xs) > 12 else "")

    text = f"{len(copied)} parameter tensors copied" + (f" ({names(copied)})" if copied else "")
    text += f"; {len(skipped)} skipped (name or shape differs)" + (f": {names(skipped)}" if skipped else "")
    src = warm.get("source")
    return text + (f"; from {src}" if src else "")


def _champion_line(champion_metrics: HorizonMetrics | None, champion_version: str | None) -> str:
    """The summary's sentence on the current champion (scored on the same holdout, or why not)."""
    who = f"v{champion_version}" if champion_version else "current champion"
    if champion_metrics is not None:
        if math.isfinite(champion_metrics.rmse_mean):
            return f"; current champion {who} on the same holdout {fmt(champion_metrics.rmse_mean)}"
        return f"; current champion {who} could not be scored on this holdout (no finite forecast for it)"
    if champion_version:
        return f"; current champion {who} not scored on this holdout"
    return "; no current champion: this version is compared with the baselines only"


def render_model_card(
    city: CityConfig,
    result: TrainResult,
    data_window: Mapping[str, Any],
    champion_metrics: HorizonMetrics | None = None,
    code_version: str | None = None,
    *,
    registered_name: str | None = None,
    version: str | int | None = None,
    run_id: str | None = None,
    template: str | Path | None = None,
    champion_version: str | int | None = None,
    gate_baselines: Sequence[str] | None = None,
    train_steps: int | None = None,
    decision: str | None = None,
) -> str:
    """Render the Markdown model card of a training run.

    Parameters
    ----------
    city : CityConfig
    result : TrainResult
    data_window : mapping
        What data the run used (e.g. ``{"start": ..., "end": ..., "days": ...}``).
    champion_metrics : HorizonMetrics, optional
        The current champion on the same holdout, shown as an extra column.
    code_version : str, optional
        Defaults to :func:`traffic.provenance.code_version`.
    registered_name, version, run_id : optional
        Registry coordinates, when known.
    template : path, optional
        ``string.Template`` file; defaults to :data:`MODEL_CARD_TEMPLATE`.
    champion_version : str or int, optional
        Registry version of the champion ``champion_metrics`` belongs to (None: no champion).
    gate_baselines : sequence of str, optional
        Baselines that gate promotion (``[promotion] gate_baselines``); default every baseline.
    train_steps : int, optional
        The step budget of the run (``[forecast] train_steps``), shown next to the steps done.
    decision : str, optional
        The promotion decision; default :data:`DECISION_PENDING` (:func:`traffic.registry.promote` writes it later).

    Returns
    -------
    str
        Markdown.

    Raises
    ------
    KeyError
        If the template names a placeholder this function does not fill.
    """
    if "model" not in result.metrics or not result.baselines:
        raise ValueError(f"result.metrics needs 'model' and at least one baseline; got {sorted(result.metrics)}")
    model = result.metrics["model"]
    leads = lead_labels(city, len(model.rmse))
    base_name, base = result.best_baseline()
    shape = np.shape(result.example_forecast)
    grid = f"{shape[-2]} x {shape[-1]}" if len(shape) >= 2 else "?"
    champion_line = _champion_line(champion_metrics, None if champion_version is None else str(champion_version))
    gates = list(result.baselines) if gate_baselines is None else [g for g in gate_baselines]
    extra = result.extra or {}
    params = result.params or {}
    epochs, sized = float(params.get("epochs") or 0), params.get("budget_steps")
    if epochs > 0 and isinstance(sized, int) and sized > 0:  # the budget sized by the data (train_epochs)
        budget = (
            f" of a budget of {sized:,}: `[forecast] train_epochs` = {epochs:g} passes over "
            f"{_count(params.get('training_origins'))} training origins"
            + (f", at most `train_steps` = {train_steps:,}" if train_steps else "")
        )
    else:
        budget = f" of a budget of {train_steps:,} (`[forecast] train_steps`)" if train_steps else ""
    skill = skill_of(model.rmse_mean, base.rmse_mean)
    text = Path(template or MODEL_CARD_TEMPLATE).read_text(encoding="utf-8")
    values = {
        "city": city.name,
        "model_name": registered_name or model_name(city),
        "version": "(unregistered)" if version is None else str(version),
        "run_id": run_id or "(not logged)",
        "code_version": code_version or current_code_version(),
        "generated_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "horizon_steps": str(len(model.rmse)),
        "time_bin": city.time_bin,
        "lead_max": leads[-1] if leads else "",
        "n_channels": str(len(result.channels)),
        "channels": ", ".join(f"`{c}`" for c in result.channels),
        "grid_shape": grid,
        "cell_size_m": f"{city.cell_size_m:g}",
        "crs_epsg": str(city.crs_epsg),
        "context_steps": str(result.params.get("context_steps", city.forecast.context_steps)),
        "train_days": str(city.forecast.train_days),
        "train_start": result.train_window[0],
        "train_end": result.train_window[1],
        "data_window": _bullets(data_window),
        "holdout_start": result.holdout.start,
        "holdout_end": result.holdout.end,
        "holdout_n": f"{result.holdout.n_samples:,}",
        "holdout_digest": result.holdout.digest,
        "rmse_table": _metric_table("rmse", result, champion_metrics, city),
        "mae_table": _metric_table("mae", result, champion_metrics, city),
        "mape_table": _metric_table("mape", result, champion_metrics, city),
        "coverage_table": _coverage_table(result, city),
        "interval_method": INTERVAL_METHOD,
        "mape_min": f"{MAPE_MIN_TARGET:g}",
        "model_rmse_mean": fmt(model.rmse_mean),
        "model_mape_mean": fmt(model.mape_mean),
        "best_baseline": base_name,
        "best_baseline_rmse_mean": fmt(base.rmse_mean),
        "skill_vs_baseline": f"{skill:+.1%}" if math.isfinite(skill) else "n/a",
        "champion_line": champion_line,
        "device": result.device,
        "train_seconds": f"{result.train_seconds:.1f} s",
        "stopped_reason": result.stopped_reason,
        "steps": _count(extra.get("steps")) + budget,
        "best_step": _count(extra.get("best_step")),
        "wall_clock_cap": yes_no(extra.get("wall_clock_cap")),
        "warm_start": warm_start_text(extra.get("warm_start")),
        "ablation_rmse_table": _ablation_table("rmse", result, city),
        "ablation_mae_table": _ablation_table("mae", result, city),
        "backtest_table": backtest_table(result),
        "gate_baselines": ", ".join(f"`{g}`" for g in gates) or "(none)",
        "decision": _decision_block(decision or DECISION_PENDING),
        "params_table": _params_table(result.params),
        "model_variant": _variant(result.params),
        "modality_table": _modality_table(result.extra.get("modality_weights")),
        "maps": _maps(tuple(result.channels)),
    }
    return Template(text).substitute(values)


def decision_markdown(decision: Decision, version: str, champion_after: str | None) -> str:
    """Markdown of a decision for the card: the verdict, the reason with its numbers, who serves."""
    verdict = f"**Promoted**: version {version} is `champion`." if decision.promote else "**Not promoted**."
    lines = [verdict, "", decision.reason]
    if decision.table:
        lines += ["", decision.table]
    elif decision.gates:
        lines += ["", "| gating baseline | mean RMSE | challenger vs it |", "|---|---:|---:|"]
        lines += [f"| {k} | {fmt(v)} | {pct_change(decision.challenger_rmse, v)} |" for k, v in decision.gates.items()]
    if decision.champion_rmse is not None:
        lines += ["", f"Champion before the decision, on the same holdout: mean RMSE {fmt(decision.champion_rmse)}."]
    lines += ["", f"Champion after the decision: {f'version {champion_after}' if champion_after else 'none'}."]
    return "\n".join(lines)
