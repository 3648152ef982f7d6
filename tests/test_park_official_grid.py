"""Park et al.'s timestep handling (issue #19 items 4-5): ``park_grid="official"`` / ``park_inversion="official"``
against an independent torch re-implementation of the official loops, written from enkeejunior1/Diffusion-Pullback
@859c012 (``YHCustomScheduler`` utils.py:1171-1235 and ``extract`` 1302-1317; ``run_DDIMinversion`` edit.py:614-679,
``DDIMforwardsteps`` 1602-1715, ``x_space_guidance`` 1717-1734, the index rules 582-584), with a stand-in
``torch.randn_like`` that returns given noise. The model is an analytic ε(x, t) (smooth in the float t, so a
rounded t would show) or a tiny random UNet. The default (integer Asyrp grid) is checked against the same
re-implementation run with the Asyrp conventions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxhspace.diffusion.schedule import alpha_bar, make_schedule
from jaxhspace.editing.pullback_edit import (OfficialGrid, continue_sampling, edit_steps, park_invert,
                                             park_official_grid)

SHAPE = (2, 4, 4, 3)
RNG = np.random.default_rng(0)
A, B, C = (RNG.normal(size=SHAPE[1:]).astype(np.float32) for _ in range(3))


# ---------------------------------------------------------------- the official code, re-implemented in torch
class RefScheduler:
    """``YHCustomScheduler`` (utils.py:1171-1235), float32 torch, linear β 1e-4 .. 0.02 in float64."""

    def __init__(self):
        betas = torch.linspace(0.0001, 0.02, 1000, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, 0).to(torch.float32)
        self.t_max = 999

    def set_timesteps(self, n, is_inversion=False):
        seq = torch.linspace(0, 1, n) * self.t_max
        if is_inversion:
            seq = seq + 1e-6
            seq_prev = torch.cat([torch.tensor([-1.0]), seq[:-1]])
            self.timesteps, self.timesteps_next = seq_prev[1:], seq[1:]
        else:
            seq_prev = torch.cat([torch.tensor([-1.0]), seq[:-1]])
            self.timesteps, self.timesteps_next = seq[1:].flip(0), seq_prev[1:].flip(0)

    def extract(self, t):
        return torch.gather(self.alphas_cumprod, 0, t.reshape(1).long())[0]

    def step(self, et, t, xt, eta, z, log):
        t_idx = self.timesteps.tolist().index(t)
        t_next = self.timesteps_next[t_idx]
        at, at_next = self.extract(t), self.extract(t_next)
        P = (xt - et * (1 - at).sqrt()) / at.sqrt()
        if eta == 0:
            x = at_next.sqrt() * P + (1 - at_next).sqrt() * et
        else:
            sigma = ((1 - at / at_next) * (1 - at_next) / (1 - at)).sqrt()
            x = at_next.sqrt() * P + (1 - at_next - eta * sigma ** 2).sqrt() * et + eta * sigma * z
        log.append((float(t), float(t_next), eta, float(at_next)))
        return x


def ref_eps(x, t):
    """The analytic ε: the float t enters (t of a 0-d tensor, as the official passes it to the UNet)."""
    t = torch.as_tensor(t, dtype=torch.float32)
    return torch.tanh(torch.from_numpy(A) * x + torch.from_numpy(B)) * (0.5 + t / 1000) + \
        0.3 * torch.sin(t / 37.0 + torch.from_numpy(C))


def jax_eps(x, t):
    t = jnp.asarray(t, jnp.float32)[:, None, None, None]
    return jnp.tanh(A * x + B) * (0.5 + t / 1000) + 0.3 * jnp.sin(t / 37.0 + C)


def ref_official(eps, x0, n, edit_t, t_boost, v, gamma, n_edit, noise, truncate_inversion=True):
    """The official pipeline: inversion (breaking before its last step), DDIM η = 0 from the top to edit_t_idx,
    ``n_edit`` x-space guidance steps, then DDIM to the end with performance boosting. Returns x_t, t, x_0, log."""
    sch = RefScheduler()
    sch.set_timesteps(n)
    edit_idx = int((sch.timesteps - edit_t).abs().argmin())              # edit.py:583 (edit_t·1000)
    boost_idx = int((sch.timesteps - t_boost).abs().argmin()) if t_boost > 0 else 1000   # edit.py:584
    sch.set_timesteps(n, is_inversion=True)                               # run_DDIMinversion
    x, log = x0, []
    for i, t in enumerate(sch.timesteps):
        if truncate_inversion and i == len(sch.timesteps) - 1:
            break
        if not truncate_inversion and i == n - 1 - edit_idx:              # our "to_edit_t" variant, same steps
            break
        x = sch.step(eps(x, t), t, x, 0, None, log)
    sch.set_timesteps(n)                                                  # DDIMforwardsteps(xT, 0, edit_t_idx)
    if truncate_inversion:
        for i, t in enumerate(sch.timesteps):
            if i == edit_idx:
                break
            x = sch.step(eps(x, t), t, x, 0, None, log)
    t_edit = sch.timesteps[edit_idx]
    x_t = x.clone()
    for _ in range(n_edit):                                               # x_space_guidance, edit.py:1717-1734
        et = eps(torch.cat([x, x + 1.0 * v]), t_edit)
        e_null, e_edit = et.chunk(2)
        x = x + gamma * (e_edit - e_null)
    log_sample, k = [], 0
    for i, t in enumerate(sch.timesteps):                                 # DDIMforwardsteps(xt, edit_idx, -1, True)
        if i < edit_idx:
            continue
        eta = 1 if (boost_idx <= i) and (boost_idx != len(sch.timesteps) - 1) else 0
        x = sch.step(eps(x, t), t, x, eta, noise[k], log_sample)
        k += 1
    return x_t, float(t_edit), x, log_sample


def ref_asyrp_default(eps, x0, n, edit_t, t_boost, noise):
    """The default (integer Asyrp grid) with the same formulas: int(s + 1e-6) grid, inversion up to the grid point
    nearest edit_t, η = 1 where t < t_boost, the last step to ᾱ = 1. Returns x_t, t, x_0, log."""
    sch = RefScheduler()
    seq = [int(s + 1e-6) for s in np.linspace(0, 1, n) * 999]
    i_e = int(np.argmin(np.abs(np.array(seq) - edit_t)))
    ab = lambda t: 1.0 if t < 0 else sch.alphas_cumprod[t]  # noqa: E731
    x = x0
    for t, tn in zip(seq[:i_e], seq[1:i_e + 1]):
        et = eps(x, t)
        x = (ab(tn) ** 0.5) * (x - (1 - ab(t)) ** 0.5 * et) / ab(t) ** 0.5 + (1 - ab(tn)) ** 0.5 * et
    x_t, log = x.clone(), []
    down = seq[: i_e + 1][::-1]
    for k, (t, tn) in enumerate(zip(down, down[1:] + [-1])):
        eta = 1 if t < t_boost else 0
        at, an = torch.as_tensor(ab(t)), torch.as_tensor(ab(tn))
        et = eps(x, t)
        P = (x - (1 - at).sqrt() * et) / at.sqrt()
        sigma = eta * ((1 - at / an) * (1 - an) / (1 - at)).sqrt()
        x = an.sqrt() * P + (1 - an - sigma ** 2).sqrt() * et + sigma * noise[k]
        log.append((t, tn, eta, float(an)))
    return x_t, seq[i_e], x, log


def _close(ours, ref, rel):
    """max |ours − ref| <= rel · max(1, max |ref|) (float32 rounding accumulated over up to ~140 steps)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    err, scale = float(np.abs(ours - ref).max()), max(1.0, float(np.abs(ref).max()))
    print(f"max error {err:.3g} (scale {scale:.3g})")
    assert err <= rel * scale, (err, scale)


