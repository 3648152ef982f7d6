"""Park's pullback job on an NCSN++ (VE-SDE) folder: a tiny random diffusers UNet2DModel (fourier embedding, Skip
blocks; test_ncsnpp's TINY_NCSNPP at 8 px) saved with a ScoreSdeVeScheduler as a diffusers ScoreSdeVePipeline,
run through ``get_task("pullback")`` with configs/ncsnpp/pullback.py. References: the singular values of a dense
float64 PyTorch Jacobian of diffusers' mid-block output at the same x_σ; diffusers' own ScoreSdeVeScheduler loop
(with our injected noise) for sampling from σ; the VE World's detection and [0, 1] data range."""
import copy
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image

from jaxhspace.data.images import load_images
from jaxhspace.diffusion import ve_sde
from jaxhspace.errors import JaxhspaceError
from jaxhspace.tasks import get_task
from jaxhspace.tasks.inputs import load_world, noise_to_sigma, ve_continue_sampling
from test_ncsnpp import TINY_NCSNPP
from unet_fixtures import make_torch_unet, max_abs

SIZE = 8  # 4 downsamples -> h is 1x1x64, x has 192 dims: the dense Jacobian is cheap
SCHED = dict(sigma_min=0.01, sigma_max=5.0, snr=0.16, correct_steps=1, sampling_eps=1e-5)
N_STEPS, EDIT_SIGMA = 6, 0.5


@pytest.fixture(scope="module")
def ve_folder(tmp_path_factory):
    """(torch UNet, pipeline folder, image folder): ScoreSdeVePipeline.save_pretrained (model_index.json, unet/,
    scheduler/) and two 8x8 PNG images."""
    from diffusers import ScoreSdeVePipeline, ScoreSdeVeScheduler

    root = tmp_path_factory.mktemp("ncsnpp_job")
    torch_model = make_torch_unet({**TINY_NCSNPP, "sample_size": SIZE}, seed=5)
    ScoreSdeVePipeline(unet=torch_model, scheduler=ScoreSdeVeScheduler(**SCHED)).save_pretrained(str(root / "pipe"))
    img_dir = root / "images"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(img_dir / f"{i}.png")
    return torch_model, str(root / "pipe"), str(img_dir)


def _config(folder, images, **over):
    from configs.ncsnpp.pullback import get_config

    c = get_config()
    c.model_path, c.image_paths = folder, (images,)
    c.n_steps, c.edit_sigma, c.k, c.n_dirs, c.n_edit_steps = N_STEPS, EDIT_SIGMA, 3, 1, 2
    c.svd_tol, c.svd_max_iters = 1e-7, 60
    for k, v in over.items():
        c[k] = v
    return c


def _torch_h_jacobian(torch_model, x_hwc: np.ndarray, sigma: float) -> np.ndarray:
    """Dense ∂h/∂x (float64, [h*w*C_mid, H*W*C] in NHWC order) of diffusers' mid-block output, by torch autograd."""
    model = copy.deepcopy(torch_model).double()
    captured = {}
    handle = model.mid_block.register_forward_hook(lambda m, i, out: captured.__setitem__("h", out))

    def h(flat):
        x = flat.reshape(1, *x_hwc.shape).permute(0, 3, 1, 2)
        model(x, torch.tensor([sigma], dtype=torch.float64))
        return captured["h"].permute(0, 2, 3, 1).reshape(-1)

    try:
        jac = torch.autograd.functional.jacobian(h, torch.from_numpy(x_hwc.astype(np.float64).ravel()))
    finally:
        handle.remove()
    return jac.numpy()


