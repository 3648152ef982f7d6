"""Asyrp editing on a tiny random UNet: the model-level ε pair and one asymmetric step vs a PyTorch/NumPy
computation of the official formula, Δh = 0 ≡ DDIM, inversion + reverse ≡ ddim_sample∘ddim_invert, vmap over
directions × images ≡ separate edits, Δh algebra, bad inputs, t_edit / t_boost selection and metrics."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxhspace.checkpoints import load_unet
from jaxhspace.diffusion.asyrp import asyrp_step
from jaxhspace.diffusion.ddim import ddim_invert, ddim_sample
from jaxhspace.diffusion.schedule import alpha_bar, asyrp_timesteps, make_schedule
from jaxhspace.editing import asyrp_edit as ae
from jaxhspace.editing.editor_io import state_dict_to_editor_params
from jaxhspace.editing.t_select import distance_curves, first_t_at_least, select_t_edit_t_boost
from jaxhspace.losses import perceptual
from jaxhspace.models.editor import DeltaBlock, EditorConfig
from jaxhspace.models.functional import eps_fn
from tests.test_asyrp_editor import TorchDeltaBlock
from tests.unet_fixtures import make_torch_unet, torch_forward

# no attention in the down/up blocks (faster compiles); the mid block, whose output is h, keeps its attention
TINY = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=[16, 32], layers_per_block=1,
            down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"],
            norm_num_groups=8, norm_eps=1e-6, attention_head_dim=None, downsample_padding=0,
            flip_sin_to_cos=False, freq_shift=1, act_fn="silu")
N = 8  # n_inv = n_test (grid [999, 856, 713, 570, 428, 285, 142, 0])
SCHED = make_schedule()
AC64 = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000)).astype(np.float32).astype(np.float64)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tm = make_torch_unet(TINY, seed=0)
    folder = str(tmp_path_factory.mktemp("unet"))
    tm.save_pretrained(folder)
    unet, params = load_unet(folder)
    torch.manual_seed(1)
    te = TorchDeltaBlock(32, 64).eval()  # C_mid = 32, temb = 4·16 = 64
    editor = DeltaBlock(EditorConfig(channels=32, temb_dim=64))
    eparams = jax.tree_util.tree_map(jnp.asarray, state_dict_to_editor_params(editor, te.state_dict()))
    x0 = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    return dict(tm=tm, te=te, unet=unet, params=params, editor=editor, eparams=eparams, x0=x0)


def official_step_np(xt, et, et_mod, at, at_next, eta, z):
    """Asyrp_official utils/diffusion_utils.py:84-97 in float64 (P_t from the edited ε, direction from ε)."""
    x0_t = (xt - et_mod * np.sqrt(1 - at)) / np.sqrt(at)
    if eta == 0:
        return np.sqrt(at_next) * x0_t + np.sqrt(1 - at_next) * et
    c1 = eta * np.sqrt((1 - at / at_next) * (1 - at_next) / (1 - at))
    c2 = np.sqrt((1 - at_next) - c1 ** 2)
    return np.sqrt(at_next) * x0_t + c2 * et + c1 * z


def test_pair_fn_and_asymmetric_step_match_torch_official(world):
    tm, te, unet, params = world["tm"], world["te"], world["unet"], world["params"]
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
    z = rng.normal(size=x.shape).astype(np.float32)
    t, tp, scale = 640, 614, 0.7
    pair = jax.jit(ae.editor_eps_pair_fn(unet, params, world["editor"], world["eparams"], scale))
    eps, eps_e = pair(jnp.asarray(x), jnp.full((2,), t, jnp.int32), jnp.ones((2,), bool))
    # torch: ε from diffusers, Δh from the torch DeltaBlock on the torch h and temb, ε̃ = diffusers with h + s·Δh
    eps_t, h_t = torch_forward(tm, x, np.full((2,), t))
    with torch.no_grad():
        temb = tm.time_embedding(tm.time_proj(torch.full((2,), t)))
        dh = te(torch.from_numpy(h_t.transpose(0, 3, 1, 2).copy()), temb).numpy().transpose(0, 2, 3, 1)
    eps_e_t, _ = torch_forward(tm, x, np.full((2,), t), scale * dh)
    e1, e2 = np.abs(np.asarray(eps) - eps_t).max(), np.abs(np.asarray(eps_e) - eps_e_t).max()
    assert np.abs(eps_e_t - eps_t).max() > 1e-2  # the edit changes ε̃
    assert e1 < 1e-4 and e2 < 1e-4
    for eta in (0.0, 0.5):
        ours = asyrp_step(jnp.asarray(x), eps, eps_e, alpha_bar(SCHED, t), alpha_bar(SCHED, tp), eta,
                          jnp.asarray(z) if eta else None)
        ref = official_step_np(x.astype(np.float64), eps_t.astype(np.float64), eps_e_t.astype(np.float64), AC64[t],
                               AC64[tp], eta, z.astype(np.float64))
        e3 = np.abs(np.asarray(ours, np.float64) - ref).max()
        print(f"\n[pair fn vs torch] eps {e1:.1e}, eps_edit {e2:.1e}; [one step vs official, eta={eta}] {e3:.1e}",
              end="")
        assert e3 < 1e-4
    # gate off -> ε̃ = ε exactly (one encoder, the decoder of h)
    eps0, eps_e0 = pair(jnp.asarray(x), jnp.full((2,), t, jnp.int32), jnp.zeros((2,), bool))
    np.testing.assert_array_equal(np.asarray(eps0), np.asarray(eps_e0))


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_zero_delta_is_ddim_and_reconstruction_is_sample_of_invert(world):
    """A random UNet is no denoiser: n=8 DDIM reconstructions reach |x| ~ 1e2, so besides exact equality with the
    same program (jit, traced params, vmap over images) we compare with the plain batched ddim_sample∘ddim_invert
    (params baked in as constants: XLA may reassociate) relative to the output scale."""
    unet, params, x0 = world["unet"], world["params"], world["x0"]
    out, x_lat = ae.asyrp_edit(unet, params, SCHED, x0, ae.ConstantDelta(jnp.zeros((8, 8, 32))), [1.0], n_inv=N,
                               n_test=N, t_edit=0, t_boost=0, return_latent=True)
    grid = asyrp_timesteps(N)[::-1]
    same_prog = jax.jit(jax.vmap(lambda p, x: ddim_sample(eps_fn(unet, p), x[None], grid, SCHED)[0],
                                 in_axes=(None, 0)))(params, x_lat)
    np.testing.assert_array_equal(np.asarray(out[0]), np.asarray(same_prog))  # Δh = 0 edit ≡ DDIM, bit for bit
    ts = asyrp_timesteps(N)

    @jax.jit
    def sample_of_invert(p, x):  # the plain batched composition, one program
        lat = ddim_invert(eps_fn(unet, p), x, ts, SCHED)
        return lat, ddim_sample(eps_fn(unet, p), lat, grid, SCHED), ddim_sample(eps_fn(unet, p), x_lat, grid, SCHED)

    lat_ref, rec_ref, rev_ref = sample_of_invert(params, jnp.asarray(x0))
    r_lat, r_rev, r_rec = _rel(x_lat, lat_ref), _rel(out[0], rev_ref), _rel(out[0], rec_ref)
    print(f"\n[Δh=0 edit vs batched DDIM] rel. diff: latent {r_lat:.1e}, reverse from the same latent {r_rev:.1e}, "
          f"ddim_sample∘ddim_invert {r_rec:.1e} (|out| max {np.abs(np.asarray(rec_ref)).max():.0f}, random UNet; "
          f"reconstruction error vs input {np.abs(np.asarray(out[0]) - x0).max():.1f})", end="")
    assert r_lat <= 1e-5 and r_rev <= 1e-5 and r_rec <= 1e-4


def test_vmap_directions_by_images_equals_separate_edits(world):
    unet, params, x0 = world["unet"], world["params"], world["x0"]
    rng = np.random.default_rng(5)
    dirs = [jnp.asarray(rng.normal(size=(8, 8, 32)).astype(np.float32)) for _ in range(3)]
    x_lat = ae.invert(unet, params, SCHED, x0, N)
    key = jax.random.PRNGKey(7)
    kw = dict(n_test=N, t_edit=500, t_boost=300, key=key)  # boosting on: per-image keyed noise must match too
    allv = ae.asyrp_edit(unet, params, SCHED, x_lat=x_lat, delta=ae.stack_deltas([ae.ConstantDelta(d) for d in dirs]),
                         scales=[0.5, 1.0], stacked=True, **kw)
    assert allv.shape == (3, 2, 2, 16, 16, 3)
    worst = 0.0
    for j, d in enumerate(dirs):
        for i in range(2):
            one = ae.asyrp_edit(unet, params, SCHED, x_lat=x_lat[i:i + 1], delta=ae.ConstantDelta(d), scales=[1.0],
                                image_ids=[i], **kw)
            worst = max(worst, _rel(one[0, 0], allv[j, 1, i]))
    # relative to the output scale (|x| ~ 1e2 on this random UNet; see the previous test)
    print(f"\n[vmap 3 directions x 2 images vs 6 separate edits] max rel. diff = {worst:.1e}", end="")
    assert worst <= 1e-5
    assert float(np.abs(np.asarray(allv[0, 1]) - np.asarray(allv[1, 1])).max()) > 1e-3  # directions differ


def test_delta_h_algebra_matches_numpy(world, tmp_path):
    rng = np.random.default_rng(11)
    dhs = rng.normal(size=(3, 5, 2, 2, 4)).astype(np.float32)  # [N samples, S timesteps, h, w, C]
    ts = np.array([999, 856, 713, 570, 428])
    np.testing.assert_allclose(np.asarray(ae.delta_h_mean_over_samples(dhs)), dhs.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ae.delta_h_global(dhs)), dhs.mean((0, 1)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ae.delta_h_global(dhs, ts, t_edit=600)), dhs[:, :3].mean((0, 1)),
                               rtol=1e-6, atol=1e-6)
    parts, c = dhs[:, 0], np.array([1.0, -0.5, 2.0], np.float32)
    ref = sum(c[i] / np.sqrt(3) * 1.5 * parts[i] for i in range(3))
    comb = ae.combine_delta_h(parts, c, scale=1.5)
    np.testing.assert_allclose(np.asarray(comb), ref, rtol=1e-5, atol=1e-6)
    # linearity in the scale (including negative) and in each Δh
    np.testing.assert_allclose(np.asarray(ae.combine_delta_h(parts, c, scale=-3.0)), -2 * np.asarray(comb),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ae.combine_delta_h(2 * parts, c, 1.5)), 2 * np.asarray(comb), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(ae.interpolation_scales(-1, 1.5, 6), np.linspace(-1, 1.5, 6), atol=1e-7)
    # the Δh sources evaluate to the same closed forms
    h, temb = jnp.zeros((2, 2, 2, 4)), jnp.zeros((2, 3))
    srcs = tuple(ae.ConstantDelta(jnp.asarray(p)) for p in parts)
    got = ae.CombinedDelta(srcs, jnp.asarray(c))(h, temb, jnp.array([5, 5]))
    np.testing.assert_allclose(np.asarray(got[1]), ref / 1.5, rtol=1e-5, atol=1e-6)
    table = ae.TableDelta(jnp.asarray(dhs[0]), tuple(int(t) for t in ts))
    got = table(h, temb, jnp.array([713, 428]))
    np.testing.assert_array_equal(np.asarray(got[0]), dhs[0, 2])
    np.testing.assert_array_equal(np.asarray(got[1]), dhs[0, 4])
    np.testing.assert_array_equal(np.asarray(table(h, temb, jnp.array([1, 1]))), 0.0)  # t not in the table
    assert ae.scaling_factor(1.5, n_test_step=100, n_train_step=40) == pytest.approx(0.6)
    assert ae.scaling_factor(-1.0, 40) == -1.0
    # save / load round trip, atomic (no temp files left)
    path = ae.save_delta_h(str(tmp_path / "dh.npz"), dhs[0], ts, meta={"src": "face"})
    a, t2, meta = ae.load_delta_h(path)
    np.testing.assert_array_equal(a, dhs[0])
    np.testing.assert_array_equal(t2, ts)
    assert meta == {"src": "face"} and os.listdir(tmp_path) == ["dh.npz"]


def test_collect_delta_h_global_and_scaling(world):
    unet, params, editor, ep = world["unet"], world["params"], world["editor"], world["eparams"]
    x_lat = ae.invert(unet, params, SCHED, world["x0"], N)
    dhs, ts = ae.collect_delta_h(unet, params, SCHED, ae.EditorDelta(ep, editor), x_lat, N, t_edit=500)
    assert dhs.shape == (2, 4, 8, 8, 32) and list(ts) == [999, 856, 713, 570]
    # first row: f(h(x_lat, 999), temb(999)) computed directly
    tb = jnp.full((2,), 999, jnp.int32)
    h, _, temb = unet.apply({"params": params}, x_lat, tb, method=unet.encode)
    np.testing.assert_allclose(np.asarray(dhs[:, 0]), np.asarray(editor.apply({"params": ep}, h, temb)), atol=1e-5)
    g = ae.delta_h_global(dhs)
    np.testing.assert_allclose(np.asarray(g), np.asarray(dhs).mean((0, 1)), atol=1e-6)
    # every row against an independent step-by-step torch collection (official DL:612-623: Δh recorded along the
    # edited trajectory, which moves by the asymmetric step with ε̃ = ε(h + c·Δh)); c = 1 and c = 2.5
    tm, te = world["tm"], world["te"]
    tps = list(ts[1:]) + [428]
    for scale in (1.0, 2.5):
        dhs_s = np.asarray(ae.collect_delta_h(unet, params, SCHED, ae.EditorDelta(ep, editor), x_lat, N, t_edit=500,
                                              scale=scale)[0]) if scale != 1.0 else np.asarray(dhs)
        x = np.asarray(x_lat, np.float64)
        for i, (t, tp) in enumerate(zip(ts, tps)):
            eps_t, h_t = torch_forward(tm, x.astype(np.float32), np.full((2,), int(t)))
            with torch.no_grad():
                temb_t = tm.time_embedding(tm.time_proj(torch.full((2,), int(t))))
                dh = te(torch.from_numpy(h_t.transpose(0, 3, 1, 2).copy()), temb_t).numpy().transpose(0, 2, 3, 1)
            np.testing.assert_allclose(dhs_s[:, i], dh, atol=2e-4, err_msg=f"row {i} (t={t}), scale {scale}")
            eps_e, _ = torch_forward(tm, x.astype(np.float32), np.full((2,), int(t)), scale * dh)
            x = official_step_np(x, eps_t.astype(np.float64), eps_e.astype(np.float64), AC64[int(t)],
                                 AC64[int(tp)], 0.0, None)
        if scale != 1.0:
            assert np.abs(dhs_s[:, -1] - np.asarray(dhs)[:, -1]).max() > 1e-3  # the scale moves the trajectory


def test_bad_inputs_raise(world, tmp_path):
    unet, params = world["unet"], world["params"]
    x_lat = jnp.zeros((1, 16, 16, 3))
    with pytest.raises(ValueError, match=r"delta_h must be \[h, w, C\] = \[8, 8, 32\]"):
        ae.asyrp_edit(unet, params, SCHED, x_lat=x_lat, delta=ae.ConstantDelta(jnp.zeros((4, 4, 32))), n_test=N)
    bad = np.zeros((8, 8, 32), np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ae.asyrp_edit(unet, params, SCHED, x_lat=x_lat, delta=ae.ConstantDelta(jnp.asarray(bad)), n_test=N)
    with pytest.raises(ValueError, match="NaN"):
        ae.save_delta_h(str(tmp_path / "x.npz"), bad)
    with pytest.raises(ValueError, match="no rows for edited timesteps"):
        ae.asyrp_edit(unet, params, SCHED, x_lat=x_lat, n_test=N, t_edit=500,
                      delta=ae.TableDelta(jnp.zeros((2, 8, 8, 32)), (999, 856)))
    with pytest.raises(ValueError, match="table"):
        ae.asyrp_edit(unet, params, SCHED, x_lat=x_lat, n_test=N, delta=ae.TableDelta(jnp.zeros((3, 8, 8, 32)), (1, 2)))
    with pytest.raises(ValueError, match="does not fit the UNet"):
        ed = DeltaBlock(EditorConfig(channels=64, temb_dim=64))
        ae.asyrp_edit(unet, params, SCHED, x_lat=x_lat, n_test=N, delta=ae.EditorDelta({}, ed))
    with pytest.raises(ValueError, match="NHWC"):
        ae.asyrp_edit(unet, params, SCHED, x_lat=jnp.zeros((1, 3, 16, 16)), n_test=N)
    with pytest.raises(ValueError, match="x0 .* or x_lat"):
        ae.asyrp_edit(unet, params, SCHED)
    with pytest.raises(ValueError, match="same type"):
        ae.stack_deltas([ae.ConstantDelta(jnp.zeros(3)), ae.TableDelta(jnp.zeros((1, 3)), (1,))])


def test_t_select_curves_and_metrics(world, tmp_path):
    # threshold rule on a synthetic curve: smallest t whose value >= th
    ts, vals = np.array([100, 200, 300, 400]), np.array([0.05, 0.2, 0.3, 0.5])
    assert first_t_at_least(ts[::-1], vals[::-1], 0.25) == 300
    with pytest.raises(ValueError, match="no t reaches"):
        first_t_at_least(ts, vals, 0.9)
    curves = {"t": ts, "x0_t": vals, "x": 4 * vals, "metric": "synthetic", "lpips_calibrated": False}
    sel = select_t_edit_t_boost(None, None, SCHED, None, cos=0.8, metric=None, curves=curves, lpips_edit_th=0.33,
                                lpips_addnoise_th=1.0)
    assert (sel["t_edit"], sel["t_boost"]) == (300, 300) and sel["th_edit"] == pytest.approx(0.264)
    # real curves on the tiny UNet with the fallback metric
    metric = perceptual.get_metric("msl2")
    cur = distance_curves(world["unet"], world["params"], SCHED, world["x0"], metric, n_steps=N)
    assert cur["t"].tolist() == asyrp_timesteps(N)[1:].tolist() and not cur["lpips_calibrated"]
    assert cur["x"][-1] > cur["x"][0] > 0  # x_t drifts away from x0 as t grows
    a = jnp.asarray(world["x0"])
    np.testing.assert_array_equal(np.asarray(metric(a, a)), 0.0)
    np.testing.assert_allclose(np.asarray(metric(-jnp.ones((1, 8, 8, 3)), jnp.ones((1, 8, 8, 3)))), 1.0, rtol=1e-6)
    # LPIPS: clear error without weights; with (random) weights it equals a torch LPIPS-alex computation
    with pytest.raises(ValueError, match="LPIPS is not shipped"):
        perceptual.get_metric("lpips", str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="unknown perceptual metric"):
        perceptual.get_metric("ssim")
    torch.manual_seed(0)
    shapes = [(64, 3, 11), (192, 64, 5), (384, 192, 3), (256, 384, 3), (256, 256, 3)]
    alex = {}
    for idx, (o, i, k) in zip((0, 3, 6, 8, 10), shapes):
        alex[f"features.{idx}.weight"] = torch.randn(o, i, k, k) / np.sqrt(i * k * k)
        alex[f"features.{idx}.bias"] = 0.1 * torch.randn(o)
    lin = {f"lin{j}.model.1.weight": torch.rand(1, s[0], 1, 1) for j, s in enumerate(shapes)}
    torch.save(alex, str(tmp_path / "alexnet.pth"))
    torch.save(lin, str(tmp_path / "alex.pth"))
    lp = perceptual.get_metric("lpips", str(tmp_path))
    rng = np.random.default_rng(3)
    xa, xb = (rng.uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32) for _ in range(2))
    ours = np.asarray(lp(xa, xb))

    def torch_lpips(a, b):
        F = torch.nn.functional
        sh = torch.tensor([-.030, -.088, -.188])[None, :, None, None]
        sc = torch.tensor([.458, .448, .450])[None, :, None, None]
        fa, fb = [(torch.from_numpy(v.transpose(0, 3, 1, 2).copy()) - sh) / sc for v in (a, b)]
        tot = 0
        for j, (idx, (o, i, k)) in enumerate(zip((0, 3, 6, 8, 10), shapes)):
            if j in (1, 2):
                fa, fb = F.max_pool2d(fa, 3, 2), F.max_pool2d(fb, 3, 2)
            st, pd = (4, 2) if j == 0 else (1, k // 2)
            fa = F.relu(F.conv2d(fa, alex[f"features.{idx}.weight"], alex[f"features.{idx}.bias"], st, pd))
            fb = F.relu(F.conv2d(fb, alex[f"features.{idx}.weight"], alex[f"features.{idx}.bias"], st, pd))
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            tot = tot + F.conv2d((na - nb) ** 2, lin[f"lin{j}.model.1.weight"]).mean((2, 3))[:, 0]
        return tot.numpy()

    with torch.no_grad():
        ref = torch_lpips(xa, xb)
    print(f"\n[LPIPS-alex (random weights) vs torch] max rel err = {np.abs(ours - ref).max() / np.abs(ref).max():.1e}",
          end="")
    np.testing.assert_allclose(ours, ref, rtol=1e-4)
