"""The shipped Asyrp editors (assets/editors) on 8 held-out SynthFaces test faces, scored by the shipped probe
(an independent model: it never saw the editors, the DDPM or CLIP): each moves its factor on >= 7 of 8 faces,
every other factor moves less than half as much, scale -1 moves it the other way, and the effect grows
with the scale (Asyrp's linearity of Δh)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhspace.data import probe, synthfaces
from jaxhspace.editing import asyrp_edit as ae
from jaxhspace.editing.editor_io import load_editor
from jaxhspace.world import ASSETS, DEFAULT_PROBE, load_model

SCALES = (0.0, -1.0, 0.5, 1.0, 1.5)


def _logit(p):
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


# editor folder -> (factor, the probe's score the edit should raise: the log-odds of the target class, which
# keeps moving where the probability saturates, e.g. on faces whose hair is red already)
EDITORS = {
    "red_hair": ("hair_color", lambda s: _logit(s["hair_color"][:, synthfaces.HAIR_COLORS.index("red")])),
    "glasses": ("glasses", lambda s: _logit(s["glasses"])),
}


@pytest.fixture(scope="module")
def world():
    unet, params, schedule, _ = load_model("")
    x0, factors = synthfaces.generate(12345, 8, size=32)
    x_lat = ae.invert(unet, params, schedule, jnp.asarray(x0), 40)
    return unet, params, schedule, x_lat, probe.load_probe(DEFAULT_PROBE)


@pytest.fixture(scope="module", params=sorted(EDITORS))
def edited(request, world):
    unet, params, schedule, x_lat, pparams = world
    editor, eparams, meta = load_editor(os.path.join(ASSETS, "editors", request.param))
    out = ae.asyrp_edit(unet, params, schedule, x_lat=x_lat, delta=ae.EditorDelta(eparams, editor), scales=SCALES,
                        n_test=40, t_edit=int(meta["t_edit"]), t_boost=int(meta["t_boost"]),
                        n_train_step=meta.get("n_train_step"), key=jax.random.PRNGKey(0))
    out = np.clip(np.asarray(out), -1.0, 1.0)                                      # [K, 8, 32, 32, 3]
    scores = [probe.score(pparams, o, probs=True) for o in out]
    return request.param, scores


def test_editor_moves_its_factor_with_little_leakage(edited):
    name, scores = edited
    factor, read = EDITORS[name]
    rec, plus = scores[0], scores[SCALES.index(1.0)]
    gain = read(plus) - read(rec)                                                  # [8]
    assert (gain > 0).sum() >= 7, gain
    effect = probe.edit_effect(rec, plus, factor)
    assert effect["max_leakage"] < 0.5 * effect["target_magnitude"], effect


def test_negative_scale_moves_the_other_way(edited):
    name, scores = edited
    _, read = EDITORS[name]
    minus = scores[SCALES.index(-1.0)]
    assert np.mean(read(minus) - read(scores[0])) < 0.0


def test_effect_grows_with_scale(edited):
    name, scores = edited
    _, read = EDITORS[name]
    gains = [float(np.mean(read(scores[SCALES.index(s)]) - read(scores[0]))) for s in (0.5, 1.0, 1.5)]
    assert gains[0] < gains[1] < gains[2], gains
