"""Public holidays of a city, as a flag per time bin.

Traffic on a public holiday looks like a Sunday's, not like the weekday it falls on: on
Christmas Day 2024 Berlin's Telraam counts were 44 % of an ordinary Wednesday's. The
forecaster and the seasonal baselines therefore read a holiday bin's seasonal prior from the
Sunday at the same time of day (``traffic.forecast.baselines.time_positions``), and the
forecaster gets the flag as a calendar input (``traffic.forecast.features``).

Holidays come from the ``holidays`` package (its tables ship inside the package: nothing is
downloaded) for the country and subdivision a city names in its ``[calendar]`` section, plus
any ``extra_holidays`` dates the city adds (local dates, ``YYYY-MM-DD``). A bin is a holiday
bin when its start, in the city's local time, falls on such a date. An array that is not a
configured city names its holidays by a short spec instead (:func:`holiday_calendar`), and a
grid carries the dates of its years and the next (:func:`grid_holidays`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class HolidayCalendar:
    """Which local dates are public holidays in a city.

    Attributes
    ----------
    country : str or None
        ISO 3166-1 alpha-2 code known to the ``holidays`` package (``"DE"``, ``"US"``); None = no
        package holidays, only ``extra``.
    subdiv : str or None
        Subdivision code (``"BE"`` = Berlin, ``"CA"`` = California), or None for national holidays.
    extra : tuple of str
        Further local dates ``YYYY-MM-DD`` to treat as holidays.
    """

    country: str | None = None
    subdiv: str | None = None
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for d in self.extra:
            try:
                dt.date.fromisoformat(d)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"extra holiday {d!r} is not a date YYYY-MM-DD") from exc
        if self.country is not None:
            import holidays

            known = holidays.list_supported_countries()
            if self.country not in known:
                raise ValueError(f"holiday country {self.country!r} is not known; use an ISO code such as 'DE', 'US'")
            if self.subdiv is not None and self.subdiv not in known[self.country]:
                raise ValueError(
                    f"holiday subdivision {self.subdiv!r} is not known for {self.country!r}; "
                    f"allowed: {sorted(known[self.country])}"
                )

    def dates(self, years: Iterable[int]) -> set[dt.date]:
        """Holiday dates of the given years."""
        out = {dt.date.fromisoformat(d) for d in self.extra}
        years = sorted(set(years))
        if self.country is not None and years:
            import holidays

            out |= set(holidays.country_holidays(self.country, subdiv=self.subdiv, years=years))
        return out


def holiday_flags(times: pd.DatetimeIndex, timezone: str, dates: Iterable[str | dt.date]) -> np.ndarray:
    """``(T,)`` bool: True where a bin starts, in local time ``timezone``, on one of ``dates``.

    Parameters
    ----------
    times : pd.DatetimeIndex
        Bin starts, tz-aware or naive UTC.
    timezone : str
        IANA zone of the city.
    dates : iterable of str or datetime.date
        Holiday dates (local), e.g. from :meth:`HolidayCalendar.dates`.
    """
    days = np.array(sorted({np.datetime64(str(d), "D") for d in dates}), dtype="datetime64[D]")
    if len(times) == 0 or len(days) == 0:
        return np.zeros(len(times), dtype=bool)
    t = times.tz_localize("UTC") if times.tz is None else times
    local = t.tz_convert(timezone).tz_localize(None).to_numpy().astype("datetime64[D]")
    return np.isin(local, days)


def city_holidays(calendar: HolidayCalendar, start_year: int, end_year: int) -> tuple[str, ...]:
    """ISO dates of ``calendar``'s holidays from ``start_year`` to ``end_year`` (inclusive), sorted."""
    return tuple(sorted(d.isoformat() for d in calendar.dates(range(start_year, end_year + 1))))


def holiday_calendar(spec: str | Iterable[str] | None) -> HolidayCalendar:
    """The holiday calendar a short spec names: a country code, ISO dates, or None (no holidays).

    Parameters
    ----------
    spec : str, iterable of str or None
        ``"US"`` or ``"US-NY"`` (a country of the ``holidays`` package, optionally with a
        subdivision), or local dates ``YYYY-MM-DD`` as an iterable or one comma-separated string.

    Raises
    ------
    ValueError
        If ``spec`` mixes codes and dates or names more than one code, or the code is unknown.
    """
    if spec is None:
        return HolidayCalendar()
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    dates, codes = [], []
    for s in filter(None, items):
        try:
            dates.append(dt.date.fromisoformat(s).isoformat())
        except ValueError:
            codes.append(s)
    if not codes:
        return HolidayCalendar(extra=tuple(sorted(set(dates))))
    if len(codes) > 1 or dates:
        raise ValueError(
            f"holidays {spec!r}: give one country code ('US', 'US-NY') or ISO dates 'YYYY-MM-DD', not {codes}"
        )
    country, _, subdiv = codes[0].partition("-")
    return HolidayCalendar(country=country.upper(), subdiv=subdiv.upper() or None)


def grid_holidays(calendar: HolidayCalendar, times: pd.DatetimeIndex) -> tuple[str, ...]:
    """ISO dates of ``calendar``'s holidays a grid over ``times`` carries, sorted.

    The years of ``times`` and the next one: forecasts reach past the grid's last bin. With no
    times, only the calendar's ``extra`` dates.
    """
    if len(times) == 0:
        return tuple(sorted(set(calendar.extra)))
    return city_holidays(calendar, times[0].year, times[-1].year + 1)