def test_pullback_job_on_ncsnpp(ve_folder, tmp_path):
    """The job runs; its σ is diffusers' grid point nearest edit_sigma; its singular values equal a dense torch
    Jacobian SVD at x_σ = (img + 1)/2 + σ z (z from the documented key, rtol 1e-4); with γ = 0 every edited column
    of the grid equals the reconstruction."""
    from diffusers import ScoreSdeVeScheduler

    torch_model, folder, images = ve_folder
    c = _config(folder, images, gamma=0.0)
    m = get_task("pullback")(c, str(tmp_path / "wd"))
    assert m["model_kind"] == "ve" and m["ve_steps"] == N_STEPS and (m["snr"], m["correct_steps"]) == (0.15, 1)

    sched = ScoreSdeVeScheduler(**SCHED)
    sched.set_timesteps(N_STEPS)
    sched.set_sigmas(N_STEPS)
    sig = sched.sigmas.numpy()
    i = int(np.argmin(np.abs(np.log(sig) - np.log(EDIT_SIGMA))))
    assert m["ve_start_step"] == i and m["edit_sigma"] == pytest.approx(float(sig[i]), rel=2e-6)

    x0 = (load_images([images], SIZE) + 1.0) / 2.0
    noise_key, _ = jax.random.split(jax.random.PRNGKey(c.seed))
    x_sigma = x0 + m["edit_sigma"] * np.asarray(jax.random.normal(noise_key, x0.shape))
    errs = []
    for n in range(x0.shape[0]):
        s_dense = np.linalg.svd(_torch_h_jacobian(torch_model, x_sigma[n], m["edit_sigma"]), compute_uv=False)[:c.k]
        s = np.asarray(m["singular_values"][n])
        errs.append(float(np.max(np.abs(s - s_dense) / s_dense)))
        np.testing.assert_allclose(s, s_dense, rtol=1e-4)
    print(f"\nNCSN++ pullback job at sigma {m['edit_sigma']:.4f}: singular values rel err vs dense torch "
          f"{max(errs):.1e}")

    grid = np.asarray(Image.open(m["grid"]), np.int32)  # rows: images; cols: input, recon, v0-, v0+
    pad, cols = 2, m["columns"]

    def tile(r, col):
        y, x = pad + r * (SIZE + pad), pad + col * (SIZE + pad)
        return grid[y:y + SIZE, x:x + SIZE]

    assert cols == ["input", "reconstruction", "v0-", "v0+"]
    for r in range(x0.shape[0]):
        assert np.max(np.abs(tile(r, 0) - tile(r, 1))) > 10  # sampling moved the image
        for col in (2, 3):
            assert np.max(np.abs(tile(r, col) - tile(r, 1))) <= 1  # γ = 0: the unedited sample (up to rounding)


def test_continue_from_sigma_matches_diffusers(ve_folder):
    """ve_continue_sampling from step ``start`` equals diffusers' ScoreSdeVeScheduler loop over the remaining steps
    (step_correct / step_pred with our z's), and every group gets the same noise per image."""
    from diffusers import ScoreSdeVeScheduler
    import diffusers.schedulers.scheduling_sde_ve as sde_mod

    torch_model, folder, images = ve_folder
    world = load_world(_config(folder, images))
    key = jax.random.PRNGKey(3)
    x0 = (jnp.asarray(load_images([images], SIZE)) + 1.0) / 2.0
    x_sigma, sigma, start, schedule = noise_to_sigma(world, x0, N_STEPS, EDIT_SIGMA, jax.random.PRNGKey(4))
    ours = np.asarray(ve_continue_sampling(world.model, world.params, jnp.stack([x_sigma, x_sigma]), schedule, start,
                                           key, SCHED["snr"], 1))
    np.testing.assert_array_equal(ours[0], ours[1])

    scheduler = ScoreSdeVeScheduler(**SCHED)
    scheduler.set_timesteps(N_STEPS)
    scheduler.set_sigmas(N_STEPS)
    assert sigma == pytest.approx(float(scheduler.sigmas[start]), rel=2e-6)
    queue = [torch.from_numpy(np.ascontiguousarray(np.asarray(ve_sde.step_noise(key, i, j, x0.shape)).transpose(
        0, 3, 1, 2))) for i in range(start, N_STEPS) for j in range(2)]
    orig = sde_mod.randn_tensor
    sde_mod.randn_tensor = lambda shape, **kw: queue.pop(0)
    try:
        sample = torch.from_numpy(np.ascontiguousarray(np.asarray(x_sigma).transpose(0, 3, 1, 2)))
        with torch.no_grad():
            for i in range(start, N_STEPS):
                t = scheduler.timesteps[i]
                sigma_t = scheduler.sigmas[i] * torch.ones(sample.shape[0])
                sample = scheduler.step_correct(torch_model(sample, sigma_t).sample, sample).prev_sample
                out = scheduler.step_pred(torch_model(sample, sigma_t).sample, t, sample)
                sample, mean = out.prev_sample, out.prev_sample_mean
    finally:
        sde_mod.randn_tensor = orig
    assert not queue
    ref = mean.numpy().transpose(0, 2, 3, 1)
    err = max_abs(ours[0], ref) / max(1.0, float(np.max(np.abs(ref))))
    print(f"\ncontinue from sigma {sigma:.4f} (step {start}): scaled err vs diffusers {err:.1e}")
    assert err <= 1e-4


