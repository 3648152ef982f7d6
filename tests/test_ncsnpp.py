"""NCSN++ as diffusers stores it (google/ncsnpp-*): fourier time embedding, FIR resampling and the Skip*Block2D
blocks in our UNet2DModel, against diffusers' PyTorch UNet2DModel (random init, perturbed, save_pretrained ->
load_unet); the VE-SDE sampler against diffusers' ScoreSdeVeScheduler with the same injected noise; pullback
at a noise level σ against a dense Jacobian's SVD."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxhspace.checkpoints import load_unet
from jaxhspace.diffusion import ve_sde
from jaxhspace.models.embeddings import GaussianFourierProjection
from jaxhspace.models.functional import eps_fn
from jaxhspace.models.skip_blocks import fir_downsample_2d, fir_upsample_2d, upfirdn2d
from jaxhspace.models.unet import UNetConfig
from unet_fixtures import check_parity, jax_forward, make_torch_unet, max_abs, torch_forward

TOL = 1e-4
# Regression bounds ~5-10x above the max |ours - diffusers| measured on CPU (float32, highest matmul precision), so a
# 10x regression fails while TOL stays the contract: ε 5.6e-6 and h 4.2e-6 (tiny configs), σ·score with Δh 2.0e-6,
# VE sampler x / max|x| 2.6e-7, ffhq-256 layout (slow) ε 8.8e-6 and h 1.5e-6.
EPS_REG, H_REG = 4e-5, 3e-5
DH_REG, SAMPLER_REG, FFHQ_EPS_REG, FFHQ_H_REG = 1.5e-5, 2e-6, 5e-5, 1e-5

# Every skip block type, fourier embedding, norm_num_groups=None (min(C // 4, 32)), √2 mid scale: the
# google/ncsnpp-ffhq-256 layout at toy size (diffusers' own NCSNppModelTests config, 16 px).
TINY_NCSNPP = dict(
    sample_size=16, in_channels=3, out_channels=3, block_out_channels=[32, 64, 64, 64], layers_per_block=1,
    time_embedding_type="fourier", norm_eps=1e-6, mid_block_scale_factor=math.sqrt(2.0), norm_num_groups=None,
    attention_head_dim=None, act_fn="silu", center_input_sample=False, downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=1,
    down_block_types=["SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D", "SkipDownBlock2D"],
    up_block_types=["SkipUpBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"],
)
# scale_shift time conditioning (mid attention without group norm), multi-head attention, int norm groups,
# centred input, two layers per block.
TINY_NCSNPP_SS = dict(
    sample_size=16, in_channels=3, out_channels=3, block_out_channels=[32, 64, 64], layers_per_block=2,
    time_embedding_type="fourier", norm_eps=1e-5, mid_block_scale_factor=1.0, norm_num_groups=16,
    attention_head_dim=16, act_fn="silu", center_input_sample=True, resnet_time_scale_shift="scale_shift",
    down_block_types=["AttnSkipDownBlock2D", "SkipDownBlock2D", "AttnSkipDownBlock2D"],
    up_block_types=["AttnSkipUpBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D"],
)
CONFIGS = {"ncsnpp": TINY_NCSNPP, "scale_shift": TINY_NCSNPP_SS}

# google/ncsnpp-ffhq-256 (score_sde configs/ve/ffhq_256_ncsnpp_continuous.py: nf 128, ch_mult (1,1,2,2,2,2,2),
# 2 res blocks, attention at 16 px, FIR, skip progressive in/out, fourier embedding, scale_by_sigma).
FFHQ_256 = dict(
    sample_size=256, in_channels=3, out_channels=3, block_out_channels=[128, 128, 256, 256, 256, 256, 256],
    layers_per_block=2, time_embedding_type="fourier", norm_eps=1e-6, mid_block_scale_factor=1.41421356237,
    norm_num_groups=None, attention_head_dim=None, act_fn="silu", center_input_sample=False, downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=1,
    down_block_types=["SkipDownBlock2D"] * 4 + ["AttnSkipDownBlock2D"] + ["SkipDownBlock2D"] * 2,
    up_block_types=["SkipUpBlock2D"] * 2 + ["AttnSkipUpBlock2D"] + ["SkipUpBlock2D"] * 4,
)
FFHQ_SCHEDULER = dict(_class_name="ScoreSdeVeScheduler", num_train_timesteps=2000, snr=0.15, sigma_min=0.01,
                      sigma_max=348.0, sampling_eps=1e-5, correct_steps=1)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def tiny(request, tmp_path_factory):
    cfg = CONFIGS[request.param]
    torch_model = make_torch_unet(cfg, seed=3)
    folder = str(tmp_path_factory.mktemp(request.param))
    torch_model.save_pretrained(folder)
    model, params = load_unet(folder)
    return request.param, cfg, torch_model, model, params


@pytest.fixture(scope="module")
def ncsnpp(tmp_path_factory):
    """TINY_NCSNPP as (torch model, jax model, params, score_fn); one score_fn object, so the sampler's jit cache
    is shared between tests (8 px inputs keep the scans and the dense Jacobian cheap)."""
    torch_model = make_torch_unet(TINY_NCSNPP, seed=7)
    folder = str(tmp_path_factory.mktemp("ncsnpp_sampler"))
    torch_model.save_pretrained(folder)
    model, params = load_unet(folder)
    return torch_model, model, params, eps_fn(model, params)


def _noisy_inputs(batch=2, size=16, sigmas=(0.05, 30.0), seed=0):
    rng = np.random.default_rng(seed)
    sig = np.asarray(sigmas, np.float32)[:batch]
    x0 = rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
    return (x0 + sig[:, None, None, None] * rng.standard_normal(x0.shape)).astype(np.float32), sig


def test_fourier_projection_matches_diffusers():
    from diffusers.models.embeddings import GaussianFourierProjection as TorchGFP

    torch.manual_seed(0)
    ref = TorchGFP(embedding_size=16, scale=16)
    sig = np.array([0.01, 0.37, 5.0, 348.0], np.float32)
    w = ref.weight.detach().numpy()
    ours = GaussianFourierProjection(16, 16.0).apply({"params": {"weight": jnp.asarray(w)}}, jnp.asarray(sig))
    expect = ref(torch.from_numpy(sig)).detach().numpy()
    assert max_abs(ours, expect) < 1e-5


@pytest.mark.parametrize("up, down, pad", [(2, 1, (2, 1)), (1, 2, (1, 1)), (1, 1, (0, 3)), (3, 2, (1, 2))])
def test_upfirdn2d_matches_diffusers(up, down, pad):
    from diffusers.models.upsampling import upfirdn2d_native

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 10, 5)).astype(np.float32)  # non-square, so H and W cannot be swapped
    k = rng.standard_normal((4, 3)).astype(np.float32)  # asymmetric, so the kernel flip matters
    ref = upfirdn2d_native(torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(k), up, down, pad).numpy()
    assert max_abs(upfirdn2d(jnp.asarray(x), k, up, down, pad), ref.transpose(0, 2, 3, 1)) < 1e-5


def test_fir_resampling_matches_diffusers():
    from diffusers.models.downsampling import downsample_2d
    from diffusers.models.upsampling import upsample_2d

    x = np.random.default_rng(2).standard_normal((2, 8, 12, 3)).astype(np.float32)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
    up = upsample_2d(xt, kernel=(1, 3, 3, 1)).numpy().transpose(0, 2, 3, 1)
    down = downsample_2d(xt, kernel=(1, 3, 3, 1)).numpy().transpose(0, 2, 3, 1)
    assert max_abs(fir_upsample_2d(jnp.asarray(x)), up) < 1e-5
    assert max_abs(fir_downsample_2d(jnp.asarray(x)), down) < 1e-5


def test_score_eps_and_h_match_diffusers(tiny):
    name, cfg, torch_model, model, params = tiny
    x, sig = _noisy_inputs()
    score_t, h_t = torch_forward(torch_model, x, sig)
    score_j, h_j = jax_forward(model, params, x, sig)
    assert h_j.shape == h_t.shape == (2, *model.hspace_shape(16, 16))
    eps_t = -sig[:, None, None, None] * score_t
    eps_j = np.asarray(ve_sde.eps_from_score(jnp.asarray(score_j), sig))
    rel = max_abs(score_j, score_t) / np.max(np.abs(score_t))
    print(f"\n{name}: eps err {max_abs(eps_j, eps_t):.2e}, h err {max_abs(h_j, h_t):.2e}, score rel err {rel:.2e}")
    assert max_abs(eps_j, eps_t) <= TOL and max_abs(h_j, h_t) <= TOL and rel <= TOL
    assert max_abs(eps_j, eps_t) <= EPS_REG and max_abs(h_j, h_t) <= H_REG


def test_delta_h_and_bottleneck(ncsnpp):
    """h + Δh decoded with the unedited skips equals diffusers with Δh added to mid_block's output; the
    Bottleneck carries σ as its last skip."""
    torch_model, model, params, _ = ncsnpp
    x, sig = _noisy_inputs(size=8, seed=4, sigmas=(0.3, 2.0))
    dh = 0.3 * np.random.default_rng(5).standard_normal((2, *model.hspace_shape(8, 8))).astype(np.float32)
    score_t, _ = torch_forward(torch_model, x, sig, delta_h_nhwc=dh)
    score_j, _ = jax_forward(model, params, x, sig, delta_h=dh)
    check_parity("ncsnpp delta_h: sigma * score", score_j * sig[:, None, None, None],
                 score_t * sig[:, None, None, None], TOL, DH_REG)

    def enc_dec(p, x, s):
        b = model.apply({"params": p}, x, s, method=model.encode)
        return b.skips[-1], model.apply({"params": p}, b.h + dh, b.skips, b.temb, method=model.decode)

    last_skip, dec = jax.jit(enc_dec)(params, x, sig)
    np.testing.assert_array_equal(np.asarray(last_skip).reshape(-1), sig)
    assert max_abs(dec, score_j) <= 1e-5 * np.max(np.abs(score_j))
    b = jax.eval_shape(lambda p, x, s: model.apply({"params": p}, x, s, method=model.encode), params, x, sig)
    with pytest.raises(ValueError, match="skip tensors"):
        jax.eval_shape(lambda p, b: model.apply({"params": p}, b.h, b.skips[:-1], b.temb, method=model.decode),
                       params, b)


def test_our_weights_load_in_diffusers(tiny, tmp_path):
    """save_unet_diffusers writes the fourier weight and skip-block keys diffusers expects (strict load)."""
    from diffusers import UNet2DModel as TorchUNet

    from jaxhspace.checkpoints import save_unet_diffusers

    _, cfg, torch_model, model, params = tiny
    save_unet_diffusers(str(tmp_path / "out"), model, params)
    back, info = TorchUNet.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ref = torch_model.state_dict()
    for k, v in back.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), ref[k].numpy())


def test_config_validation():
    base = dict(TINY_NCSNPP)
    with pytest.raises(ValueError, match="down_block_types=.*all down/up blocks must be skip blocks"):
        UNetConfig(**{**base, "down_block_types": ["DownBlock2D"] + base["down_block_types"][1:]})
    with pytest.raises(ValueError, match="in_channels = out_channels = 3"):
        UNetConfig(**{**base, "in_channels": 4})
    with pytest.raises(ValueError, match="GroupNorms do not divide"):
        UNetConfig(**{**base, "block_out_channels": [36, 72, 72, 72]})
    with pytest.raises(ValueError, match="norm_num_groups"):
        UNetConfig(**{**base, "down_block_types": ["DownBlock2D"] * 4, "up_block_types": ["UpBlock2D"] * 4})
    with pytest.raises(ValueError, match="time_embedding_type"):
        UNetConfig(**{**base, "time_embedding_type": "learned"})
    UNetConfig(**FFHQ_256)  # the published layout validates


@pytest.mark.parametrize("n, cfg", [(10, FFHQ_SCHEDULER), (100, {}), (2000, FFHQ_SCHEDULER), (7, dict(
    sigma_min=0.05, sigma_max=50.0, sampling_eps=1e-3))])
def test_ve_schedule_matches_diffusers(n, cfg):
    from diffusers import ScoreSdeVeScheduler

    sched = ScoreSdeVeScheduler(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    sched.set_timesteps(n)
    sched.set_sigmas(n)
    ours = ve_sde.ve_schedule_from_config(cfg, n)
    ts = sched.timesteps
    idx = (ts * (len(ts) - 1)).long()
    np.testing.assert_allclose(ours.timesteps, ts.numpy(), rtol=0, atol=2e-7)
    np.testing.assert_allclose(ours.sigmas, sched.sigmas.numpy(), rtol=2e-6)
    np.testing.assert_allclose(ours.step_sigmas, sched.discrete_sigmas[idx].numpy(), rtol=2e-6)
    np.testing.assert_allclose(ours.adjacent_sigmas, sched.get_adjacent_sigma(idx, ts).numpy(), rtol=2e-6)
    assert ours.sigma_max == sched.init_noise_sigma


def _diffusers_pc_loop(unet, scheduler, x_nhwc, n_steps, noises):
    """ScoreSdeVePipeline.__call__'s loop (diffusers 0.42 pipeline_score_sde_ve.py) with randn_tensor patched to
    return our z's in order; returns the unclamped (sample, sample_mean) NHWC."""
    import diffusers.schedulers.scheduling_sde_ve as sde_mod

    queue = [torch.from_numpy(np.ascontiguousarray(z.transpose(0, 3, 1, 2))) for z in noises]
    orig = sde_mod.randn_tensor
    sde_mod.randn_tensor = lambda shape, **kw: queue.pop(0)
    try:
        sample = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
        scheduler.set_timesteps(n_steps)
        scheduler.set_sigmas(n_steps)
        with torch.no_grad():
            for i, t in enumerate(scheduler.timesteps):
                sigma_t = scheduler.sigmas[i] * torch.ones(sample.shape[0])
                for _ in range(scheduler.config.correct_steps):
                    model_output = unet(sample, sigma_t).sample
                    sample = scheduler.step_correct(model_output, sample).prev_sample
                model_output = unet(sample, sigma_t).sample
                output = scheduler.step_pred(model_output, t, sample)
                sample, sample_mean = output.prev_sample, output.prev_sample_mean
    finally:
        sde_mod.randn_tensor = orig
    assert not queue, "diffusers drew fewer noise tensors than we supplied"
    return sample.numpy().transpose(0, 2, 3, 1), sample_mean.numpy().transpose(0, 2, 3, 1)


