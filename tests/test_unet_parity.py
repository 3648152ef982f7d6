"""Numerical parity of jaxhspace's UNet2DModel with diffusers' PyTorch UNet2DModel (float32), and the
encode/decode/delta_h contract of the h-space API."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhspace.checkpoints import load_unet
from jaxhspace.models.embeddings import get_timestep_embedding
from unet_fixtures import (CELEBAHQ, TINY_CONFIGS, jax_forward, make_torch_unet, max_abs, random_inputs,
                           torch_forward)

TOL = 1e-4
REGRESSION_TOL = 1e-5  # measured ≈ 1e-6; TOL stays the documented parity contract, this catches a 10x regression


@pytest.fixture(scope="module", params=sorted(TINY_CONFIGS))
def tiny(request, tmp_path_factory):
    """(config dict, torch reference, jax model, jax params) for each tiny config."""
    cfg = TINY_CONFIGS[request.param]
    torch_model = make_torch_unet(cfg, seed=len(request.param))
    folder = str(tmp_path_factory.mktemp(request.param))
    torch_model.save_pretrained(folder)
    model, params = load_unet(folder)
    return cfg, torch_model, model, params


@pytest.mark.parametrize("flip, shift", [(False, 1), (True, 0), (True, 1.5)])
def test_timestep_embedding_matches_diffusers(flip, shift):
    import torch
    from diffusers.models.embeddings import get_timestep_embedding as torch_emb

    t = np.array([0, 1, 17, 500, 999], np.float32)
    for dim in (32, 33):
        ref = torch_emb(torch.from_numpy(t), dim, flip_sin_to_cos=flip, downscale_freq_shift=shift).numpy()
        ours = np.asarray(get_timestep_embedding(jnp.asarray(t), dim, flip, shift))
        assert ours.shape == ref.shape
        assert max_abs(ours, ref) < 1e-4


def test_eps_and_h_match_torch(tiny):
    cfg, torch_model, model, params = tiny
    x, t = random_inputs(cfg, batch=2)
    eps_t, h_t = torch_forward(torch_model, x, t)
    eps_j, h_j = jax_forward(model, params, x, t)
    assert h_j.shape == h_t.shape == (2, *model.hspace_shape(16, 16))
    print(f"\n{cfg['block_out_channels']}: eps err {max_abs(eps_j, eps_t):.2e}, h err {max_abs(h_j, h_t):.2e}")
    assert max_abs(eps_j, eps_t) <= TOL
    assert max_abs(h_j, h_t) <= TOL
    assert max(max_abs(eps_j, eps_t), max_abs(h_j, h_t)) <= REGRESSION_TOL


def test_float_and_scalar_timesteps(tiny):
    cfg, torch_model, model, params = tiny
    x, _ = random_inputs(cfg, batch=2, seed=1)
    t_float = np.array([12.5, 640.25], np.float32)
    eps_t, _ = torch_forward(torch_model, x, t_float)
    eps_j, _ = jax_forward(model, params, x, t_float)
    assert max_abs(eps_j, eps_t) <= TOL
    # a scalar t is broadcast over the batch (int for torch, as diffusers documents)
    eps_t, _ = torch_forward(torch_model, x, 321)
    eps_j, _ = jax_forward(model, params, x, np.int32(321))
    assert max_abs(eps_j, eps_t) <= TOL
    # int and float t of equal value agree exactly (reuses the programs compiled above)
    np.testing.assert_array_equal(jax_forward(model, params, x, np.array([5, 9], np.int32))[0],
                                  jax_forward(model, params, x, np.array([5.0, 9.0], np.float32))[0])


def test_decode_of_another_h_matches_torch(tiny):
    """decode(h', skips(x), temb(t)) with h' encoded from ANOTHER input equals torch with its mid-block output
    replaced by h' (so decode really uses h and the skips / temb it is given); ``delta_h = 0`` leaves ε unchanged."""
    cfg, torch_model, model, params = tiny
    x, t = random_inputs(cfg, batch=2, seed=2)
    x2, _ = random_inputs(cfg, batch=2, seed=7)
    variables = {"params": params}
    h, skips, temb = model.apply(variables, x, t, method=model.encode)
    h2 = model.apply(variables, x2, t, method=model.encode)[0]
    ours = np.asarray(model.apply(variables, h2, skips, temb, method=model.decode))
    _, h_t = torch_forward(torch_model, x, t)
    eps_t, _ = torch_forward(torch_model, x, t, delta_h_nhwc=np.asarray(h2) - h_t)  # mid output -> h2
    assert max_abs(ours, eps_t) <= TOL and max_abs(ours, eps_t) <= REGRESSION_TOL
    eps = np.asarray(model.apply(variables, x, t))
    assert max_abs(ours, eps) > 1e-3  # h2 really changes the output
    np.testing.assert_array_equal(model.apply(variables, x, t, delta_h=jnp.zeros_like(h)), eps)


def test_delta_h_matches_torch_hook(tiny):
    cfg, torch_model, model, params = tiny
    x, t = random_inputs(cfg, batch=2, seed=3)
    hw = model.hspace_shape(16, 16)
    dh = np.random.default_rng(0).normal(0, 0.5, (2, *hw)).astype(np.float32)
    eps_t, _ = torch_forward(torch_model, x, t, delta_h_nhwc=dh)
    eps_j, _ = jax_forward(model, params, x, t, delta_h=dh)
    assert max_abs(eps_j, eps_t) <= TOL
    eps_plain, _ = jax_forward(model, params, x, t)
    assert max_abs(eps_j, eps_plain) > 1e-3  # the edit does something
    # a broadcastable delta_h ([C]) equals its explicit broadcast
    v = dh[0, 0, 0]
    np.testing.assert_allclose(jax_forward(model, params, x, t, delta_h=v)[0],
                               jax_forward(model, params, x, t, delta_h=np.broadcast_to(v, dh.shape))[0], atol=1e-6)


def test_bfloat16_compute_is_close(tiny, tmp_path):
    cfg, torch_model, _, params = tiny
    torch_model.save_pretrained(str(tmp_path / "m"))
    model16, params16 = load_unet(str(tmp_path / "m"), dtype=jnp.bfloat16)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params16))
    x, t = random_inputs(cfg, batch=1, seed=4)
    eps_t, _ = torch_forward(torch_model, x, t)
    eps16 = np.asarray(jax.jit(model16.apply)({"params": params16}, x, t))
    assert eps16.dtype == np.float32
    assert max_abs(eps16, eps_t) < 0.1 * np.abs(eps_t).max()


@pytest.mark.slow
def test_celebahq_config_parity(tmp_path):
    """The exact google/ddpm-ema-celebahq-256 architecture, random weights, at 64x64."""
    torch_model = make_torch_unet(CELEBAHQ, seed=0)
    n_torch = sum(p.numel() for p in torch_model.parameters())
    torch_model.save_pretrained(str(tmp_path))
    model, params = load_unet(str(tmp_path))
    n_ours = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    assert n_ours == n_torch == 113_673_219
    x, _ = random_inputs(CELEBAHQ, batch=1, size=64, seed=5)
    t = np.array([500])
    eps_t, h_t = torch_forward(torch_model, x, t)
    eps_j, h_j = jax_forward(model, params, x, t)
    assert h_j.shape == (1, 2, 2, 512)
    print(f"\ncelebahq: eps err {max_abs(eps_j, eps_t):.2e}, h err {max_abs(h_j, h_t):.2e}")
    assert max_abs(h_j, h_t) <= TOL
    assert max_abs(eps_j, eps_t) <= TOL
