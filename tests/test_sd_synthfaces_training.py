"""The trainers of the text-conditioned default (tiny configs): exact resume, exports that diffusers/transformers load
with our outputs, and the loss pieces against closed forms / torch."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxhspace.tasks import latent_ddpm_train_job as latent_ddpm_train, vae_train_job as vae_train
from jaxhspace.training import vae
from jaxhspace.world import DEFAULT_CLIP


def _vae_config(**over):
    from jaxhspace.configs.sd_synthfaces.vae import get_config

    c = get_config()
    c.vae = dict(c.vae, block_out_channels=[8, 16, 16], norm_num_groups=4)
    c.update(batch_size=4, total_steps=4, warmup_steps=1, checkpoint_every=2, log_every=1, max_minutes=0.0)
    c.update(over)
    return c


def _unet_config(vae_path, **over):
    from jaxhspace.configs.sd_synthfaces.unet import get_config

    c = get_config()
    c.unet = dict(c.unet, block_out_channels=[8, 16], attention_head_dim=2, norm_num_groups=4)
    c.update(vae_path=vae_path, clip_path=DEFAULT_CLIP, batch_size=4, total_steps=4, warmup_steps=1,
             checkpoint_every=2, log_every=1, max_minutes=0.0)
    c.update(over)
    return c


@pytest.fixture(scope="module")
def vae_runs(tmp_path_factory):
    """One uninterrupted 4-step VAE run and one stopped after a step and resumed."""
    root = tmp_path_factory.mktemp("vae")
    a, b = str(root / "a"), str(root / "b")
    ma = vae_train.run(_vae_config(export_dir=str(root / "ea")), a)
    mb1 = vae_train.run(_vae_config(export_dir=str(root / "eb"), max_minutes=1e-9), b)
    mb2 = vae_train.run(_vae_config(export_dir=str(root / "eb")), b)
    return root, ma, mb1, mb2


def _weights(folder, name):
    from safetensors.numpy import load_file

    return load_file(os.path.join(folder, name))


def test_vae_resume_equals_uninterrupted(vae_runs):
    root, ma, mb1, mb2 = vae_runs
    assert mb1["stopped_early"] and mb1["steps_done"] == 1 and mb2["steps_done"] == 4
    wa = _weights(root / "ea", "diffusion_pytorch_model.safetensors")
    wb = _weights(root / "eb", "diffusion_pytorch_model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    assert ma["scaling_factor"] == mb2["scaling_factor"]
    # final_loss covers the steps of the interrupted run too (the log holds every step: log_every=1)
    log = [json.loads(line)["loss"] for line in open(os.path.join(root, "a", "train_log.jsonl"))]
    assert len(log) == 4 and mb2["final_loss"] == pytest.approx(ma["final_loss"]) == pytest.approx(np.mean(log))


def test_vae_export_loads_in_diffusers_with_our_outputs(vae_runs):
    """diffusers' AutoencoderKL reads the export: same parameter count, posterior mean and decode within 2e-5;
    the exported scaling_factor is 1/std of posterior samples of the held-out faces (recomputed with torch)."""
    from diffusers import AutoencoderKL

    from jaxhspace.checkpoints.vae import load_vae
    from jaxhspace.data import synthfaces

    root, ma, _, _ = vae_runs
    tv = AutoencoderKL.from_pretrained(str(root / "ea")).eval()
    assert sum(p.numel() for p in tv.parameters()) == ma["params"]
    jv, jp = load_vae(str(root / "ea"))
    x, _ = synthfaces.generate(5, 3)
    with torch.no_grad():
        dist = tv.encode(torch.from_numpy(x.transpose(0, 3, 1, 2))).latent_dist
        dec = tv.decode(dist.mean).sample.numpy().transpose(0, 2, 3, 1)
    ours = jv.apply({"params": jp}, jnp.asarray(x), method=jv.encode)
    np.testing.assert_allclose(np.asarray(ours.mean), dist.mean.numpy().transpose(0, 2, 3, 1), atol=2e-5)
    np.testing.assert_allclose(np.asarray(jv.apply({"params": jp}, ours.mean, method=jv.decode)), dec, atol=2e-5)
    assert tv.config.scaling_factor == pytest.approx(ma["scaling_factor"])
    held, _ = synthfaces.generate(777, 1024)
    with torch.no_grad():
        d = tv.encode(torch.from_numpy(held.transpose(0, 3, 1, 2))).latent_dist
    # same posterior, independent noise: the std of samples agrees to sampling error (~1/sqrt(16k))
    assert ma["scaling_factor"] == pytest.approx(1.0 / float(d.sample().std()), rel=0.03)
    assert np.isfinite(ma["heldout"]["mse"]) and "probe_smile_abs_diff" in ma["heldout"]


def test_kl_matches_torch_distributions():
    mean = np.random.default_rng(0).normal(size=(2, 3, 3, 4)).astype(np.float32)
    logvar = np.random.default_rng(1).normal(size=(2, 3, 3, 4)).astype(np.float32) * 0.5
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(torch.from_numpy(mean), torch.from_numpy(np.exp(0.5 * logvar))),
        torch.distributions.Normal(0.0, 1.0)).sum(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(np.asarray(vae.kl_to_standard_normal(jnp.asarray(mean), jnp.asarray(logvar))), ref,
                               rtol=1e-5)


@pytest.fixture(scope="module")
def unet_runs(vae_runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("unet")
    vae_path = str(vae_runs[0] / "ea")
    a, b = str(root / "a"), str(root / "b")
    ma = latent_ddpm_train.run(_unet_config(vae_path, export_dir=str(root / "ea")), a)
    latent_ddpm_train.run(_unet_config(vae_path, export_dir=str(root / "eb"), max_minutes=1e-9), b)
    mb = latent_ddpm_train.run(_unet_config(vae_path, export_dir=str(root / "eb")), b)
    return root, ma, mb


def test_latent_ddpm_resume_equals_uninterrupted(unet_runs):
    root, ma, mb = unet_runs
    assert ma["steps_done"] == mb["steps_done"] == 4
    wa = _weights(root / "ea" / "unet", "diffusion_pytorch_model.safetensors")
    wb = _weights(root / "eb" / "unet", "diffusion_pytorch_model.safetensors")
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


def test_exported_pipeline_loads_in_diffusers_with_our_outputs(unet_runs):
    """The export is a StableDiffusionPipeline folder: diffusers/transformers load every component, and the UNet's
    ε (with the text encoder's hidden states) and the VAE decode equal ours within 2e-5; the text encoder is the
    shipped CLIP's text tower (transformers' CLIPModel.text_model gives the same hidden states)."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel

    from jaxhspace.checkpoints.pipeline import encode_prompt, latents_to_images, load_pipeline

    root, ma, _ = unet_runs
    folder = str(root / "ea")
    tp = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    ours = load_pipeline(folder)
    assert sum(p.numel() for p in tp.unet.parameters()) == ma["params"]
    prompts = ["a smiling face with red hair", ""]
    ids = tp.tokenizer(prompts, padding="max_length", max_length=tp.tokenizer.model_max_length, truncation=True,
                       return_tensors="pt").input_ids
    with torch.no_grad():
        ctx_t = tp.text_encoder(ids)[0]
        ctx_clip = CLIPModel.from_pretrained(DEFAULT_CLIP).text_model(ids)[0]
    ctx = encode_prompt(ours, prompts)
    np.testing.assert_allclose(np.asarray(ctx), ctx_t.numpy(), atol=2e-5)
    np.testing.assert_allclose(ctx_t.numpy(), ctx_clip.numpy(), atol=1e-6)
    z = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype(np.float32)
    t = np.array([10, 700])
    with torch.no_grad():
        eps_t = tp.unet(torch.from_numpy(z.transpose(0, 3, 1, 2)), torch.from_numpy(t), ctx_t).sample
        img_t = tp.vae.decode(torch.from_numpy(z.transpose(0, 3, 1, 2)) / tp.vae.config.scaling_factor).sample
    eps = ours.unet.apply({"params": ours.unet_params}, jnp.asarray(z), jnp.asarray(t), encoder_hidden_states=ctx)
    np.testing.assert_allclose(np.asarray(eps), eps_t.numpy().transpose(0, 2, 3, 1), atol=2e-5)
    np.testing.assert_allclose(np.asarray(latents_to_images(ours, z)), img_t.numpy().transpose(0, 2, 3, 1),
                               atol=2e-5)
    sched = json.load(open(os.path.join(folder, "scheduler", "scheduler_config.json")))
    assert sched["beta_schedule"] == "scaled_linear" and tp.scheduler.config.steps_offset == 1


def test_captions_drop_and_are_a_function_of_the_step():
    from jaxhspace.configs.sd_synthfaces.unet import get_config
    from jaxhspace.data import synthfaces

    c = get_config()
    _, f = synthfaces.generate(3, 2000)
    caps = latent_ddpm_train.batch_captions(c, 7, f)
    assert caps == latent_ddpm_train.batch_captions(c, 7, f) and caps != latent_ddpm_train.batch_captions(c, 8, f)
    empty = np.mean([x == "" for x in caps])
    assert abs(empty - c.caption_dropout) < 0.03, empty
    assert all(x.startswith("a ") for x in caps if x)


def test_latent_trainer_rejects_missing_vae(tmp_path):
    with pytest.raises(ValueError, match="vae_path"):
        latent_ddpm_train.run(_unet_config(str(tmp_path / "nope")), str(tmp_path / "w"))