# correct_steps 1 in both (as the ffhq scheduler) so the two runs and the edit test share one compiled sampler
@pytest.mark.parametrize("sched_cfg", [dict(sigma_min=0.01, sigma_max=2.0, snr=0.16, correct_steps=1), FFHQ_SCHEDULER])
def test_ve_sampler_matches_diffusers(ncsnpp, sched_cfg):
    from diffusers import ScoreSdeVeScheduler

    torch_model, model, params, score_fn = ncsnpp
    n_steps = 3
    scheduler = ScoreSdeVeScheduler(**{k: v for k, v in sched_cfg.items() if not k.startswith("_")})
    schedule = ve_sde.ve_schedule_from_config(sched_cfg, n_steps)
    c = scheduler.config.correct_steps
    key = jax.random.PRNGKey(11)
    x_init = ve_sde.init_sample(jax.random.PRNGKey(12), (2, 8, 8, 3), schedule)
    noises = [np.asarray(ve_sde.step_noise(key, i, j, x_init.shape)) for i in range(n_steps) for j in range(c + 1)]
    ref_x, ref_mean = _diffusers_pc_loop(torch_model, scheduler, np.asarray(x_init), n_steps, noises)
    x, x_mean = ve_sde.ve_sample(score_fn, x_init, schedule, key, snr=scheduler.config.snr,
                                 correct_steps=c)
    scale = max(1.0, float(np.max(np.abs(ref_mean))))
    print(f"\nsigma_max {sched_cfg['sigma_max']}: max|x| {scale:.3g}", end="")
    for label, ours, ref in (("x", x, ref_x), ("x_mean", x_mean, ref_mean)):
        check_parity(f"VE sampler {label} / max|x|, sigma_max {sched_cfg['sigma_max']}", ours, ref, TOL,
                     SAMPLER_REG, scale=scale)


