"""Horizon groups: how per-horizon figures are summarised for people (card, bench, maps).

A day-ahead forecast has 24 (1 h bins) to 96 (15 min bins) horizons; nobody reads 96
columns. Figures are grouped by *hours ahead* of the forecast origin: hour 1, hours 2–3,
4–6, 7–12 and 13–24 (and 25+ for longer horizons). The groups depend only on the bin
length, so the same group means the same lead time in every city.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Upper edges (hours ahead, inclusive) of the groups; horizons past the last edge form one more group.
GROUP_EDGES_H = (1, 3, 6, 12, 24)


def horizon_groups(bin_seconds: int, horizon_steps: int) -> list[tuple[str, slice]]:
    """Groups of horizons by hours ahead.

    Parameters
    ----------
    bin_seconds : int
        Bin length in seconds (> 0).
    horizon_steps : int
        Number of horizons (>= 1); horizon ``h`` (1-based) ends ``h * bin_seconds`` after the origin.

    Returns
    -------
    list of (str, slice)
        ``(label, slice of 0-based horizon indices)``, in order, covering every horizon once;
        labels such as ``"h1"``, ``"h2-3"``, ``"h13-24"``. Empty groups are left out.

    Examples
    --------
    >>> [(lab, (s.start, s.stop)) for lab, s in horizon_groups(3600, 24)]
    [('h1', (0, 1)), ('h2-3', (1, 3)), ('h4-6', (3, 6)), ('h7-12', (6, 12)), ('h13-24', (12, 24))]
    """
    if bin_seconds <= 0 or horizon_steps < 1:
        raise ValueError(f"bin_seconds ({bin_seconds}) must be > 0 and horizon_steps ({horizon_steps}) >= 1")
    # hours ahead at the end of each horizon, rounded up: 15-min horizons 1..4 are "hour 1"
    hours = np.ceil(np.arange(1, horizon_steps + 1) * bin_seconds / 3600.0 - 1e-9).astype(int)
    out: list[tuple[str, slice]] = []
    lo_h = 1
    for edge in (*GROUP_EDGES_H, None):
        sel = np.flatnonzero((hours >= lo_h) & ((hours <= edge) if edge is not None else True))
        if len(sel):
            label = f"h{lo_h}" if edge == lo_h else (f"h{lo_h}-{edge}" if edge is not None else f"h{lo_h}+")
            out.append((label, slice(int(sel[0]), int(sel[-1]) + 1)))
        if edge is None:
            break
        lo_h = edge + 1
    return out


def group_means(values: Sequence[float], groups: list[tuple[str, slice]]) -> dict[str, float]:
    """Mean of per-horizon ``values`` over each group (NaN horizons are skipped; all-NaN gives NaN)."""
    v = np.asarray(values, dtype=np.float64)
    out = {}
    for label, s in groups:
        part = v[s]
        part = part[np.isfinite(part)]
        out[label] = float(part.mean()) if len(part) else float("nan")
    return out
