"""Issue #19 item 7: Asyrp's CLIP loss at batch > 1, official behaviour as an option: −log of the batch-mean
directional loss, the LAST image's x0 as every source (Asyrp_official losses/clip_loss.py:170-180 ``.mean()``,
diffusion_latent.py:343), against a torch re-implementation of those lines."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxhspace.losses.clip_directional import asyrp_clip_loss, asyrp_clip_loss_official_batch


def _torch_official(f_edit, f_src_last, text_dir):
    e = torch.from_numpy(f_edit).double()
    s = torch.from_numpy(f_src_last).double()[None]
    e = e / e.norm(dim=-1, keepdim=True)
    s = s / s.norm(dim=-1, keepdim=True)
    d = e - s                                                   # clip_loss.py: target_encoding - src_encoding
    d = d / (d.norm(dim=-1, keepdim=True) + 1e-7)
    t = torch.from_numpy(text_dir).double()[None].expand_as(d)
    l_dir = (1.0 - torch.nn.CosineSimilarity(dim=-1, eps=1e-8)(d, t)).mean()
    return float(-torch.log((2 - l_dir) / 2))                   # diffusion_latent.py:343


def test_official_batch_clip_loss_matches_torch():
    rng = np.random.default_rng(0)
    fe, fs = rng.normal(size=(4, 16)).astype(np.float32), rng.normal(size=(4, 16)).astype(np.float32)
    td = rng.normal(size=16).astype(np.float32)
    td /= np.linalg.norm(td)
    ours = float(asyrp_clip_loss_official_batch(jnp.asarray(fe), jnp.asarray(fs), jnp.asarray(td)))
    assert ours == pytest.approx(_torch_official(fe, fs[-1], td), rel=1e-5)
    per_example = float(jnp.mean(asyrp_clip_loss(jnp.asarray(fe), jnp.asarray(fs), jnp.asarray(td))))
    assert abs(per_example - ours) > 1e-3  # the two options differ at batch > 1 ...
    one = float(asyrp_clip_loss(jnp.asarray(fe[:1]), jnp.asarray(fs[:1]), jnp.asarray(td))[0])
    assert float(asyrp_clip_loss_official_batch(jnp.asarray(fe[:1]), jnp.asarray(fs[:1]), jnp.asarray(td))) == \
        pytest.approx(one, rel=1e-6)  # ... and agree at batch 1


def test_loss_fn_option_is_validated():
    from jaxhspace.editing.asyrp_train import make_loss_fn

    with pytest.raises(ValueError, match="clip_batch"):
        make_loss_fn(None, None, None, 1.0, 1.0, clip_batch="mean")