def test_pullback_at_sigma_matches_dense_svd(ncsnpp):
    """Park's J = ∂h/∂x at noise level σ (t = σ for NCSN++): block Krylov top-k vs a dense Jacobian SVD."""
    from jaxhspace.directions.pullback import pullback
    from jaxhspace.models.functional import h_of_x

    _, model, params, _ = ncsnpp
    x, _ = _noisy_inputs(batch=1, size=8, sigmas=(0.5,), seed=9)
    sigma, k = 0.5, 4
    f = h_of_x(model, params, sigma)
    jac = np.asarray(jax.jit(jax.jacrev(lambda v: f(v.reshape(x.shape[1:])).reshape(-1)))(jnp.asarray(x[0]).ravel()))
    s_dense = np.linalg.svd(jac.astype(np.float64), compute_uv=False)[:k]
    res = pullback(model, params, x[0], sigma, k, jax.random.PRNGKey(0), tol=1e-6, max_iters=30)
    s = np.asarray(res.s)
    print(f"\npullback at sigma {sigma}: s {s}, dense {s_dense}, rel err {np.max(np.abs(s - s_dense) / s_dense):.1e}")
    np.testing.assert_allclose(s, s_dense, rtol=1e-3)
    # u = J v / s with J the dense Jacobian
    v = np.asarray(res.v).reshape(k, -1)
    u = np.asarray(res.u).reshape(k, -1)
    np.testing.assert_allclose(v @ jac.T, u * s[:, None], atol=1e-3 * s[0])


