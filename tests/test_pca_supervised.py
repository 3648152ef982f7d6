"""Supervised mean-difference directions of the PCA job: which SynthFaces count as positives and negatives."""
import numpy as np
import pytest

from jaxhspace.data import synthfaces
from jaxhspace.tasks.pca_job import supervised_masks, supervised_specs


def test_masks_follow_the_factor_kinds():
    _, f = synthfaces.generate(0, 400)
    pos, neg = supervised_masks("smile", f)
    np.testing.assert_array_equal(pos, f["smile"] > 0.5)
    np.testing.assert_array_equal(neg, f["smile"] < -0.5)
    pos, neg = supervised_masks("glasses", f)
    np.testing.assert_array_equal(pos, f["glasses"] == 1)
    np.testing.assert_array_equal(neg, f["glasses"] == 0)
    pos, neg = supervised_masks("hair_color=red", f)
    red = synthfaces.HAIR_COLORS.index("red")
    np.testing.assert_array_equal(pos, f["hair_color"] == red)
    np.testing.assert_array_equal(neg, f["hair_color"] != red)
    assert 40 < pos.sum() < 120  # one class of five


def test_specs_and_errors():
    assert supervised_specs("") == [] and supervised_specs("smile") == ["smile"]
    assert supervised_specs(("smile", "glasses")) == ["smile", "glasses"]
    _, f = synthfaces.generate(0, 8)
    with pytest.raises(ValueError, match="needs a class"):
        supervised_masks("hair_color", f)
    with pytest.raises(ValueError, match="unknown factor"):
        supervised_masks("beard", f)


def test_per_face_target_change_is_the_mean_of_target_effect():
    """The per-face terms average to target_effect's target_change (continuous, binary and a categorical class),
    computed here from the probe's raw scores."""
    from jaxhspace.data import probe
    from jaxhspace.editing.scoring import load_default_probe, per_face_target_change, target_effect

    p = load_default_probe(32)
    before, f = synthfaces.generate(1, 6)
    f2 = {k: v.copy() for k, v in f.items()}
    f2["smile"] = -f["smile"]
    f2["glasses"] = 1 - f["glasses"]
    f2["hair_color"][:] = synthfaces.HAIR_COLORS.index("red")
    after = synthfaces.render(f2)
    sb, sa = probe.score(p, before, probs=True), probe.score(p, after, probs=True)
    smile = per_face_target_change(p, before, after, "smile")
    np.testing.assert_allclose(smile, (sa["smile"] - sb["smile"]) / 2.0, rtol=1e-5, atol=1e-6)
    for t in ("smile", "glasses", "hair_color=red"):
        v = per_face_target_change(p, before, after, t)
        assert v.shape == (6,)
        assert float(np.mean(v)) == pytest.approx(target_effect(p, before, after, t)["target_change"], abs=1e-5)
    red = per_face_target_change(p, before, after, "hair_color=red")
    assert np.all(red[f["hair_color"] != synthfaces.HAIR_COLORS.index("red")] > 0.5)