def _inputs(n_noise):
    x0 = RNG.normal(size=SHAPE).astype(np.float32)
    v = RNG.normal(size=SHAPE[1:]).astype(np.float32)
    v /= np.linalg.norm(v)
    z = RNG.normal(size=(n_noise,) + SHAPE).astype(np.float32)
    return x0, v, z


# ---------------------------------------------------------------- tests
def test_float_grid_matches_torch_linspace():
    """Our float32 grid is torch.linspace(0, 1, n)·999 to ≤ 2 ulp for n = 2..1000; ⌊t⌋ (the ᾱ index) is the same
    except at exact-integer grid points where torch's CPU float32 lands 1 ulp below (documented), and it is the same
    everywhere for the script's n = 100, for the sampling grid and the inversion grid (+1e-6)."""
    for n in range(2, 1001):
        ref = (torch.linspace(0, 1, n) * 999).numpy()
        ours = park_official_grid(n)
        assert ours.dtype == np.float32 and ours.shape == (n,)
        np.testing.assert_array_less(np.abs(ours - ref), 2.01 * np.spacing(np.maximum(ours, 1.0)))
        off = np.nonzero(np.floor(ours) != np.floor(ref))[0]
        exact = np.arange(n) * 999 / (n - 1)
        assert np.all(exact[off] == np.round(exact[off])) and np.all(np.floor(ref[off]) == ours[off] - 1), n
    for n in (100, 5, 6, 12, 50):
        ref = torch.linspace(0, 1, n) * 999
        ours = park_official_grid(n)
        np.testing.assert_array_equal(np.floor(ours), np.floor(ref.numpy()))
        np.testing.assert_array_equal(np.floor(ours + np.float32(1e-6)), np.floor((ref + 1e-6).numpy()))
    assert np.floor((torch.linspace(0, 1, 4) * 999).numpy())[2] == 665 and park_official_grid(4)[2] == 666


