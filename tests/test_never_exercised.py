"""Functions no test called before (issue #19, "never exercised"): get_metric("probe") and
parallel.maybe_initialize_distributed, each against an independent computation / a recorded call."""
import jax
import ml_collections
import numpy as np

from jaxhspace import parallel
from jaxhspace.data import probe, synthfaces
from jaxhspace.losses.perceptual import get_metric


def test_probe_metric_is_the_normalised_feature_distance():
    m = get_metric("probe")
    assert m.name == "probe" and not m.lpips_calibrated
    a = synthfaces.generate(1, 3, size=32)[0]
    b = synthfaces.generate(2, 3, size=32)[0]
    model, params = probe.load_probe(probe.DEFAULT_DIR)
    fa = np.asarray(probe.probe_features(params, a, model), np.float64)
    fb = np.asarray(probe.probe_features(params, b, model), np.float64)
    ref = np.sum((fa / np.linalg.norm(fa, axis=-1, keepdims=True) - fb / np.linalg.norm(fb, axis=-1,
                                                                                          keepdims=True)) ** 2, -1)
    d = np.asarray(m.fn(a, b))
    np.testing.assert_allclose(d, ref, rtol=1e-4, atol=1e-6)
    assert np.all(d > 1e-4) and np.all(d <= 4.0)
    np.testing.assert_allclose(np.asarray(m.fn(a, a)), 0.0, atol=1e-6)


def test_maybe_initialize_distributed(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    assert parallel.maybe_initialize_distributed(ml_collections.ConfigDict({"distributed": False})) is False
    assert calls == []
    c = ml_collections.ConfigDict({"distributed": True, "coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                                   "process_id": None})
    assert parallel.maybe_initialize_distributed(c) is True
    assert calls == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 4}]
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    assert parallel.maybe_initialize_distributed(c) is True and len(calls) == 1  # idempotent
