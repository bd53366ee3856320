"""The one channel vocabulary (traffic.channels) and the model's channel names."""

from __future__ import annotations

import pytest

from traffic import channels, config, model
from traffic.grid import rasterize


def test_every_user_reads_the_one_vocabulary():
    assert config.CHANNELS is channels.CHANNELS
    assert rasterize.MEAN_CHANNELS is channels.MEAN_CHANNELS and rasterize.COUNT_CHANNELS is channels.COUNT_CHANNELS
    assert rasterize.FEED_KINDS is channels.FEED_KINDS == ("sensor", "camera")
    assert model.EXTRA_MODALITIES is channels.RESERVED_FEEDS


def test_every_channel_of_a_feed_kind_aggregates_one_way():
    delivered = {c for kind in channels.CHANNELS.values() for c in kind}
    assert delivered <= set(channels.VALUE_CHANNELS)
    assert not set(channels.MEAN_CHANNELS) & set(channels.COUNT_CHANNELS)
    assert channels.SPEED_CHANNEL in channels.MEAN_CHANNELS


def test_model_channel_names():
    assert channels.model_channels(["inflow", "taxi.outflow"]) == ("grid.inflow", "taxi.outflow")
    assert channels.feed_of(channels.channel_name("cam", "car")) == "cam"
    with pytest.raises(ValueError, match=r"f.npz: channel name '.x' must be '<name>' or '<feed>.<name>'"):
        channels.model_channels([".x"], "f.npz")
    with pytest.raises(
        ValueError, match=r"feed names \['prior'\] are reserved for the model's \['calendar', 'prior'\]"
    ):
        channels.model_channels(["prior.x"])
    with pytest.raises(ValueError, match=r"channel names \['grid.a'\] repeat"):
        channels.model_channels(["a", "grid.a"])
