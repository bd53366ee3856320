"""Exactly once: a ``train`` task killed -9 after it registered, then retried, registers nothing new.

The real nightly training (``pipeline.train``) on the shipped METR-LA week, one optimiser step,
in a subprocess that is killed with SIGKILL right after its version was registered whole
(before its checkpoint was dropped: what a kill there left behind, a second version of the same
training, was issue 18's finding). The retry runs in this process against the same home.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from mlflow import MlflowClient

from traffic import pipeline
from traffic.config import PROJECT_ROOT, load_city, mlflow_uri
from traffic.registry.health import DECISION_TAG, REGISTRATION_TAG, TRAINING_KEY_TAG, training_key

AS_OF = "2012-03-07"

_KILLED_AFTER_REGISTRATION = textwrap.dedent(
    """
    import os, signal
    from traffic import pipeline

    def die(ckpt):  # train() drops its checkpoint right after log_training registered the version
        assert ckpt.exists(), ckpt
        os.kill(os.getpid(), signal.SIGKILL)

    pipeline._drop_checkpoint = die
    pipeline.train("los_angeles", {as_of!r}, steps=1)
    """
)


def _versions(name: str) -> list:
    client = MlflowClient(tracking_uri=mlflow_uri(), registry_uri=mlflow_uri())
    return sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


def test_the_key_changes_with_every_field():
    base = dict(city="berlin", as_of="2024-12-07", code_version="abc", holdout_digest="d1", train_steps=150)
    key = training_key(**base, config={"lr": 1e-3})
    assert key == training_key(**base, config={"lr": 1e-3})
    for field, other in [
        ("city", "los_angeles"),
        ("as_of", "2024-12-08"),
        ("code_version", "abd"),
        ("holdout_digest", "d2"),
        ("train_steps", 151),
    ]:
        assert training_key(**{**base, field: other}, config={"lr": 1e-3}) != key, field
    assert training_key(**base, config={"lr": 2e-3}) != key


@pytest.mark.slow
def test_a_train_killed_after_registration_and_retried_registers_nothing_new(traffic_home):
    la = load_city("los_angeles")
    pipeline.ingest(la, "2012-03-01", AS_OF)
    pipeline.rasterize(la, "2012-03-01", AS_OF)

    script = _KILLED_AFTER_REGISTRATION.format(as_of=AS_OF)
    proc = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-3000:]
    [v1] = _versions("traffic-los_angeles")
    assert v1.tags[REGISTRATION_TAG] == "complete" and TRAINING_KEY_TAG in v1.tags and v1.tags["as_of"] == AS_OF
    ckpt = traffic_home / "checkpoints" / "los_angeles" / AS_OF
    assert ckpt.exists()  # what the kill left: the checkpoint a retry would resume from

    again = pipeline.train(la, AS_OF, steps=1)  # the task's retry
    assert again["reused"] is True and again["version"] == "1" and again["run_id"] == v1.run_id
    assert again["training_key"] == v1.tags[TRAINING_KEY_TAG] and again["steps"] == 1
    assert [str(v.version) for v in _versions("traffic-los_angeles")] == ["1"]
    assert not ckpt.exists()
    v1 = _versions("traffic-los_angeles")[0]
    assert DECISION_TAG not in v1.tags  # left for its own promotion, not decided "never promoted"

    decided = pipeline.evaluate_and_promote(la, AS_OF, again)
    assert _versions("traffic-los_angeles")[0].tags[DECISION_TAG] == decided["reason"]
    # another step budget is another training: not the same key
    assert training_key("los_angeles", AS_OF, "x", "d", 1) != training_key("los_angeles", AS_OF, "x", "d", 2)
