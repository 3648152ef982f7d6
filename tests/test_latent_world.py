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
    m0 = _job("configs.sd.pullback", folder, tmp_path / "g0", gamma=0.0, **kw)
    assert os.path.isfile(m0["grid"]) and m0["prompt"] == "a face"
    assert len(m0["singular_values"]) == 1 and len(m0["singular_values"][0]) == 2
    assert len(m0["edit_scores"]) == 2
    c0 = max(max(r["changes"].values()) for r in m0["edit_scores"])   # batch-size rounding only
    m1 = _job("configs.sd.pullback", folder, tmp_path / "g1", gamma=1.0, **kw)
    c1 = max(max(r["changes"].values()) for r in m1["edit_scores"])
    assert c0 < 1e-3 and c1 > 10 * max(c0, 1e-4), (c0, c1)


def test_sd_jobs_need_a_pipeline_folder(tmp_path):
    from configs.sd import pullback as cfg

    from jaxhspace.tasks import get_task

    c = cfg.get_config()
    with pytest.raises(ValueError, match="config.model_path.*pipeline folder"):
        get_task(c.task)(c, str(tmp_path))
