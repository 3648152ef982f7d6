"""The shipped SynthFaces DDPMs (diffusers folder format): assets/ddpm_synthfaces (the editing world, 6000 steps)
and assets/ddpm_synthfaces_refined (the sampler, +3000 refine steps) load through our converter and through
diffusers itself with the same ε, their scheduler_config.json is diffusers' DDIMScheduler config, and the
sampler's 20-step DDIM samples from a fixed seed include faces the probe accepts, where a random init's include
none."""
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
from jaxhspace.world import DEFAULT_DDPM, DEFAULT_PROBE, SAMPLER_DDPM, load_schedule


def _load(path):
    assert os.path.isfile(os.path.join(path, "diffusion_pytorch_model.safetensors")), \
        f"{path} is missing: train it with configs/ddpm_synthfaces.py"
    model, params = load_unet(path)
    return model, params, load_schedule(path)


@pytest.fixture(scope="module")
def shipped():
    return _load(SAMPLER_DDPM)


@pytest.mark.parametrize("path", [DEFAULT_DDPM, SAMPLER_DDPM], ids=["editing", "sampler"])
def test_loads_in_diffusers_with_same_eps(path):
    from diffusers import DDIMScheduler, UNet2DModel

    model, params, schedule = _load(path)
    tm = UNet2DModel.from_pretrained(path).eval()
    assert sum(p.numel() for p in tm.parameters()) == sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    t = np.array([10, 700])
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(x), jnp.asarray(t)))
    with torch.no_grad():
        ref = tm(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(t)).sample.permute(0, 2, 3, 1).numpy()
    assert np.max(np.abs(ours - ref)) < 2e-5
    sched = DDIMScheduler.from_pretrained(path)
    np.testing.assert_allclose(np.asarray(schedule.alphas_cumprod), sched.alphas_cumprod.numpy(), rtol=1e-6)


MIN_FACES = 16


def test_twenty_step_samples_are_faces_a_random_init_never_makes(shipped):
    """20-step DDIM (x0 clipped, diffusers clip_sample=True), 32 samples from seed 0, scored by the probe (an
    independent model): a sample counts as a face when every factor is read in range *and* its probe features lie
    in the data's 99% Mahalanobis ball (``probe.in_distribution``; the per-factor check alone also accepts a third
    of a random UNet's clipped samples). Measured: the sampler 23 of 32 (the 6000-step editing model: 4), random
    init 0 of 32 (guarded at MIN_FACES = 16); and the Fréchet distance on probe features to 32 SynthFaces faces
    is well below the random init's."""
    from jaxhspace.data import synthfaces

    model, params, schedule = shipped
    pparams = probe.load_probe(DEFAULT_PROBE)
    gauss = probe.fit_feature_gaussian(pparams)
    x_T = jax.random.normal(jax.random.PRNGKey(0), (32, 32, 32, 3))
    ts = sampling_grid("asyrp", 20)
    data = probe.probe_features(pparams, jnp.asarray(synthfaces.generate(12345, 32, size=32)[0]))

    def score(p):
        x0 = np.clip(np.asarray(ddim_sample(clipped_eps_fn(eps_fn(model, p), schedule), x_T, ts, schedule)), -1, 1)
        feats = probe.probe_features(pparams, jnp.asarray(x0))
        faces = probe.is_valid_face(probe.score(pparams, x0, probs=True)) & gauss.contains(feats)
        return int(faces.sum()), probe.frechet_distance(feats, data)

    random_params = model.init(jax.random.PRNGKey(1), x_T[:1], jnp.zeros((1,), jnp.int32))["params"]
    (n_shipped, fd_shipped), (n_random, fd_random) = score(params), score(random_params)
    print(f"\n[sampler DDPM] 32 clipped 20-step samples: faces {n_shipped} (random init {n_random}), probe Fréchet "
          f"distance {fd_shipped:.1f} (random init {fd_random:.1f})", end="")
    assert n_random == 0
    assert n_shipped >= MIN_FACES
    assert fd_shipped < 0.8 * fd_random
