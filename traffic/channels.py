"""The channel vocabulary: the channels each feed kind delivers, how each aggregates, and model channel names.

A feed delivers observation columns (*channels*) named here. Rasterizing aggregates a
:data:`MEAN_CHANNELS` channel as a (weighted) mean of the observations in a bin and a
:data:`COUNT_CHANNELS` channel as a volume (``traffic.grid.rasterize``). The model sees each
channel under ``<feed>.<channel>`` (:func:`channel_name`): the feed prefix groups its inputs
into modalities, and the feed names in :data:`RESERVED_FEEDS` belong to the model's own
modalities (``traffic.model``).
"""

from __future__ import annotations

from collections.abc import Sequence

#: Channels aggregated as (weighted) means of the observations.
MEAN_CHANNELS = ("speed_kmh", "occupancy")
#: Channels that are volumes (counts in the interval): per-source sums over the bin, then a mean over sources.
COUNT_CHANNELS = ("count", "car", "heavy", "bike", "pedestrian")
#: Every channel a feed may deliver.
VALUE_CHANNELS = COUNT_CHANNELS + MEAN_CHANNELS
#: The speed channel (congestion is read from speeds as a drop below free flow).
SPEED_CHANNEL = "speed_kmh"
#: Highest plausible speed, km/h: above it (or at/below zero) an observed speed is a fault, and no
#: forecast is published above it.
SPEED_MAX_KMH = 200.0
#: Values a channel can take, ``(low, high)`` in its units: counts are never negative, a speed lies in
#: ``[0, SPEED_MAX_KMH]`` (a forecast may reach 0, standstill; an observed 0 is a detector fault), an
#: occupancy is a share. Validation (``traffic.ingest.validate``) and the forecast's clip
#: (``traffic.forecast.plausible``) read them here.
VALUE_RANGES: dict[str, tuple[float, float]] = {
    **{c: (0.0, float("inf")) for c in COUNT_CHANNELS},
    "speed_kmh": (0.0, SPEED_MAX_KMH),
    "occupancy": (0.0, 1.0),
}
#: Channels a feed may deliver, per feed kind (see docs in ``traffic.landing.contract``).
CHANNELS = {
    "sensor": ("count", "speed_kmh", "occupancy"),
    "camera": ("car", "heavy", "bike", "pedestrian", "speed_kmh"),
}
#: Kinds of feed.
FEED_KINDS = tuple(CHANNELS)
#: Feed given to channel names without one (the model groups channels by ``<feed>.``).
DEFAULT_FEED = "grid"
#: Feed names the model keeps for its own modalities: calendar features, and the seasonal prior
#: with each observation's anomaly against it.
RESERVED_FEEDS = ("calendar", "prior")


def channel_name(feed: str, channel: str) -> str:
    """The model's name of ``channel`` of ``feed``: ``<feed>.<channel>``."""
    return f"{feed}.{channel}"


def feed_of(name: str) -> str:
    """The feed of a model channel name ``<feed>.<channel>``."""
    return name.split(".", 1)[0]


def base_channel(name: str) -> str:
    """The channel of a model channel name ``<feed>.<channel>`` (the name itself without a feed)."""
    return name.rsplit(".", 1)[-1]


def value_range(name: str) -> tuple[float, float]:
    """``(low, high)`` a channel's values can take (:data:`VALUE_RANGES`); ``(-inf, inf)`` for a channel not in it."""
    return VALUE_RANGES.get(base_channel(name), (float("-inf"), float("inf")))


def model_channels(names: Sequence[str], source: str = "channels") -> tuple[str, ...]:
    """Channel names as the model needs them: ``<feed>.<name>``, a bare name gets feed :data:`DEFAULT_FEED`.

    Parameters
    ----------
    names : sequence of str
        Channel names, each ``<name>`` or ``<feed>.<name>``.
    source : str
        Where the names came from, named in every message.

    Raises
    ------
    ValueError
        On an empty or repeated name, or a feed in :data:`RESERVED_FEEDS`.
    """
    out = []
    for name in names:
        name = str(name).strip()
        if not name or name.startswith(".") or name.endswith("."):
            raise ValueError(f"{source}: channel name {name!r} must be '<name>' or '<feed>.<name>', both non-empty")
        out.append(name if "." in name else channel_name(DEFAULT_FEED, name))
    reserved = sorted({feed_of(n) for n in out} & set(RESERVED_FEEDS))
    if reserved:
        raise ValueError(f"{source}: feed names {reserved} are reserved for the model's {list(RESERVED_FEEDS)}")
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup:
        raise ValueError(f"{source}: channel names {dup} repeat; each channel needs its own name")
    return tuple(out)
