"""Attribute probe: shipped weights read factors back, Fréchet distance, edit effects, validity, save/load."""
import os

import jax
import numpy as np
import pytest

from jaxhspace.data import probe as pr
from jaxhspace.data import synthfaces as sf


@pytest.fixture(scope="module")
def shipped():
    if not os.path.isfile(os.path.join(pr.DEFAULT_DIR, pr.WEIGHTS)):
        pytest.fail(f"shipped probe missing at {pr.DEFAULT_DIR}")
    return pr.load_probe()


@pytest.fixture(scope="module")
def heldout():
    return sf.generate(987654, 512)  # a seed never used in training


def test_shipped_probe_reads_factors_back(shipped, heldout):
    model, params = shipped
    images, factors = heldout
    metrics = pr.evaluate(model, params, images, factors)
    assert set(metrics) == set(sf.FACTORS)
    for name, value in metrics.items():
        assert value >= 0.95, (name, value, metrics)


def test_score_shapes_and_64px(shipped, heldout):
    model, params = shipped
    images, factors = heldout
    s = pr.score(params, images[:8], model=model)
    sp = pr.score(params, images[:8], model=model, probs=True)
    assert s["smile"].shape == (8,) and s["hair_color"].dtype == np.int32 and s["glasses"].dtype == np.float32
    assert sp["hair_color"].shape == (8, len(sf.HAIR_COLORS))
    np.testing.assert_allclose(sp["hair_color"].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(sp["hair_color"].argmax(-1), s["hair_color"])
    s64 = pr.score(params, sf.render({k: v[:64] for k, v in factors.items()}, 64), model=model)
    assert np.mean(s64["hair_color"] == factors["hair_color"][:64]) >= 0.9
    assert pr.probe_features(params, images[:5], model=model).shape == (5, model.dense)
    np.testing.assert_array_equal(pr.score(shipped, images[:8])["hair_color"], s["hair_color"])  # (model, params)
    with pytest.raises(ValueError):
        pr.score(params, images[:2, :16, :16], model=model)


def test_edit_effect_smile_only(shipped):
    model, params = shipped
    _, f = sf.generate(4242, 256)
    before = dict(f, smile=np.full(256, -0.8, np.float32))
    after = dict(f, smile=np.full(256, 0.8, np.float32))
    sb = pr.score(params, sf.render(before), model=model, probs=True)
    sa = pr.score(params, sf.render(after), model=model, probs=True)
    eff = pr.edit_effect(sb, sa, "smile")
    assert eff["target_change"] > 0.6  # true change: 1.6 / range 2 = 0.8
    assert eff["max_leakage"] < 0.05, eff["leakage"]
    assert eff["target_magnitude"] > 10 * eff["max_leakage"]
    assert set(eff["leakage"]) == set(sf.FACTORS) - {"smile"}
    with pytest.raises(ValueError):
        pr.edit_effect(sb, sa, "nose")


def test_is_valid_face(shipped, heldout):
    model, params = shipped
    images, _ = heldout
    valid = pr.is_valid_face(pr.score(params, images, model=model, probs=True))
    assert valid.dtype == bool and valid.shape == (512,)
    assert valid.mean() >= 0.95
    fake = {k: np.asarray(v) for k, v in sf.sample_factors(0, 4).items()}
    fake["smile"] = np.array([0.0, 3.0, -3.0, 0.5], np.float32)  # two far out of range
    fake["hair_color"] = np.eye(5, dtype=np.float32)[[0, 1, 2, 3]]
    fake["hair_color"][3] = 0.2  # unsure of the class
    fake["background"] = np.eye(4, dtype=np.float32)[[0, 1, 2, 3]]
    fake["glasses"] = np.array([0.01, 0.99, 0.9, 0.99], np.float32)
    np.testing.assert_array_equal(pr.is_valid_face(fake), [True, False, False, False])


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)

    def exact(n, mean, std):
        """Samples whose unbiased sample mean / covariance are exactly mean, diag(std²)."""
        z = rng.standard_normal((n, len(mean)))
        z -= z.mean(0)
        z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
        return z * std + mean

    m1, s1 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 2.0, 0.5])
    m2, s2 = np.array([1.0, 0.0, 0.0]), np.array([3.0, 1.0, 0.5])
    a, b = exact(500, m1, s1), exact(700, m2, s2)
    expected = np.sum((m1 - m2) ** 2) + np.sum((s1 - s2) ** 2)  # diagonal Gaussians
    assert pr.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    one_d = pr.frechet_distance(a[:, :1], b[:, :1])
    assert one_d == pytest.approx((m1[0] - m2[0]) ** 2 + (s1[0] - s2[0]) ** 2, rel=1e-6)
    assert pr.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        pr.frechet_distance(a, b[:, :2])


def test_probe_features_frechet_data_vs_data(shipped, heldout):
    model, params = shipped
    images, _ = heldout
    fa = pr.probe_features(params, images[:256], model=model)
    fb = pr.probe_features(params, sf.generate(13, 256)[0], model=model)
    noise = pr.probe_features(params, np.random.default_rng(0).uniform(-1, 1, (256, 32, 32, 3)), model=model)
    assert pr.frechet_distance(fa, fb) < 0.25 * pr.frechet_distance(fa, noise)


def test_save_load_roundtrip_and_train_step(tmp_path):
    model, params, metrics = pr.train_probe(seed=1, steps=2, batch_size=8, eval_n=16, progress=False)
    assert set(metrics["clean"]) == set(sf.FACTORS)
    out = pr.save_probe(str(tmp_path / "p"), params, {"model": pr._config_of(model)})
    assert sorted(os.listdir(out)) == [pr.CONFIG, pr.WEIGHTS]
    model2, params2 = pr.load_probe(out)
    assert model2 == model
    for x, y in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params2)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    images = sf.generate(0, 4)[0]
    np.testing.assert_allclose(pr.probe_features(params, images, model), pr.probe_features(params2, images, model2),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(FileNotFoundError):
        pr.load_probe(str(tmp_path / "missing"))


def test_in_distribution_accepts_data_rejects_non_faces(shipped):
    """Ground truth: held-out SynthFaces are faces of the data distribution; pure noise, flat colour fields and
    faces whose colour channels are permuted (the colour cast of a poor sampler) are not."""
    model, params = shipped
    gauss = pr.fit_feature_gaussian(params, model)
    assert gauss.quantile == 0.99 and np.isfinite(gauss.threshold)
    data, _ = sf.generate(4242, 512)
    assert pr.in_distribution(params, data, gauss, model).mean() >= 0.97
    rng = np.random.default_rng(0)
    noise = np.clip(rng.standard_normal((64, 32, 32, 3)) * 0.5, -1, 1).astype(np.float32)
    flat = np.broadcast_to(rng.uniform(-1, 1, (64, 1, 1, 3)), (64, 32, 32, 3)).astype(np.float32)
    cast = data[:256, :, :, [2, 0, 1]]
    assert not pr.in_distribution(params, noise, gauss, model).any()
    assert not pr.in_distribution(params, flat, gauss, model).any()
    assert pr.in_distribution(params, cast, gauss, model).mean() < 0.2
    d = pr.feature_distance(params, data[:8], gauss, model)
    assert d.shape == (8,) and np.all(d >= 0)