def test_ve_world_detection(ve_folder, tmp_path):
    """A pipeline folder, a UNet folder with scheduler_config.json, and a bare fourier UNet (warning) are VE worlds
    with x in [0, 1]; a fourier UNet beside a DDPM scheduler config is rejected; a DDPM config on a VE model names
    config.edit_sigma."""
    from configs.pullback import get_config as ddpm_config

    torch_model, folder, images = ve_folder
    world = load_world(_config(folder, images))
    assert world.kind == "ve" and world.schedule["sigma_max"] == SCHED["sigma_max"] and world.image_size == SIZE
    img = np.array([[[[-1.0, 0.0, 1.0]]]], np.float32)
    np.testing.assert_allclose(np.asarray(world.to_x(img)), [[[[0.0, 0.5, 1.0]]]])
    np.testing.assert_allclose(world.to_images(np.array([[[[-0.2, 0.25, 1.3]]]])), [[[[-1.0, -0.5, 1.0]]]])

    flat = tmp_path / "flat"
    torch_model.save_pretrained(str(flat))
    with open(os.path.join(folder, "scheduler", "scheduler_config.json")) as f:
        sched_cfg = json.load(f)
    with pytest.warns(UserWarning, match="ScoreSdeVeScheduler defaults"):
        assert load_world(_config(str(flat), images)).schedule == {"_class_name": "ScoreSdeVeScheduler"}
    (flat / "scheduler_config.json").write_text(json.dumps(sched_cfg))
    assert load_world(_config(str(flat), images)).schedule["sigma_max"] == SCHED["sigma_max"]
    (flat / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler"}))
    with pytest.raises(ValueError, match="fourier.*DDPMScheduler"):
        load_world(_config(str(flat), images))

    c = ddpm_config()
    c.model_path, c.image_paths = folder, (images,)
    with pytest.raises(JaxhspaceError, match="config.edit_sigma"):
        get_task("pullback")(c, str(tmp_path / "wd"))


def test_ncsnpp_config(tmp_path):
    """configs/ncsnpp/pullback.py: the DDPM job's fields minus edit_t / t_boost plus the VE ones, the command in its
    docstring, and its placeholder model_path rejected naming the field."""
    import configs.ncsnpp.pullback as mod
    from configs.pullback import get_config as ddpm_config

    c, base = mod.get_config(), ddpm_config()
    assert set(base.keys()) - set(c.keys()) == {"edit_t", "t_boost"}
    assert set(c.keys()) - set(base.keys()) == {"edit_sigma", "snr", "correct_steps"}
    assert "python -m jaxhspace.main --config configs/ncsnpp/pullback.py" in mod.__doc__
    with pytest.raises(ValueError, match="model_path"):
        get_task("pullback")(c, str(tmp_path / "wd"))
