"""Latent diffusion end to end on a tiny Stable-Diffusion-format pipeline folder (diffusers/transformers, random init,
perturbed, ``save_pretrained`` -> our loaders): CFG DDIM against diffusers' ``StableDiffusionPipeline``, pullback
J = ∂h/∂z with a fixed prompt against a dense Jacobian, and the SD jobs (configs/sd) on the folder."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sd_fixtures import tiny_sd_pipeline

from jaxhspace.checkpoints.pipeline import encode_prompt, load_pipeline
from jaxhspace.diffusion.ddim import ddim_sample
from jaxhspace.diffusion.guidance import PREDICTION_TYPES, guided_eps_fn
from jaxhspace.diffusion.schedule import ddim_timesteps, diffusers_prev_timesteps, schedule_from_config
from jaxhspace.directions import pullback
from jaxhspace.geometry.svd import dense_svd_reference
from jaxhspace.models.conditioning import Conditioned
from jaxhspace.models.functional import conditional_model_fn, eps_fn, h_of_x


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def sd(request, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("sd") / "pipe")
    torch_pipe = tiny_sd_pipeline(folder, seed=0, prediction_type=request.param)
    return folder, torch_pipe, load_pipeline(folder)


def test_cfg_ddim_matches_diffusers_pipeline(sd):
    """Same initial latents and prompt, guidance 3, 10 DDIM steps (SD scheduler: leading + offset 1, ᾱ_final = ᾱ_0):
    our latents equal StableDiffusionPipeline's (output_type='latent') within 1e-4, for ε- and v-prediction."""
    folder, tp, pipe = sd
    g = torch.Generator().manual_seed(3)
    lat = torch.randn((2, 4, 8, 8), generator=g)
    prompts = ["a face", "red hair"]
    with torch.no_grad():
        ref = tp(prompts, num_inference_steps=10, guidance_scale=3.0, latents=lat.clone(), output_type="latent",
                 height=32, width=32).images.numpy().transpose(0, 2, 3, 1)
    schedule = schedule_from_config(pipe.scheduler, PREDICTION_TYPES)
    f = guided_eps_fn(conditional_model_fn(pipe.unet, pipe.unet_params), encode_prompt(pipe, prompts),
                      encode_prompt(pipe, [""]), 3.0, schedule, pipe.prediction_type)
    ts = ddim_timesteps(10, schedule.num_train_timesteps, "leading", steps_offset=1)
    out = ddim_sample(f, jnp.asarray(lat.numpy().transpose(0, 2, 3, 1)), ts, schedule,
                      prev_timesteps=diffusers_prev_timesteps(ts, schedule.num_train_timesteps, set_alpha_to_one=False))
    err = float(np.max(np.abs(np.asarray(out) - ref)))
    assert err < 1e-4, err
    assert np.max(np.abs(ref - lat.numpy().transpose(0, 2, 3, 1))) > 0.1  # the sampler moved the latents


def test_pullback_with_fixed_prompt_matches_dense_jacobian(sd):
    """J = ∂h/∂z at (z_t, t, c) through Conditioned: top-k σ within 1e-4 relative of the dense Jacobian's SVD, and
    the prompt matters (another prompt gives other σ)."""
    _, _, pipe = sd
    model = Conditioned(pipe.unet, encode_prompt(pipe, ["a face"]))
    z = jax.random.normal(jax.random.PRNGKey(0), (8, 8, 4))
    ref = dense_svd_reference(h_of_x(model, pipe.unet_params, 500), z, k=4)
    res = pullback(model, pipe.unet_params, z, 500, 4, jax.random.PRNGKey(1), tol=1e-7, max_iters=60)
    rel = np.max(np.abs(np.asarray(res.s) - ref.s) / ref.s)
    assert rel < 1e-4, (np.asarray(res.s), ref.s)
    other = dense_svd_reference(h_of_x(Conditioned(pipe.unet, encode_prompt(pipe, ["red hair"])),
                                       pipe.unet_params, 500), z, k=4)
    assert np.max(np.abs(other.s - ref.s) / ref.s) > 1e-3


def _job(config_module, folder, workdir, **over):
    import importlib

    from jaxhspace.tasks import get_task

    c = importlib.import_module(config_module).get_config()
    c.model_path = folder
    for k, v in over.items():
        setattr(c, k, v)
    return get_task(c.task)(c, str(workdir))


def test_sd_pullback_job_gamma_zero_is_reconstruction(sd, tmp_path):
    """configs/sd/pullback.py on the folder: PNG + JSON out; the probe reads the VAE-decoded images: with γ = 0 every
    edit changes no factor beyond float rounding (edited = reconstruction), with γ = 1 some factor changes."""
    folder, _, pipe = sd
    if pipe.prediction_type != "epsilon":
        return  # the job is the same for both; the v-prediction conversion is checked by the CFG test
    kw = dict(n_steps=6, k=2, n_dirs=1, n_edit_steps=2, prompt="a face", svd_max_iters=8, num_images=1,
              t_boost=0)  # deterministic: the η = 1 boosting noise depends on the batch size
    m0 = _job("jaxhspace.configs.sd.pullback", folder, tmp_path / "g0", gamma=0.0, **kw)
    assert os.path.isfile(m0["grid"]) and m0["prompt"] == "a face"
    assert len(m0["singular_values"]) == 1 and len(m0["singular_values"][0]) == 2
    assert len(m0["edit_scores"]) == 2
    c0 = max(max(r["changes"].values()) for r in m0["edit_scores"])   # batch-size rounding only
    m1 = _job("jaxhspace.configs.sd.pullback", folder, tmp_path / "g1", gamma=1.0, **kw)
    c1 = max(max(r["changes"].values()) for r in m1["edit_scores"])
    assert c0 < 1e-3 and c1 > 10 * max(c0, 1e-4), (c0, c1)


