"""The shipped SynthFaces DDPM (assets/ddpm_synthfaces, diffusers folder format): it loads through our converter
and through diffusers itself with the same ε, its scheduler_config.json is diffusers' DDIMScheduler config, and
20-step DDIM samples from a fixed seed are closer to faces (probe-feature Fréchet distance) than a random init's."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxhspace.checkpoints import load_unet
from jaxhspace.data import probe
from jaxhspace.diffusion.ddim import clipped_eps_fn, ddim_sample
from jaxhspace.models.functional import eps_fn
from jaxhspace.tasks.common import sampling_grid
from jaxhspace.world import DEFAULT_DDPM, DEFAULT_PROBE, load_schedule


@pytest.fixture(scope="module")
def shipped():
    assert os.path.isfile(os.path.join(DEFAULT_DDPM, "diffusion_pytorch_model.safetensors")), \
        "assets/ddpm_synthfaces is missing: train it with configs/ddpm_synthfaces.py"
    model, params = load_unet(DEFAULT_DDPM)
    return model, params, load_schedule(DEFAULT_DDPM)


def test_loads_in_diffusers_with_same_eps(shipped):
    from diffusers import DDIMScheduler, UNet2DModel

    model, params, schedule = shipped
    tm = UNet2DModel.from_pretrained(DEFAULT_DDPM).eval()
    assert sum(p.numel() for p in tm.parameters()) == sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    t = np.array([10, 700])
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(x), jnp.asarray(t)))
    with torch.no_grad():
        ref = tm(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(t)).sample.permute(0, 2, 3, 1).numpy()
    assert np.max(np.abs(ours - ref)) < 2e-5
    sched = DDIMScheduler.from_pretrained(DEFAULT_DDPM)
    np.testing.assert_allclose(np.asarray(schedule.alphas_cumprod), sched.alphas_cumprod.numpy(), rtol=1e-6)


def test_twenty_step_samples_are_closer_to_faces_than_a_random_init(shipped):
    """20-step DDIM (x0 clipped, diffusers clip_sample=True), 32 samples from seed 0: the Fréchet distance on probe
    features to 32 SynthFaces faces is below that of the same sampler on a random-init UNet of the same config
    (measured 57 vs 79: a weak sampler, small margin; guarded at 0.8x). The probe's per-image validity check is
    not used: it also accepts half of a random UNet's clipped samples, so it cannot tell a face from clipped
    noise. The issue's 90% validity target is not met by this 6000-step model (see README)."""
    from jaxhspace.data import synthfaces

    model, params, schedule = shipped
    pparams = probe.load_probe(DEFAULT_PROBE)
    x_T = jax.random.normal(jax.random.PRNGKey(0), (32, 32, 32, 3))
    ts = sampling_grid("asyrp", 20)
    data = probe.probe_features(pparams, jnp.asarray(synthfaces.generate(12345, 32, size=32)[0]))

    def fd(p):
        x0 = np.clip(np.asarray(ddim_sample(clipped_eps_fn(eps_fn(model, p), schedule), x_T, ts, schedule)), -1, 1)
        return probe.frechet_distance(probe.probe_features(pparams, jnp.asarray(x0)), data)

    random_params = model.init(jax.random.PRNGKey(1), x_T[:1], jnp.zeros((1,), jnp.int32))["params"]
    fd_shipped, fd_random = fd(params), fd(random_params)
    print(f"\n[shipped DDPM] probe Fréchet distance, 32 clipped 20-step samples: {fd_shipped:.1f} "
          f"(random init: {fd_random:.1f})", end="")
    assert fd_shipped < 0.8 * fd_random
