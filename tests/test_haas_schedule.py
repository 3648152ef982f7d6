"""Haas et al.'s per-timestep σ_k(t) schedule (issue #19 item 1), against a step-by-step torch re-implementation of
the official procedure (renhaa/semantic-diffusion@91f0a15): ``calc_power_dirs`` walks the unedited reverse
process from x_T and takes the SVD of J = ∂ε/∂h (mid-block output, skips fixed) at every step
(editing/jacobian.py:199-223); ``get_direction(global_at_idx=True, apply_svals=True)`` repeats v_k(t_J) at every
step and multiplies step t by that step's σ_k(t) (editing/direction_plotter.py:113-121); the edit is plain DDIM on
the edited ε (symmetric, η = 0)."""
import numpy as np
import pytest
import torch
from PIL import Image

import configs.haas as haas_config
from jaxhspace.tasks import get_task
from tests.unet_fixtures import make_torch_unet

TINY = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=[16, 32], layers_per_block=1,
            down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"],
            norm_num_groups=8, norm_eps=1e-6, attention_head_dim=None, downsample_padding=0,
            flip_sin_to_cos=False, freq_shift=1, act_fn="silu")
N_STEPS, T_J, K = 3, 600, 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("haas")
    unet = make_torch_unet(TINY, seed=3)
    unet.save_pretrained(str(root / "unet"))
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "face.png")
    c = haas_config.get_config()
    c.model_path, c.image_paths, c.num_images = str(root / "unet"), (str(root / "face.png"),), 1
    c.n_steps, c.jacobian_t, c.k, c.n_dirs, c.svd_tol, c.svd_max_iters = N_STEPS, T_J, K, K, 1e-7, 60
    c.scales, c.upscale = (-30.0, 30.0), 1
    return unet, c, root