CASES = [  # (n, edit_t, t_boost): the script's 100 steps; edit at the top; boost index = the last (no boosting)
    (100, 600, 200), (100, 999, 200), (5, 600, 200), (12, 800, 300), (6, 300, 0)]


@pytest.mark.parametrize("n,edit_t,t_boost", CASES)
def test_official_option_equals_the_official_loop(n, edit_t, t_boost):
    x0, v, z = _inputs(n)
    gamma, n_edit = 0.3, 2
    rx_t, rt, rx, rlog = ref_official(ref_eps, torch.from_numpy(x0), n, edit_t, t_boost, torch.from_numpy(v),
                                      gamma, n_edit, torch.from_numpy(z))
    sched = make_schedule()
    x_t, t, grid = park_invert(jax_eps, x0, sched, n, edit_t, grid="official", inversion="official")
    assert isinstance(grid, OfficialGrid) and isinstance(t, float)
    assert abs(t - rt) <= 1e-4 * max(rt, 1.0)
    _close(np.asarray(x_t), rx_t.numpy(), 1e-5)
    xe = edit_steps(jax_eps, x_t, t, jnp.asarray(v), gamma, n_edit)
    S = len(rlog)
    x, traj = continue_sampling(jax_eps, xe, grid, sched, t_boost, noise=z[:S], return_trajectory=True)
    # the timesteps visited, η per step, the final ᾱ (ᾱ_0: the grid ends at t = 0, no 0 -> -1 step)
    ref_t, ref_tn, ref_eta, ref_an = (np.array(c) for c in zip(*rlog))
    np.testing.assert_allclose(traj["t"], ref_t, rtol=2e-7)
    np.testing.assert_allclose(traj["t_prev"], ref_tn, rtol=2e-7)
    np.testing.assert_array_equal(traj["eta"], ref_eta)
    assert traj["t_prev"][-1] == 0 and ref_tn[-1] == 0
    assert float(alpha_bar(sched, traj["t_prev"][-1])) == ref_an[-1] == float(sched.alphas_cumprod[0])
    np.testing.assert_allclose(np.asarray(alpha_bar(sched, traj["t_prev"])), ref_an, rtol=1e-7)
    _close(np.asarray(x), rx.numpy(), 1e-5)
    if (n, t_boost) == (100, 200):  # the numbers: boosting from t ≈ 201.8, 20 noisy steps
        assert int(traj["eta"].sum()) == 20 and abs(traj["t"][np.argmax(traj["eta"])] - 201.818) < 1e-3


