"""DDPM training job (jaxhspace.training.ddpm): the min-SNR weight against diffusers' recipe, the two-phase
learning-rate schedule against its closed form, and a resumed run (stopped mid-way, across the switch into the
refine phase) against an uninterrupted one, both exported in diffusers format."""
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from jaxhspace.diffusion.schedule import make_schedule
from jaxhspace.training import ddpm
from tests.unet_fixtures import TINY_ATTN2


def test_min_snr_weight_matches_diffusers():
    """diffusers' train_text_to_image.py (ε-prediction): min(SNR, γ)/SNR with SNR from training_utils.compute_snr."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    t = torch.tensor([0, 3, 40, 120, 500, 999])
    snr = compute_snr(sched, t)
    ref = torch.stack([snr, 5.0 * torch.ones_like(snr)], dim=1).min(dim=1)[0] / snr
    ours = ddpm.min_snr_weight(make_schedule("linear", 1e-4, 0.02, 1000).alphas_cumprod[t.numpy()], 5.0)
    np.testing.assert_allclose(np.asarray(ours), ref.numpy(), rtol=2e-5)


def test_weighted_loss_is_per_sample_weighted_mse():
    model_cfg = dict(TINY_ATTN2, sample_size=32)
    from jaxhspace.models.unet import UNet2DModel, UNetConfig

    model = UNet2DModel(UNetConfig.from_dict(model_cfg))
    sched = make_schedule("linear", 1e-4, 0.02, 1000)
    x0 = jax.random.uniform(jax.random.PRNGKey(0), (4, 32, 32, 3), minval=-1, maxval=1)
    params = model.init(jax.random.PRNGKey(1), x0[:1], jnp.zeros((1,), jnp.int32))["params"]
    key = jax.random.PRNGKey(2)
    kt, ke = jax.random.split(key)
    t = jax.random.randint(kt, (4,), 0, 1000)
    eps = jax.random.normal(ke, x0.shape)
    a = sched.alphas_cumprod[t]
    x_t = jnp.sqrt(a)[:, None, None, None] * x0 + jnp.sqrt(1 - a)[:, None, None, None] * eps
    mse = np.mean((np.asarray(model.apply({"params": params}, x_t, t)) - np.asarray(eps)) ** 2, axis=(1, 2, 3))
    snr = np.asarray(a, np.float64) / (1 - np.asarray(a, np.float64))
    np.testing.assert_allclose(float(ddpm.ddpm_loss(model, params, sched, x0, key)), mse.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(ddpm.ddpm_loss(model, params, sched, x0, key, 5.0)),
                               np.mean(np.minimum(snr, 5.0) / snr * mse), rtol=1e-5)
    np.testing.assert_allclose(float(ddpm.ddpm_loss(model, params, sched, x0, key, 0.0)), mse.mean(), rtol=1e-5)


def test_lr_schedule_closed_form():
    lr, final, warm, start, total = 5e-4, 5e-5, 200, 6000, 9000
    f = ddpm.lr_schedule(lr, warm, start, total, final)
    for step, want in [(0, 0.0), (100, lr / 2), (200, lr), (5999, lr), (6000, lr), (9000, final)]:
        np.testing.assert_allclose(float(f(step)), want, rtol=1e-6, atol=1e-12)
    mid = final + (lr - final) * 0.5 * (1 + math.cos(math.pi * 0.5))
    np.testing.assert_allclose(float(f(7500)), mid, rtol=1e-6)
    plain = ddpm.lr_schedule(lr, warm)
    assert float(plain(9000)) == pytest.approx(lr)
    # The optimizer state has the same structure with or without a refine phase: a plain-recipe checkpoint resumes.
    p = {"w": jnp.ones((3,))}
    s1 = ddpm.make_optimizer(lr, warm, 1.0).init(p)
    s2 = ddpm.make_optimizer(lr, warm, 1.0, start, total, final).init(p)
    assert jax.tree.structure(s1) == jax.tree.structure(s2)


def _config(workdir, export_dir, **kw):
    c = ml_collections.ConfigDict(dict(
        task="ddpm_train", seed=0, image_size=32, unet=dict(TINY_ATTN2, sample_size=32), beta_schedule="linear",
        beta_start=1e-4, beta_end=0.02, num_train_timesteps=1000, batch_size=2, lr=1e-3, warmup_steps=1,
        grad_clip=1.0, ema_decay=0.9, total_steps=4, checkpoint_every=100, log_every=1, max_minutes=0.0,
        export_dir=export_dir, refine_from_step=2, refine_min_snr_gamma=5.0, refine_ema_decay=0.5,
        refine_final_lr=1e-4))
    c.update(kw)
    return c


def test_resumed_run_equals_uninterrupted_and_exports_diffusers(tmp_path):
    from diffusers import UNet2DModel as TorchUNet

    a_dir, b_dir = str(tmp_path / "a"), str(tmp_path / "b")
    ea, eb = str(tmp_path / "export_a"), str(tmp_path / "export_b")
    ma = ddpm.train_ddpm(_config(a_dir, ea), a_dir)
    assert ma["steps_done"] == 4 and ma["exported_to"] == ea
    mb1 = ddpm.train_ddpm(_config(b_dir, eb, max_minutes=1e-9), b_dir)  # stops after its first step
    assert mb1["stopped_early"] and mb1["steps_done"] == 1 and not os.path.exists(eb)
    mb2 = ddpm.train_ddpm(_config(b_dir, eb), b_dir)
    assert mb2["steps_done"] == 4
    wa = load_file(os.path.join(ea, "diffusion_pytorch_model.safetensors"))
    wb = load_file(os.path.join(eb, "diffusion_pytorch_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-6, atol=1e-7, err_msg=k)
    losses = [json.loads(line)["loss"] for line in open(os.path.join(a_dir, "train_log.jsonl"))]
    assert len(losses) == 4 and all(np.isfinite(losses))
    tm = TorchUNet.from_pretrained(ea)
    assert sum(p.numel() for p in tm.parameters()) == ma["params"]
    with open(os.path.join(ea, "scheduler_config.json")) as f:
        assert json.load(f)["prediction_type"] == "epsilon"
