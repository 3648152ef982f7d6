"""Issue #19 item 8: the automatic t_boost with the default msl2 metric cannot fire (threshold 1.2 is
LPIPS-calibrated); asyrp_train fails at config validation, before loading anything, and says why."""
import jax
import numpy as np
import pytest

import configs.asyrp_train as train_cfg
from jaxhspace.data import synthfaces
from jaxhspace.editing.asyrp_train import MSL2_X_CURVE_BOUND
from jaxhspace.tasks.asyrp_train_job import check_t_select_config
from jaxhspace.losses.perceptual import multiscale_l2
from jaxhspace.tasks import get_task


def test_auto_t_boost_with_msl2_fails_before_loading(tmp_path):
    c = train_cfg.get_config()
    c.t_boost, c.model_path, c.clip_path = -1, "/nonexistent/unet", "/nonexistent/clip"
    assert c.t_select_metric == "msl2" and c.lpips_addnoise_th == 1.2
    with pytest.raises(ValueError, match="automatic t_boost .* cannot fire with t_select_metric='msl2'"):
        get_task("asyrp_train")(c, str(tmp_path))
    ok = c.copy_and_resolve_references()  # a reachable threshold, or a fixed t_boost, passes
    ok.lpips_addnoise_th = 0.3
    check_t_select_config(ok)
    ok.t_boost, ok.lpips_addnoise_th = 200, 1.2
    check_t_select_config(ok)


def test_msl2_of_noise_is_below_the_bound():
    """The bound is real: msl2(x_T ≈ N(0, I), x0) on SynthFaces stays below MSL2_X_CURVE_BOUND."""
    x0 = synthfaces.generate(0, 8, size=32)[0]
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(0), x0.shape))
    d = np.asarray(multiscale_l2(noise, x0))
    assert d.max() < MSL2_X_CURVE_BOUND and d.mean() > 0.3, d
