"""Supervised mean-difference directions of the PCA job: which SynthFaces count as positives and negatives."""
import numpy as np
import pytest

from jaxhspace.data import synthfaces
from jaxhspace.tasks.pca import supervised_masks, supervised_specs


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