def test_pullback_edit_then_sample(ncsnpp):
    """An edit along v at σ_i (ε = −σ·score), then the VE sampler continues from step i: finite and moved."""
    from jaxhspace.editing.pullback_edit import edit_steps

    _, model, params, score_fn = ncsnpp
    schedule = ve_sde.ve_schedule(5, sigma_max=5.0)
    start = 2  # 3 remaining steps, 1 corrector step: the sampler program of test_ve_sampler_matches_diffusers
    s = float(schedule.sigmas[start])
    x, _ = _noisy_inputs(batch=2, size=8, sigmas=(s, s), seed=10)
    v = jax.random.normal(jax.random.PRNGKey(1), x.shape[1:])
    v = v / jnp.linalg.norm(v)
    x_edit = edit_steps(ve_sde.eps_fn_from_score(score_fn), jnp.asarray(x), s, v, gamma=0.5, n_steps=2)
    assert float(jnp.max(jnp.abs(x_edit - x))) > 0
    out, out_mean = ve_sde.ve_sample(score_fn, x_edit, schedule, jax.random.PRNGKey(2), start=start)
    assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out_mean)))


@pytest.mark.slow
def test_ffhq_256_layout_param_count_and_parity(tmp_path):
    """The published google/ncsnpp-ffhq-256 layout: parameter count and one 64 px forward against diffusers."""
    torch_model = make_torch_unet(FFHQ_256, seed=0)
    n_torch = sum(p.numel() for p in torch_model.state_dict().values())
    torch_model.save_pretrained(str(tmp_path))
    model, params = load_unet(str(tmp_path))
    n_ours = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    print(f"\nncsnpp-ffhq-256 layout: {n_ours:,} parameters (diffusers state dict {n_torch:,})")
    assert n_ours == n_torch
    x, sig = _noisy_inputs(batch=1, size=64, sigmas=(1.5,), seed=3)
    score_t, h_t = torch_forward(torch_model, x, sig)
    score_j, h_j = jax_forward(model, params, x, sig)
    assert h_j.shape == (1, 1, 1, 256)
    check_parity("ncsnpp-ffhq-256 layout eps", score_j * sig[0], score_t * sig[0], TOL, FFHQ_EPS_REG)
    check_parity("ncsnpp-ffhq-256 layout h", h_j, h_t, TOL, FFHQ_H_REG)