def test_official_inversion_is_not_the_exact_inversion():
    """``park_inversion="official"`` samples from x at ≈ 988.9 as if it were x_999; "to_edit_t" inverts straight to
    the edit time (the reference loop run without the break): both equal their reference, and they differ."""
    n, edit_t = 100, 600
    x0, _, _ = _inputs(1)
    sched = make_schedule()
    r_off, rt, _, _ = ref_official(ref_eps, torch.from_numpy(x0), n, edit_t, 0, torch.zeros(SHAPE[1:]), 0.0, 0,
                                   torch.zeros((n,) + SHAPE))
    r_exact, rt2, _, _ = ref_official(ref_eps, torch.from_numpy(x0), n, edit_t, 0, torch.zeros(SHAPE[1:]), 0.0, 0,
                                      torch.zeros((n,) + SHAPE), truncate_inversion=False)
    x_off, t, _ = park_invert(jax_eps, x0, sched, n, edit_t, grid="official", inversion="official")
    x_exact, t2, _ = park_invert(jax_eps, x0, sched, n, edit_t, grid="official", inversion="to_edit_t")
    assert rt == rt2 and abs(t - rt) < 1e-3 and t == t2
    _close(np.asarray(x_off), r_off.numpy(), 1e-5)
    _close(np.asarray(x_exact), r_exact.numpy(), 1e-5)
    assert float(np.abs(np.asarray(x_off) - np.asarray(x_exact)).max()) > 1e-2