def _torch_official(unet, x_T, ts, alphas, k, v_dirs=None, scale=0.0, sig_dirs=None, jacobian=True):
    """Walk the reverse DDIM (η = 0) from x_T [1,H,W,C] NHWC over ``ts``; at each step the dense J = ∂ε/∂h, its σ
    and right singular vectors (calc_power_dirs); with ``v_dirs`` [h,w,C] add Δh_t = scale·σ(t)·v at every step
    (get_direction). Returns (σ [S, k], v [S, k, h, w, C], x_0 [1, H, W, C])."""
    x = torch.from_numpy(np.ascontiguousarray(np.transpose(x_T, (0, 3, 1, 2)))).double()
    unet = unet.double()
    sig, vecs = [], []
    for i, t in enumerate(ts):
        tt = torch.tensor([int(t)])
        with torch.no_grad():
            h0 = {}
            hk = unet.mid_block.register_forward_hook(lambda m, a, o: h0.setdefault("h", o.detach()))
            unet(x, tt)
            hk.remove()

        def f(h):
            hk = unet.mid_block.register_forward_hook(lambda m, a, o: h)
            try:
                return unet(x, tt).sample.reshape(-1)
            finally:
                hk.remove()

        if jacobian:  # (False: only the walk, for edits)
            J = torch.autograd.functional.jacobian(f, h0["h"], vectorize=True).reshape(x.numel(), -1)
            _, s, vh = torch.linalg.svd(J, full_matrices=False)
            sig.append(s[:k].numpy())
            vecs.append(vh[:k].reshape((k,) + tuple(h0["h"].shape[1:])).permute(0, 2, 3, 1).numpy())  # [k, h, w, C]
        dh = None
        if v_dirs is not None:
            dh = scale * float(sig_dirs[i]) * torch.from_numpy(np.transpose(v_dirs, (2, 0, 1))[None]).double()
        hk = unet.mid_block.register_forward_hook(lambda m, a, o: o if dh is None else o + dh)
        with torch.no_grad():
            eps = unet(x, tt).sample
        hk.remove()
        a_t = alphas[int(t)]
        a_p = alphas[int(ts[i + 1])] if i + 1 < len(ts) else 1.0
        x0 = (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        x = np.sqrt(a_p) * x0 + np.sqrt(1 - a_p) * eps
    unet.float()
    if not jacobian:
        return None, None, x.float().numpy().transpose(0, 2, 3, 1)
    return np.stack(sig), np.stack(vecs), x.float().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("batch_steps", [1, 2])
def test_haas_job_uses_per_step_sigma_like_the_official(setup, tmp_path, monkeypatch, batch_steps):
    """σ_k(t) at every grid step of the job (default ``sigma_schedule="per_step"``) equal the torch walk's dense SVD,
    and an edit with the job's Δh table equals the official get_direction edit (v_k(t_J) repeated, ×σ_k(t));
    one SVD at a time and ``svd_batch_steps=2`` (the per-step SVDs in one batched loop)."""
    from diffusers import DDIMScheduler

    from jaxhspace.diffusion.schedule import asyrp_timesteps
    from jaxhspace.directions.haas import haas_schedule_delta
    from jaxhspace.editing.asyrp_edit import asyrp_edit, invert
    from jaxhspace.tasks.inputs import load_world, test_images

    import jaxhspace.data.images as images_mod

    grids, make_grid = [], images_mod.make_grid
    monkeypatch.setattr(images_mod, "make_grid", lambda images, *a, **kw: (grids.append(np.asarray(images)),
                                                                          make_grid(images, *a, **kw))[1])
    import jaxhspace.tasks.haas_job as haas_job

    calls, trajectory = [], haas_job.haas_trajectory_svd
    monkeypatch.setattr(haas_job, "haas_trajectory_svd",
                        lambda *a, **kw: (calls.append(kw.get("batch_steps")), trajectory(*a, **kw))[1])
    unet, c, _ = setup
    c = c.copy_and_resolve_references()
    c.svd_batch_steps = batch_steps
    m = get_task("haas")(c, str(tmp_path / "job"))
    assert calls == [batch_steps]  # the job solved its per-step SVDs the way the config asked
    assert m["sigma_schedule"] == "per_step"
    ts = [int(t) for t in asyrp_timesteps(N_STEPS, 999)[::-1]]
    tj = m["jacobian_t"]
    assert m["sigma_schedule_timesteps"] == ts and tj == ts[1]
    world = load_world(c)
    x_lat = np.asarray(invert(world.model, world.params, world.schedule, world.to_x(test_images(c, world)), N_STEPS))
    alphas = DDIMScheduler().alphas_cumprod.double().numpy()
    sig_ref, v_ref, plain = _torch_official(unet, x_lat, ts, alphas, K)             # [S, k], [S, k, h, w, C]
    np.testing.assert_allclose(np.asarray(m["sigma_per_step"][0]), sig_ref.T, rtol=2e-4)
    assert sig_ref[:, 0].max() / sig_ref[:, 0].min() > 1.2, "σ(t) must vary over t for this test to mean anything"
    np.testing.assert_allclose(m["singular_values"][0], sig_ref[ts.index(tj)], rtol=2e-4)

    # the edit: Δh_t = scale·σ_0(t)·v_0(t_J) at every step, symmetric DDIM; the job's σ(t), torch's v(t_J)
    j, scale = ts.index(tj), 30.0
    delta = haas_schedule_delta(np.asarray(m["sigma_per_step"][0]).T, v_ref, ts, j, [0])
    ours = np.asarray(asyrp_edit(world.model, world.params, world.schedule, x_lat=x_lat, delta=delta, scales=[scale],
                                 stacked=True, n_test=N_STEPS, t_edit=0, t_boost=0, symmetric=True))[0, 0, 0]
    _, _, ref = _torch_official(unet, x_lat, ts, alphas, K, v_ref[j, 0], scale, sig_ref[:, 0])
    assert np.abs(ref - plain).max() > 1e-2, "the edit must change the image"
    err = np.abs(ours - ref[0]).max() / np.abs(ref[0]).max()
    print(f"\nhaas per-step edit vs torch official: relative max error {err:.1e}")
    assert err < 2e-5

    # the job's own grid (issue #19): columns "v0 x30" / "v0 x-30" are the official edit with +30 / -30 (the global
    # sign of v_0 is arbitrary, so the two columns must match opposite signs of torch's v); σ_0(t) per step is in it
    _, _, ref_minus = _torch_official(unet, x_lat, ts, alphas, K, v_ref[j, 0], -scale, sig_ref[:, 0], jacobian=False)
    grid = [g for g in grids if g.ndim == 5 and g.shape[1] == len(m["columns"])][-1][0]  # [columns, H, W, C]
    plus, minus = grid[m["columns"].index("v0 x30")], grid[m["columns"].index("v0 x-30")]

    def rel(a, b):
        return np.abs(a - b).max() / np.abs(b).max()

    job_err = min(max(rel(plus, ref[0]), rel(minus, ref_minus[0])), max(rel(plus, ref_minus[0]), rel(minus, ref[0])))
    print(f"haas job grid vs torch official (both signs): relative max error {job_err:.1e}")
    assert job_err < 1e-4 and rel(ref_minus[0], ref[0]) > 1e-2
    _, _, ref_const = _torch_official(unet, x_lat, ts, alphas, K, v_ref[j, 0], scale, np.full(len(ts), sig_ref[j, 0]),
                                      jacobian=False)
    assert rel(ref_const[0], ref[0]) > 1e-3, "σ_0(t_J) at every step must give another edit than σ_0(t)"


def test_constant_schedule_is_an_option_and_bad_names_fail(setup, tmp_path):
    """``sigma_schedule="constant"``: one SVD at the inverted x_{t_J}, no per-step σ; unknown names fail early."""
    _, c, _ = setup
    c = c.copy_and_resolve_references()
    c.sigma_schedule = "constant"
    m = get_task("haas")(c, str(tmp_path / "c"))
    assert m["sigma_schedule"] == "constant" and m["sigma_per_step"] is None and len(m["singular_values"][0]) == K
    c.sigma_schedule = "per_stpe"
    with pytest.raises(ValueError, match="sigma_schedule"):
        get_task("haas")(c, str(tmp_path / "d"))
    c.sigma_schedule, c.t_edit = "per_step", 700
    with pytest.raises(ValueError, match="t_edit"):
        get_task("haas")(c, str(tmp_path / "e"))
    c.t_edit, c.svd_batch_steps = 0, 0
    with pytest.raises(ValueError, match="svd_batch_steps"):
        get_task("haas")(c, str(tmp_path / "f"))
