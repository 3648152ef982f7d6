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
from jaxhspace.tasks import ddpm_train_job as ddpm_train
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
    ma = ddpm_train.run(_config(a_dir, ea), a_dir)
    assert ma["steps_done"] == 4 and ma["exported_to"] == ea
    mb1 = ddpm_train.run(_config(b_dir, eb, max_minutes=1e-9), b_dir)  # stops after its first step
    assert mb1["stopped_early"] and mb1["steps_done"] == 1 and not os.path.exists(eb)
    mb2 = ddpm_train.run(_config(b_dir, eb), b_dir)
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


def _adam_state(opt_state):
    """The ScaleByAdamState inside the optimizer state (a nested tuple)."""
    import optax

    for s in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState)):
        if isinstance(s, optax.ScaleByAdamState):
            return s
    raise AssertionError("no ScaleByAdamState in the optimizer state")


def test_refine_phase_switches_weights_lr_and_ema_at_refine_from_step(tmp_path, monkeypatch):
    """Issue #19: every step of a run across ``refine_from_step`` (recorded through a spy on ``run_training``) against
    closed forms recomputed from the raw params: the loss is the uniform ε-MSE before the switch and the min-SNR-γ
    weighted one, min(SNR_t, γ)/SNR_t (Hang et al. 2023), from it on; the Adam step is −lr(s)·m̂/(√v̂ + 1e-8) with
    lr(s) the closed form (linear warm-up, constant, cosine to refine_final_lr from the switch); the EMA is
    d·e + (1 − d)·p with d = ema_decay before and refine_ema_decay from the switch."""
    from jaxhspace.models.unet import UNet2DModel, UNetConfig

    records, real_run = [], ddpm_train.run_training

    def spy(config, workdir, state, step_fn, batch_fn, *a, **kw):
        def recorded(st, batch):
            before = jax.tree.map(lambda x: np.array(x, copy=True), st)  # the state buffers are donated
            new, loss = step_fn(st, batch)
            records.append((before, np.array(batch), jax.tree.map(lambda x: np.array(x, copy=True), new)))
            return new, loss
        return real_run(config, workdir, state, recorded, batch_fn, *a, **kw)

    monkeypatch.setattr(ddpm_train, "run_training", spy)
    lr, final, start, total, gamma, ema0, ema1 = 1e-3, 1e-4, 2, 5, 0.2, 0.9, 0.5
    wd = str(tmp_path / "refine")
    c = _config(wd, "", batch_size=4, total_steps=total, refine_from_step=start, refine_min_snr_gamma=gamma,
                ema_decay=ema0, refine_ema_decay=ema1, refine_final_lr=final, lr=lr, warmup_steps=1)
    ddpm_train.run(c, wd)
    assert [int(b.step) for b, _, _ in records] == list(range(total))
    logged = [json.loads(line)["loss"] for line in open(os.path.join(wd, "train_log.jsonl"))]

    model = UNet2DModel(UNetConfig.from_dict(dict(c.unet)))
    apply = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t))
    abar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))                # linear β schedule, float64
    train_key = jax.random.split(jax.random.PRNGKey(c.seed))[1]

    def lr_closed(s):  # warm-up 1 step from 0, constant, cosine from `start` to `total`
        if s < 1:
            return 0.0
        if s < start:
            return lr
        return final + (lr - final) * 0.5 * (1 + math.cos(math.pi * (s - start) / (total - start)))

    n_weighted = 0
    for s, (before, x0, after) in enumerate(records):
        refining = s >= start
        # loss: per-sample ε-MSE at the step's (t, ε), then the closed-form weights
        kt, ke = jax.random.split(jax.random.fold_in(train_key, s))
        t = np.asarray(jax.random.randint(kt, (x0.shape[0],), 0, 1000))
        eps = np.asarray(jax.random.normal(ke, x0.shape, jnp.float32))
        a = abar[t][:, None, None, None]
        x_t = (np.sqrt(a) * x0 + np.sqrt(1 - a) * eps).astype(np.float32)
        mse = np.mean((np.asarray(apply(before.params, x_t, t), np.float64) - eps) ** 2, axis=(1, 2, 3))
        snr = abar[t] / (1 - abar[t])
        w = np.minimum(snr, gamma) / snr if refining else np.ones_like(snr)
        np.testing.assert_allclose(logged[s], np.mean(w * mse), rtol=2e-5, err_msg=f"loss at step {s}")
        if refining and abs(np.mean(w * mse) - mse.mean()) > 1e-3 * mse.mean():
            n_weighted += 1
        # lr: the Adam step is -lr(s) * m_hat / (sqrt(v_hat) + eps) with the moments after the step (count s + 1)
        adam = _adam_state(after.opt_state)
        assert int(adam.count) == s + 1
        dirs = jax.tree.map(lambda m, v: (m / (1 - 0.9 ** (s + 1))) / (np.sqrt(v / (1 - 0.999 ** (s + 1))) + 1e-8),
                            adam.mu, adam.nu)
        dp = jax.tree.map(lambda p1, p0: p1.astype(np.float64) - p0, after.params, before.params)
        num = sum(float(np.sum(d * u)) for d, u in zip(jax.tree.leaves(dp), jax.tree.leaves(dirs)))
        den = sum(float(np.sum(u.astype(np.float64) ** 2)) for u in jax.tree.leaves(dirs))
        np.testing.assert_allclose(-num / den, lr_closed(s), rtol=1e-3, atol=1e-9, err_msg=f"lr at step {s}")
        # EMA: d * e + (1 - d) * p of the new params, d switching at the refine step
        d = ema1 if refining else ema0
        for e1, e0, p1 in zip(jax.tree.leaves(after.ema_params), jax.tree.leaves(before.ema_params),
                              jax.tree.leaves(after.params)):
            np.testing.assert_allclose(e1, d * e0.astype(np.float64) + (1 - d) * p1, rtol=1e-5, atol=1e-7,
                                       err_msg=f"EMA at step {s}")
    assert n_weighted >= 1, "the min-SNR weights must change the loss of some refine step for the test to mean anything"
    assert lr_closed(total - 1) < 0.5 * lr  # the decay is visible in the checked steps
