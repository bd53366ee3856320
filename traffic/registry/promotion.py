"""The promotion rule: whether a challenger becomes champion, decided on plain metrics (no MLflow).

:func:`decide_promotion` compares a challenger's mean RMSE over horizons with every gating
baseline and the current champion, all scored on the same holdout, and returns a
:class:`Decision` whose ``reason`` states the numbers. :func:`traffic.registry.promote` applies
a decision to the registry; :func:`traffic.registry.card.decision_markdown` writes it on the card.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from traffic.forecast.result import HorizonMetrics

#: Relative tolerance under which two mean RMSEs count as a tie (a tie never promotes).
TIE_RTOL = 1e-9


@dataclass(frozen=True)
class Decision:
    """Outcome of :func:`decide_promotion`.

    Attributes
    ----------
    promote : bool
    reason : str
        One sentence with the numbers it was decided on.
    challenger_rmse, baseline_rmse : float
        Mean RMSE over horizons.
    baseline : str
        Name of the strongest gating baseline (the lowest mean RMSE of those compared with).
    champion_rmse : float or None
        Mean RMSE of the current champion on the same holdout; None when there was no
        champion to compare with (then :func:`traffic.registry.promote` refuses to promote over an
        existing champion).
    gates : dict
        ``{name: mean RMSE}`` of every baseline the challenger had to beat, in the order given.
    table : str
        Markdown of the backtest comparisons a backtest decision rests on (empty for the point rule).
    """

    promote: bool
    reason: str
    challenger_rmse: float = math.nan
    baseline: str = ""
    baseline_rmse: float = math.nan
    champion_rmse: float | None = None
    gates: Mapping[str, float] = field(default_factory=dict)
    table: str = ""


def _beats(a: float, b: float) -> bool:
    """Strictly lower, a tie within :data:`TIE_RTOL` is not lower."""
    return a < b and not math.isclose(a, b, rel_tol=TIE_RTOL, abs_tol=0.0)


def pct_change(a: float, b: float) -> str:
    """``a`` relative to ``b`` as a signed percentage (``"-12.50%"``: ``a`` is 12.5 % lower); ``"n/a"`` without a finite, non-zero ``b``."""
    from traffic.forecast.metrics import relative_change

    v = 100.0 * relative_change(a, b)
    return f"{v:+.2f}%" if math.isfinite(v) else "n/a"


def decide_promotion(
    challenger: HorizonMetrics,
    champion: HorizonMetrics | None,
    baselines: tuple[str, HorizonMetrics] | Mapping[str, HorizonMetrics],
) -> Decision:
    """Decide whether a challenger becomes champion.

    Promote only when the challenger's mean RMSE over horizons is strictly lower than that
    of **every** gating baseline and, when there is a champion, strictly lower than the
    champion's scored on the same holdout. Ties (within :data:`TIE_RTOL`) and non-finite
    challenger or baseline scores do not promote. A champion whose score is not finite (it
    forecasts NaN) counts as beaten.

    Parameters
    ----------
    challenger : HorizonMetrics
        The new model on the holdout.
    champion : HorizonMetrics or None
        The current champion on the *same* holdout, None if there is no champion yet.
    baselines : mapping or (str, HorizonMetrics)
        The gating baselines on the same holdout, ``{name: metrics}`` (the pipeline passes
        every baseline of ``[promotion] gate_baselines``, GBM included by default), or one
        ``(name, metrics)`` pair such as :meth:`TrainResult.best_baseline`. Beating every
        one of them is beating the strongest, whose name and score the decision records.

    Returns
    -------
    Decision

    Raises
    ------
    ValueError
        If no baseline is given, or the metrics do not cover the same number of horizons
        (not the same holdout).
    """
    gates = dict([baselines]) if isinstance(baselines, tuple) else dict(baselines)
    if not gates:
        raise ValueError("decide_promotion needs at least one gating baseline; got none")
    lengths = {"challenger": len(challenger.rmse), **{f"baseline {k!r}": len(v.rmse) for k, v in gates.items()}}
    if champion is not None:
        lengths["champion"] = len(champion.rmse)
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise ValueError(f"metrics must cover the same (non-zero) number of horizons; got {lengths}")
    scores = {k: v.rmse_mean for k, v in gates.items()}
    unscored = [k for k, v in scores.items() if not math.isfinite(v)]
    # the strongest gate: a non-finite one first (nothing can be shown to beat it), else the lowest
    base_name = unscored[0] if unscored else min(scores, key=lambda k: scores[k])
    c, b = challenger.rmse_mean, scores[base_name]
    ch = None if champion is None else champion.rmse_mean

    def verdict(promote: bool, reason: str) -> Decision:
        return Decision(
            promote, reason, challenger_rmse=c, baseline=base_name, baseline_rmse=b, champion_rmse=ch, gates=scores
        )

    vs_base = f"best baseline {base_name!r} {b:.4f} ({pct_change(c, b)})"
    if len(scores) > 1:
        others = ", ".join(f"{k} {v:.4f} ({pct_change(c, v)})" for k, v in scores.items() if k != base_name)
        vs_base += f" (gating baselines also: {others})"
    head = f"challenger mean RMSE {c:.4f}"
    if not math.isfinite(c):
        return verdict(False, f"not promoted: {head} is not finite; {vs_base}")
    if not math.isfinite(b):
        return verdict(False, f"not promoted: {head} but {vs_base} is not finite, cannot compare")
    if not _beats(c, b):
        return verdict(False, f"not promoted: {head} does not beat {vs_base}")
    if ch is None:
        return verdict(True, f"promoted: {head} beats {vs_base}; no champion yet")
    if not math.isfinite(ch):
        return verdict(True, f"promoted: {head} beats {vs_base}; champion score {ch} is not finite")
    vs_champ = f"champion {ch:.4f} on the same holdout ({pct_change(c, ch)})"
    if not _beats(c, ch):
        return verdict(False, f"not promoted: {head} beats {vs_base} but not {vs_champ}")
    return verdict(True, f"promoted: {head} beats {vs_base} and {vs_champ}")


#: The deployable variants of a network version, by candidate name (``traffic.model.PATHS``), and its
#: per-horizon combinations (``traffic.forecast.combination``: served from the version's networks and
#: weights, refitting the baselines they hold): each must beat every gating baseline to serve.
NETWORK_VARIANTS = ("model", "base_head", "base", "combination", "combination_without_network")
#: Name under which the current champion version is scored on the challenger's backtest.
CHAMPION = "champion"


@dataclass(frozen=True)
class ServingDecision:
    """Outcome of :func:`decide_serving`: what forecasts for the city after tonight's backtest.

    Attributes
    ----------
    serves : str
        The candidate that serves: a variant of tonight's version (``model``, ``base_head``,
        ``base``), ``champion`` (the current champion version keeps serving) or a baseline name.
    kind : {"model", "baseline"}
        A registered network version serves (tonight's, or the champion), or a labelled baseline.
    promote : bool
        Tonight's version becomes ``champion`` (serving its variant :attr:`serves`).
    reason : str
        The decision with the folds, the differences and their intervals.
    best : str
        The candidate with the lowest backtest mean RMSE.
    scores : dict
        ``{candidate: backtest mean RMSE}``.
    against : dict
        ``{candidate: Comparison}`` of :attr:`best` against every other scored candidate.
    """

    serves: str
    kind: str
    promote: bool
    reason: str
    best: str
    scores: Mapping[str, float]
    against: Mapping[str, Any]


def decide_serving(
    scores: Mapping[str, float],
    comparisons: Mapping[tuple[str, str], Any],
    *,
    gates: tuple[str, ...],
    incumbent: str | None,
    folds_text: str = "",
) -> ServingDecision:
    """Decide on the backtest what serves: the best candidate, when it is significantly better.

    The candidates are tonight's network variants (``model``, ``base_head``, ``base``) and the
    gating baselines, all scored on the same folds. The best one (lowest mean RMSE) takes over
    only when its paired improvement (:class:`traffic.forecast.backtest.Comparison`, 90 % interval
    entirely below zero) is significant

    * against the incumbent (what serves now: ``champion`` scored on the same folds, or the
      serving baseline's name), unless the incumbent is not comparable (not scored);
    * and, for a network variant, against every gating baseline as well.

    Otherwise the incumbent keeps serving ("no significant difference" is a decision); with no
    incumbent (a city's first night) the best gating baseline serves as the stop-gap.

    Parameters
    ----------
    scores : mapping
        ``{candidate: backtest mean RMSE}``; NaN or absent = not scored.
    comparisons : mapping
        ``{(a, b): Comparison}`` of ``a`` against ``b`` (negative = ``a`` better).
    gates : tuple of str
        The gating baselines.
    incumbent : str or None
        ``"champion"``, a baseline name, or None.
    folds_text : str
        What the backtest rests on, for the reason.

    Returns
    -------
    ServingDecision

    Raises
    ------
    ValueError
        If no candidate has a finite score.
    """
    finite = {k: v for k, v in scores.items() if math.isfinite(v)}
    pool = [c for c in (*NETWORK_VARIANTS, *gates) if c in finite]
    if not pool:
        raise ValueError(f"no candidate has a finite backtest score: {dict(scores)}")
    comparable = incumbent is not None and incumbent in finite

    def must_beat(cand: str) -> list[str]:
        """What ``cand`` must be significantly better than: every gate (a network variant) and the incumbent."""
        req = [g for g in gates if g != cand and g in finite] if cand in NETWORK_VARIANTS else []
        if comparable and incumbent is not None and incumbent != cand and incumbent not in req:
            req.append(incumbent)
        return req

    def fails(cand: str) -> list[str]:
        return [r for r in must_beat(cand) if (cand, r) not in comparisons or not comparisons[(cand, r)].better]

    ranked = sorted(pool, key=lambda k: finite[k])
    best = ranked[0]
    against = {o: comparisons[(best, o)] for o in finite if o != best and (best, o) in comparisons}
    required = must_beat(best)
    failed = fails(best)
    # the best by score is not significantly better than what it must beat: the next ones in score order
    # (up to the incumbent's own place) may be; the first that is serves (its evidence, not the best's, decides)
    runner_up = None
    if failed and best != incumbent:
        for cand in ranked[1:]:
            if cand == incumbent or (comparable and incumbent is not None and finite[cand] >= finite[incumbent]):
                break  # what serves now scores better than the rest
            if must_beat(cand) and not fails(cand):
                runner_up = cand
                break

    def cmp_text(o: str) -> str:
        c = against.get(o)
        if c is None:
            return f"{o} (not compared)"
        tag = "significant" if c.better else "not significant"
        return f"{o} {c.text()} ({tag})"

    head = f"{folds_text + ': ' if folds_text else ''}best candidate {best!r} mean RMSE {finite[best]:.4f}"
    vs = "; ".join(cmp_text(o) for o in required) if required else "nothing it must beat"
    if incumbent is not None and not comparable:
        vs += f"; the incumbent {incumbent!r} is not comparable (not scored on these folds)"
    if best == incumbent:
        serves = best
        reason = f"kept: {head}: the incumbent {incumbent!r} is still the best"
    elif not failed and not required:
        serves = best
        reason = (
            f"{'promoted' if best in NETWORK_VARIANTS else 'switched'}: {head}: nothing serves yet, the best serves"
        )
    elif not failed:
        serves = best
        reason = f"{'promoted' if best in NETWORK_VARIANTS else 'switched'}: {head} is better than {vs}"
    elif runner_up is not None:
        serves = runner_up
        ru_vs = "; ".join(f"{o} {comparisons[(runner_up, o)].text()} (significant)" for o in must_beat(runner_up))
        reason = (
            f"{'promoted' if runner_up in NETWORK_VARIANTS else 'switched'}: {head} is not significantly better than "
            f"{', '.join(failed)} (compared: {vs}); the next best {runner_up!r} (mean RMSE {finite[runner_up]:.4f}) "
            f"is better than {ru_vs}"
        )
    elif comparable:
        serves = incumbent  # type: ignore[assignment]
        reason = (
            f"kept {incumbent!r}: {head} is not significantly better than {', '.join(failed)} "
            f"(compared: {vs}); no significant difference keeps what serves"
        )
    else:
        serves = min((g for g in gates if g in finite), key=lambda g: finite[g], default=best)
        reason = (
            f"not promoted: {head} is not significantly better than {', '.join(failed)} (compared: {vs}); "
            f"nothing serves yet: the best gating baseline {serves!r} (mean RMSE {finite.get(serves, math.nan):.4f}) "
            "serves as the stop-gap"
        )
    if serves == CHAMPION:
        kind = "model"
    else:
        kind = "model" if serves in NETWORK_VARIANTS else "baseline"
    promote = serves in NETWORK_VARIANTS
    return ServingDecision(serves, kind, promote, reason, best, dict(scores), against)