def test_sd_jobs_need_a_pipeline_folder(tmp_path):
    from jaxhspace.configs.sd import pullback as cfg

    from jaxhspace.tasks import get_task

    c = cfg.get_config()
    with pytest.raises(ValueError, match="config.model_path.*pipeline folder"):
        get_task(c.task)(c, str(tmp_path))


@pytest.fixture(scope="module")
def ldm(tmp_path_factory):
    """A tiny unconditional LDM folder (UNet2DModel on VQModel latents, like CompVis/ldm-celebahq-256): image 32 ->
    latent 16x16x3 -> h 8x8x32."""
    import diffusers

    from sd_fixtures import perturb_

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8)
    vq = diffusers.VQModel(latent_channels=3, num_vq_embeddings=32, block_out_channels=(8, 16),
                           down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                           layers_per_block=1, norm_num_groups=4)
    perturb_(unet, 1)
    perturb_(vq, 2)
    folder = str(tmp_path_factory.mktemp("ldm") / "pipe")
    pipe = diffusers.LDMPipeline(vqvae=vq.eval(), unet=unet.eval(), scheduler=diffusers.DDIMScheduler())
    pipe.save_pretrained(folder)
    return folder


def test_ldm_haas_and_pca_jobs(ldm, tmp_path):
    """The haas and pca jobs (configs/ldm) on the LDM folder: Haas' σ of J = ∂ε/∂h at the inverted latent equal the
    dense Jacobian's SVD (1e-4 relative); PCA's explained-variance ratios at the last grid step equal numpy's SVD of
    the centred h of the same latents (independently encoded)."""
    import ml_collections

    from jaxhspace.data import synthfaces
    from jaxhspace.diffusion.ddim import ddim_invert
    from jaxhspace.diffusion.schedule import asyrp_timesteps
    from jaxhspace.models.functional import encode_fn, eps_of_h
    from jaxhspace.tasks.inputs import invert_to, load_world

    m = _job("jaxhspace.configs.ldm.haas", ldm, tmp_path / "haas", n_steps=4, jacobian_t=600, k=2, n_dirs=1,
             num_images=1, svd_tol=1e-7, svd_max_iters=60, sigma_schedule="constant")  # J at the inverted x_t
    world = load_world(ml_collections.ConfigDict({"model_path": ldm, "seed": 0, "model_family": "latent"}))
    assert world.is_latent and world.image_size == 32
    x0 = synthfaces.generate(12345, 1, size=32)[0]
    x_t, t, _ = invert_to(world.model, world.params, world.schedule, world.to_x(x0), 4, 600)
    assert t == m["jacobian_t"]
    h, skips, temb = encode_fn(world.model, world.params)(x_t[:1], jnp.full((1,), t))
    ref = dense_svd_reference(eps_of_h(world.model, world.params, skips, temb), h[0], k=2)
    np.testing.assert_allclose(m["singular_values"][0], ref.s, rtol=1e-4)

    p = _job("jaxhspace.configs.ldm.pca", ldm, tmp_path / "pca", n_steps=4, k=2, n_dirs=1, num_images=1,
             pca_source="synthfaces", num_pca_samples=6, supervised_factor="", scales=(-1.0, 1.0))
    data = synthfaces.generate(p.get("pca_data_seed", 777), 6, size=32)[0]
    grid = asyrp_timesteps(4, 999)
    z = ddim_invert(eps_fn(world.model, world.params), world.to_x(data), grid, world.schedule)   # latent at t = 999
    H = np.asarray(encode_fn(world.model, world.params)(z, jnp.full((6,), int(grid[-1])))[0]).reshape(6, -1)
    sv = np.linalg.svd(H - H.mean(0), compute_uv=False)
    np.testing.assert_allclose(p["explained_variance_ratio"][-1], (sv ** 2 / np.sum(sv ** 2))[:2], rtol=1e-3)


def test_sd_hosvd_job(sd, tmp_path):
    """configs/sd/hosvd.py on the tiny SD folder (h 4x4x64, z 8x8x4 kept as tensors): the exact ||J||_F² it reports
    equals the dense Jacobian's, and every Tucker model captures a fraction of it in (0, 1]."""
    folder, _, pipe = sd
    if pipe.prediction_type != "epsilon":
        return
    import ml_collections

    from jaxhspace.models.functional import h_of_x
    from jaxhspace.tasks.inputs import invert_to, load_world
    from jaxhspace.data import synthfaces
    from jaxhspace.geometry.svd import dense_jacobian

    m = _job("jaxhspace.configs.sd.hosvd", folder, tmp_path, num_images=1, n_steps=4, svd_k=4, n_dirs=1,
             n_edit_steps=1, prompt="a face", exact_norm_max_dim=256, n_probes=4,
             rank_choices=(("spatial_channel", (4, 8), "spatial_channel", (8, 2)),))
    world = load_world(ml_collections.ConfigDict({"model_path": folder, "seed": 0, "prompt": "a face"}))
    x_t, t, _ = invert_to(world.model, world.params, world.schedule,
                          world.to_x(synthfaces.generate(12345, 1, size=32)[0]), 4, m["edit_t"])
    J = dense_jacobian(h_of_x(world.model, world.params, t), x_t[0])
    row = m["per_image"][0]["choices"][0]
    assert row["frobenius_exact"]
    np.testing.assert_allclose(row["frobenius_sq"], float(np.sum(J.astype(np.float64) ** 2)), rtol=1e-4)
    assert 0 < row["tucker_energy"] <= 1 + 1e-6