@pytest.mark.parametrize("n,edit_t,t_boost", [(100, 600, 200), (8, 600, 300)])
def test_default_is_the_asyrp_grid_unchanged(n, edit_t, t_boost):
    """Default arguments: integer grid, η = 1 where t < t_boost, the last step to ᾱ = 1 (19 noisy steps + 0 -> -1 for
    the script's settings), against the reference run with those conventions."""
    x0, _, z = _inputs(n)
    rx_t, rt, rx, rlog = ref_asyrp_default(ref_eps, torch.from_numpy(x0), n, edit_t, t_boost, torch.from_numpy(z))
    sched = make_schedule()
    x_t, t, grid = park_invert(jax_eps, x0, sched, n, edit_t)
    assert t == rt and isinstance(t, int) and grid.dtype == np.int64
    _close(np.asarray(x_t), rx_t.numpy(), 1e-5)
    x, traj = continue_sampling(jax_eps, x_t, grid, sched, t_boost, noise=z[:len(rlog)], return_trajectory=True)
    ref_t, ref_tn, ref_eta, _ = (np.array(c) for c in zip(*rlog))
    np.testing.assert_array_equal(traj["t"], ref_t)
    np.testing.assert_array_equal(traj["t_prev"], ref_tn)
    np.testing.assert_array_equal(traj["eta"], ref_eta)
    assert traj["t_prev"][-1] == -1
    _close(np.asarray(x), rx.numpy(), 1e-5)
    if (n, t_boost) == (100, 200):
        # η = 1 at t = 191, 181, ..., 10, 0, but the 0 -> -1 step has σ = 0: 19 noisy steps (the official: 20)
        assert int(traj["eta"].sum()) == 20 and int(np.sum((traj["eta"] == 1) & (traj["t_prev"] >= 0))) == 19
    # the job's old inversion (tasks.inputs.invert_to, on a model whose apply is the analytic ε) bit for bit
    from jaxhspace.tasks.inputs import invert_to

    class Analytic:
        def apply(self, variables, x, t):
            return jax_eps(x, t)

    old = invert_to(Analytic(), {}, sched, jnp.asarray(x0), n, edit_t)
    assert old[1] == t and np.array_equal(old[2], grid)
    np.testing.assert_array_equal(np.asarray(old[0]), np.asarray(x_t))
    # the old call (positional key, no noise) still works and is deterministic in the key
    a = continue_sampling(jax_eps, x_t, grid, sched, t_boost, jax.random.PRNGKey(0))
    b = continue_sampling(jax_eps, x_t, grid, sched, t_boost, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_tiny_unet_official_path_equals_the_reference_loop():
    """The same on a tiny random UNet (the float t goes into its time embedding): the reference loop calls the JAX
    UNet with the official float t (a 0-d torch tensor)."""
    from jaxhspace.models.functional import eps_fn
    from jaxhspace.models.unet import UNet2DModel, UNetConfig

    cfg = dict(sample_size=8, block_out_channels=[8], layers_per_block=1, down_block_types=["DownBlock2D"],
               up_block_types=["UpBlock2D"], norm_num_groups=4, norm_eps=1e-6, attention_head_dim=None,
               flip_sin_to_cos=False, freq_shift=1, downsample_padding=0)
    model = UNet2DModel(UNetConfig.from_dict(cfg))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,)))["params"]
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    f = eps_fn(model, params)
    jf = jax.jit(f)

    def ref_unet(x, t):
        xb = jnp.asarray(x.numpy())
        return torch.from_numpy(np.array(jf(xb, jnp.full((xb.shape[0],), float(t), jnp.float32))))

    n, edit_t, t_boost = 6, 600, 400
    x0 = RNG.normal(size=(1, 8, 8, 3)).astype(np.float32)
    z = RNG.normal(size=(n, 1, 8, 8, 3)).astype(np.float32)
    rx_t, rt, rx, rlog = ref_official(ref_unet, torch.from_numpy(x0), n, edit_t, t_boost, torch.zeros(8, 8, 3), 0.0,
                                      0, torch.from_numpy(z))
    sched = make_schedule()
    x_t, t, grid = park_invert(f, x0, sched, n, edit_t, grid="official", inversion="official")
    x, traj = continue_sampling(f, x_t, grid, sched, t_boost, noise=z[:len(rlog)], return_trajectory=True)
    assert abs(t - rt) < 1e-3 and int(traj["eta"].sum()) == sum(r[2] for r in rlog) == 2
    _close(np.asarray(x_t), rx_t.numpy(), 1e-5)
    _close(np.asarray(x), rx.numpy(), 1e-5)


def test_configs_and_bad_options(tmp_path):
    import importlib

    from jaxhspace.errors import JaxhspaceError
    from jaxhspace.tasks import pullback_job as job

    for name, want in (("configs.celebahq256.pullback", "official"), ("configs.sd.pullback", "official"),
                       ("configs.pullback", None)):
        c = importlib.import_module(name).get_config()
        if want is None:
            assert (c.park_grid, c.park_inversion) == ("asyrp", "to_edit_t")
        else:
            assert (c.park_grid, c.park_inversion) == (want, want)
    doc = importlib.import_module("configs.celebahq256.pullback").__doc__
    assert "up to the inversion error" not in doc and "988.9" in doc
    c = importlib.import_module("configs.pullback").get_config()
    c.park_grid = "float"
    with pytest.raises(JaxhspaceError, match=r"config\.park_grid must be one of \('asyrp', 'official'\)"):
        job.run(c, str(tmp_path))
    c.park_grid, c.park_inversion = "official", "x_T"
    with pytest.raises(JaxhspaceError, match=r"config\.park_inversion must be one of"):
        job.run(c, str(tmp_path))
    with pytest.raises(ValueError, match="n_steps >= 2"):
        park_invert(jax_eps, np.zeros(SHAPE, np.float32), make_schedule(), 1, 600, grid="official")
    with pytest.raises(ValueError, match="t_boost > 0 adds noise"):
        continue_sampling(jax_eps, np.zeros(SHAPE, np.float32), OfficialGrid(100, 40), make_schedule(), 200)
