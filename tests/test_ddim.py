"""Schedules, timestep grids, DDIM step/sample/invert: parity with diffusers' DDIMScheduler and
reconstruction with an exact ε for Gaussian data. Small shapes; runs in seconds on CPU."""
import numpy as np
import pytest
import torch
import jax
import jax.numpy as jnp

from diffusers import DDIMScheduler, DDPMScheduler

from jaxhspace.diffusion.schedule import (
    alpha_bar,
    asyrp_timesteps,
    ddim_timesteps,
    diffusers_prev_timesteps,
    inversion_pairs,
    make_schedule,
    sampling_pairs,
    schedule_from_config,
)
from jaxhspace.diffusion.ddim import ddim_invert, ddim_sample, ddim_step, predict_x0

SHAPE = (2, 4, 4, 3)  # [B, H, W, C]
SCHED_KW = {
    "linear": {},
    "scaled_linear": dict(beta_start=0.00085, beta_end=0.012),
    "squaredcos_cap_v2": {},
}


def eps_jax(x, t):
    """Deterministic toy ε, identical in torch below. t: [B]."""
    return jnp.tanh(0.7 * x + 0.3 * (t.astype(jnp.float32) / 1000.0)[:, None, None, None])


def eps_torch(x, t: int):
    return torch.tanh(0.7 * x + 0.3 * (t / 1000.0))


def eps_np(x, t):
    return np.tanh(0.7 * x + 0.3 * (t / 1000.0))


def _x(seed=0, shape=SHAPE):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SCHED_KW))
def test_schedule_matches_diffusers(name):
    kw = SCHED_KW[name]
    ref = DDIMScheduler(beta_schedule=name, **kw)
    ours = make_schedule(name, **kw)
    err_ac = np.abs(np.asarray(ours.alphas_cumprod) - ref.alphas_cumprod.numpy()).max()
    err_b = np.abs(np.asarray(ours.betas) - ref.betas.numpy()).max()
    print(f"\n[{name}] max|ᾱ - diffusers ᾱ| = {err_ac:.2e}, max|β - diffusers β| = {err_b:.2e}")
    assert ours.alphas_cumprod.dtype == jnp.float32 and ours.num_train_timesteps == 1000
    assert err_ac <= 1e-6 and err_b <= 1e-7
    # float64 truth: ours is the correctly rounded float64 product (diffusers accumulates in float32).
    b64 = {"linear": np.linspace(1e-4, 0.02, 1000)}.get(name)
    if b64 is not None:
        assert np.abs(np.asarray(ours.alphas_cumprod, np.float64) - np.cumprod(1 - b64)).max() < 1e-7
    # from a scheduler config dict (as in scheduler_config.json)
    from_cfg = schedule_from_config(dict(ref.config))
    np.testing.assert_array_equal(np.asarray(from_cfg.alphas_cumprod), np.asarray(ours.alphas_cumprod))


def test_schedule_from_ddpm_config_and_trained_betas():
    cfg = dict(DDPMScheduler(beta_schedule="sigmoid").config)
    ours = schedule_from_config(cfg)
    ref = DDPMScheduler(beta_schedule="sigmoid").alphas_cumprod.numpy()
    assert np.abs(np.asarray(ours.alphas_cumprod) - ref).max() <= 1e-6
    betas = np.linspace(1e-4, 0.02, 10)
    s = schedule_from_config({"num_train_timesteps": 10, "trained_betas": betas.tolist()})
    np.testing.assert_allclose(np.asarray(s.alphas_cumprod), np.cumprod(1 - betas), rtol=1e-6)


def test_alpha_bar_conventions():
    s = make_schedule()
    assert float(alpha_bar(s, -1)) == 1.0
    assert abs(float(alpha_bar(s, 0)) - 0.9999) < 1e-7  # Asyrp inversion starts here, not at 1
    got = np.asarray(alpha_bar(s, np.array([[-1, 0], [999, 5]])))
    assert got.shape == (2, 2) and got[0, 0] == 1.0 and got[1, 0] == np.asarray(s.alphas_cumprod)[999]
    assert float(jax.jit(lambda t: alpha_bar(s, t))(jnp.int32(-1))) == 1.0


# ----------------------------------------------------------------------------------------------
# Timestep grids
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("offset", [0, 1])
def test_ddim_timesteps_match_diffusers(spacing, offset):
    for n in [1, 3, 7, 10, 20, 33, 50, 250, 999, 1000]:
        sch = DDIMScheduler(timestep_spacing=spacing, steps_offset=offset)
        sch.set_timesteps(n)
        ref = sch.timesteps.numpy()
        if spacing == "leading" and offset == 1 and n == 1000:
            with pytest.raises(ValueError, match="leaves"):  # 1000 is not a valid timestep
                ddim_timesteps(n, spacing=spacing, steps_offset=offset)
            continue
        ours = ddim_timesteps(n, spacing=spacing, steps_offset=offset)
        np.testing.assert_array_equal(ours, ref, err_msg=f"{spacing} n={n} offset={offset}")
        assert ours.dtype == np.int64 and np.all(np.diff(ours) < 0)


def test_asyrp_timesteps_official():
    expected = [0, 25, 51, 76, 102, 128, 153, 179, 204, 230, 256, 281, 307, 333, 358, 384, 409, 435, 461,
                486, 512, 537, 563, 589, 614, 640, 666, 691, 717, 742, 768, 794, 819, 845, 870, 896, 922,
                947, 973, 999]
    np.testing.assert_array_equal(asyrp_timesteps(40), expected)
    for n in (1, 2, 6, 50, 100, 1000):
        ref = [int(s + 1e-6) for s in np.linspace(0, 1, n) * 999]
        np.testing.assert_array_equal(asyrp_timesteps(n), ref)
    # the +1e-6 matters: astype(int) would give 776 here
    np.testing.assert_array_equal(asyrp_timesteps(10), [0, 111, 222, 333, 444, 555, 666, 777, 888, 999])
    t, tp = sampling_pairs(asyrp_timesteps(40)[::-1])
    assert t[0] == 999 and tp[0] == 973 and t[-1] == 0 and tp[-1] == -1  # official seq_next = [-1] + seq[:-1]
    t, tn = inversion_pairs(asyrp_timesteps(40))
    assert len(t) == 39 and t[0] == 0 and tn[0] == 25 and tn[-1] == 999


def test_diffusers_prev_timesteps():
    ts = ddim_timesteps(10, spacing="leading")
    np.testing.assert_array_equal(diffusers_prev_timesteps(ts), sampling_pairs(ts)[1])
    ts = ddim_timesteps(10, spacing="linspace")
    prev = diffusers_prev_timesteps(ts)
    assert prev[0] == 899 and ts[1] == 888 and prev[-1] == -1  # diffusers' quirk, reproduced on request
    assert diffusers_prev_timesteps(ts, set_alpha_to_one=False)[-1] == 0


def test_bad_inputs():
    with pytest.raises(ValueError, match=">= 1"):
        ddim_timesteps(0)
    with pytest.raises(ValueError, match=">= 1"):
        asyrp_timesteps(0)
    with pytest.raises(ValueError, match="exceeds"):
        ddim_timesteps(1001)
    with pytest.raises(ValueError, match="exceeds"):
        asyrp_timesteps(1001)
    with pytest.raises(ValueError, match="unknown timestep spacing"):
        ddim_timesteps(10, spacing="uniform")
    with pytest.raises(ValueError, match="unknown beta_schedule"):
        make_schedule("cosine")
    with pytest.raises(ValueError, match="unknown beta_schedule"):
        schedule_from_config({"beta_schedule": "quadratic"})
    with pytest.raises(ValueError, match="trained_betas"):
        schedule_from_config({"num_train_timesteps": 1000, "trained_betas": [0.1, 0.2]})
    with pytest.raises(ValueError, match="prediction_type"):
        schedule_from_config({"prediction_type": "v_prediction"})
    with pytest.raises(ValueError, match="descending"):
        sampling_pairs([0, 10, 20])
    with pytest.raises(ValueError, match="ascending"):
        inversion_pairs([20, 10])
    s = make_schedule()
    with pytest.raises(ValueError, match="timesteps must lie"):
        alpha_bar(s, 1000)
    x = jnp.asarray(_x())
    with pytest.raises(ValueError, match="key"):
        ddim_sample(eps_jax, x, ddim_timesteps(5), s, eta=0.5)
    with pytest.raises(ValueError, match="noise"):
        ddim_step(x, x, 0.5, 0.6, eta=0.5)
    with pytest.raises(ValueError, match="descending"):
        ddim_sample(eps_jax, x, asyrp_timesteps(5), s)


# ----------------------------------------------------------------------------------------------
# Parity with diffusers' DDIMScheduler.step loop
# ----------------------------------------------------------------------------------------------
def _gauss_eps_torch(sch):
    """Exact ε of x0 ~ N(0.3, 0.5²) with diffusers' own ᾱ: keeps the samples O(1)."""

    def f(x, t):
        a = sch.alphas_cumprod[t]
        return (1 - a) ** 0.5 * (x - a**0.5 * 0.3) / (a * 0.25 + 1 - a)

    return f


def _gauss_eps_jax(s):
    def f(x, t):
        a = alpha_bar(s, t)[:, None, None, None]
        return (1 - a) ** 0.5 * (x - a**0.5 * 0.3) / (a * 0.25 + 1 - a)

    return f


def _diffusers_loop(x, n, eta, noise, spacing="leading", set_alpha_to_one=True, toy="tanh"):
    sch = DDIMScheduler(clip_sample=False, set_alpha_to_one=set_alpha_to_one, timestep_spacing=spacing)
    sch.set_timesteps(n)
    f = eps_torch if toy == "tanh" else _gauss_eps_torch(sch)
    xt = torch.from_numpy(x)
    for i, t in enumerate(sch.timesteps):
        vn = torch.from_numpy(noise[i]) if eta > 0 else None
        xt = sch.step(f(xt, int(t)), int(t), xt, eta=eta, variance_noise=vn).prev_sample
    return xt.numpy(), sch.timesteps.numpy()


@pytest.mark.parametrize("toy", ["tanh", "gauss"])
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_sample_matches_diffusers(eta, toy):
    """Same timesteps, clip_sample=False, same variance_noise. Error relative to max(1, max|x|): the
    tanh toy ε drives P_t (hence x_0) to |x| ~ 100, where one float32 ulp is 7.6e-6."""
    n = 10
    x = _x(1)
    noise = np.random.default_rng(2).standard_normal((n,) + SHAPE).astype(np.float32)
    s = make_schedule()
    f = eps_jax if toy == "tanh" else _gauss_eps_jax(s)
    cases = [("leading", True), ("trailing", True), ("linspace", True), ("leading", False)]
    for spacing, one in cases:
        ref, ts = _diffusers_loop(x, n, eta, noise, spacing, one, toy)
        # leading + set_alpha_to_one: the default pairs (next grid point, then -1) are diffusers' own;
        # otherwise use the documented prev-timestep mapping.
        prev = None if (spacing, one) == ("leading", True) else diffusers_prev_timesteps(ts, set_alpha_to_one=one)
        ours = ddim_sample(f, jnp.asarray(x), ts, s, eta=eta, noise=jnp.asarray(noise), prev_timesteps=prev)
        err = np.abs(np.asarray(ours) - ref).max()
        scale = max(1.0, np.abs(ref).max())
        print(f"\n[ddim_sample vs diffusers: {toy} eps, {spacing}, set_alpha_to_one={one}, eta={eta}] "
              f"max|x|={np.abs(ref).max():.3g}  max abs err={err:.2e}  rel={err / scale:.2e}", end="")
        assert err <= 1e-5 * scale


def test_ddim_step_matches_diffusers_single_step():
    sch = DDIMScheduler(clip_sample=False)
    sch.set_timesteps(50)
    s = make_schedule()
    x = _x(3)
    e = np.tanh(_x(4))
    z = _x(5)
    for t in (980, 500, 0):
        prev = t - 20
        a_t, a_p = alpha_bar(s, t), alpha_bar(s, max(prev, -1))
        out = sch.step(torch.from_numpy(e), t, torch.from_numpy(x), eta=0.8, variance_noise=torch.from_numpy(z))
        ours, x0 = ddim_step(jnp.asarray(x), jnp.asarray(e), a_t, a_p, eta=0.8, noise=jnp.asarray(z),
                             return_pred_x0=True)
        assert np.abs(np.asarray(ours) - out.prev_sample.numpy()).max() < 1e-5
        assert np.abs(np.asarray(x0) - out.pred_original_sample.numpy()).max() < 1e-4 * max(1, np.abs(x0).max())
        np.testing.assert_array_equal(np.asarray(predict_x0(jnp.asarray(x), jnp.asarray(e), a_t)), np.asarray(x0))


def test_x0_is_never_clipped():
    s = make_schedule()
    x = jnp.full(SHAPE, 3.0)
    x0 = predict_x0(x, jnp.zeros(SHAPE), alpha_bar(s, 500))
    assert float(x0.max()) > 1.0


# ----------------------------------------------------------------------------------------------
# Inversion convention and reconstruction with the exact ε of Gaussian data
# ----------------------------------------------------------------------------------------------
def test_ddim_invert_matches_official_numpy_loop():
    s = make_schedule()
    ac = np.asarray(s.alphas_cumprod, np.float64)
    x0 = _x(6)
    seq = asyrp_timesteps(8)
    ours = ddim_invert(eps_jax, jnp.asarray(x0), seq, s)
    x = x0.astype(np.float64)
    for t, tn in zip(seq[:-1], seq[1:]):  # diffusion_latent.py:1034-1044
        e = eps_np(x, t)
        at, an = ac[t], ac[tn]
        x0_t = (x - e * np.sqrt(1 - at)) / np.sqrt(at)
        x = np.sqrt(an) * x0_t + np.sqrt(1 - an) * e
    assert np.abs(np.asarray(ours) - x).max() < 1e-5


MU_SCALE, S_DATA = 0.3, 0.5


def _gauss_eps(s):
    def eps_fn(x, t):
        a = alpha_bar(s, t)[:, None, None, None]
        mu = MU_SCALE * jnp.sin(jnp.arange(x.shape[1] * x.shape[2] * x.shape[3], dtype=x.dtype)).reshape(x.shape[1:])
        return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * mu) / (a * S_DATA**2 + 1 - a)

    return eps_fn


def test_reconstruction_error_shrinks_with_steps():
    s = make_schedule()
    eps_fn = _gauss_eps(s)
    shape = (8, 8, 8, 3)
    mu = MU_SCALE * np.sin(np.arange(8 * 8 * 3)).reshape(8, 8, 3)
    x0 = (mu + S_DATA * np.random.default_rng(7).standard_normal(shape)).astype(np.float32)
    rows = []
    for n in (10, 20, 50, 100):
        seq = asyrp_timesteps(n)
        lat = ddim_invert(eps_fn, jnp.asarray(x0), seq, s)
        rec = np.asarray(ddim_sample(eps_fn, lat, seq[::-1], s))
        mse = float(np.mean((rec - x0) ** 2))
        rows.append((n, mse, float(np.abs(rec - x0).max()), float(np.std(np.asarray(lat)))))
    print("\nDDIM invert→sample, exact ε for x0 ~ N(μ, 0.5²), 8×8×8×3, Asyrp grid")
    print("   n      MSE/dim     max|err|   std(x_lat)   (DDIM paper CIFAR-10: 10:.014 20:.0065 50:.0023 100:.0009)")
    for n, mse, mx, sd in rows:
        print(f"{n:4d}   {mse:.3e}   {mx:.3e}   {sd:.3f}")
    mses = [r[1] for r in rows]
    assert all(b < a for a, b in zip(mses, mses[1:])), mses
    assert mses[-1] < 1.5e-3  # DDIM paper, CIFAR-10, S=100: 0.0009
    assert mses[0] / mses[-1] > 30  # roughly first order in the step size


# ----------------------------------------------------------------------------------------------
# scan vs tqdm loop, determinism, vmap
# ----------------------------------------------------------------------------------------------
def test_scan_equals_progress_loop():
    s = make_schedule()
    x = jnp.asarray(_x(8))
    ts = ddim_timesteps(6)
    key = jax.random.PRNGKey(3)
    for eta in (0.0, 0.7):
        a, ta = ddim_sample(eps_jax, x, ts, s, eta=eta, key=key, return_trajectory=True)
        b, tb = ddim_sample(eps_jax, x, ts, s, eta=eta, key=key, return_trajectory=True, progress=True)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(ta["x"]), np.asarray(tb["x"]))
        np.testing.assert_array_equal(np.asarray(ta["pred_x0"]), np.asarray(tb["pred_x0"]))
        assert ta["x"].shape == (6,) + SHAPE
        np.testing.assert_array_equal(np.asarray(ta["x"][-1]), np.asarray(a))
    c = ddim_sample(eps_jax, x, ts, s, eta=0.7, key=key)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))  # deterministic for a key
    d = ddim_sample(eps_jax, x, ts, s, eta=0.7, key=jax.random.PRNGKey(4))
    assert np.abs(np.asarray(a) - np.asarray(d)).max() > 1e-3
    seq = asyrp_timesteps(6)
    a, ta = ddim_invert(eps_jax, x, seq, s, return_trajectory=True)
    b, tb = ddim_invert(eps_jax, x, seq, s, return_trajectory=True, progress=True)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(ta["x"]), np.asarray(tb["x"]))
    assert ta["x"].shape == (5,) + SHAPE and list(ta["t"]) == list(seq[:-1])


def test_vmap_equals_per_example_loop():
    s = make_schedule()
    x = jnp.asarray(_x(9))
    e = jnp.tanh(jnp.asarray(_x(10)))
    z = jnp.asarray(_x(11))
    a_t = alpha_bar(s, jnp.array([700, 300]))
    a_p = alpha_bar(s, jnp.array([650, -1]))
    batched = ddim_step(x, e, a_t, a_p, eta=0.5, noise=z)  # per-example ᾱ: [B] -> [B,1,1,1]
    mapped = jax.vmap(lambda xi, ei, ai, pi, zi: ddim_step(xi, ei, ai, pi, 0.5, zi))(x, e, a_t, a_p, z)
    loop = jnp.stack([ddim_step(x[i], e[i], a_t[i], a_p[i], 0.5, z[i]) for i in range(2)])
    np.testing.assert_allclose(np.asarray(batched), np.asarray(mapped), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(batched), np.asarray(loop), rtol=0, atol=1e-6)
    # whole sampler: batch == per-example (same per-step noise slices) == vmap over examples
    ts = ddim_timesteps(5)
    noise = jnp.asarray(np.random.default_rng(12).standard_normal((5,) + SHAPE).astype(np.float32))
    full = ddim_sample(eps_jax, x, ts, s, eta=0.3, noise=noise)
    per = jnp.concatenate([ddim_sample(eps_jax, x[i:i + 1], ts, s, eta=0.3, noise=noise[:, i:i + 1]) for i in range(2)])
    vm = jax.vmap(lambda xi, ni: ddim_sample(eps_jax, xi[None], ts, s, eta=0.3, noise=ni[:, None])[0],
                  in_axes=(0, 1))(x, noise)
    np.testing.assert_allclose(np.asarray(full), np.asarray(per), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(full), np.asarray(vm), rtol=0, atol=1e-6)
    inv = ddim_invert(eps_jax, x, asyrp_timesteps(5), s)
    inv1 = jnp.concatenate([ddim_invert(eps_jax, x[i:i + 1], asyrp_timesteps(5), s) for i in range(2)])
    np.testing.assert_allclose(np.asarray(inv), np.asarray(inv1), rtol=0, atol=1e-6)


def test_inside_user_jit():
    """ddim_sample / ddim_invert trace inside a user jit with traced parameters (no constants baked in)."""
    s = make_schedule()
    x = jnp.asarray(_x(13))

    @jax.jit
    def run(w, x):
        def f(x, t):
            return jnp.tanh(w * x + 0.3 * (t.astype(jnp.float32) / 1000.0)[:, None, None, None])

        lat = ddim_invert(f, x, asyrp_timesteps(4), s)
        return ddim_sample(f, lat, asyrp_timesteps(4)[::-1], s)

    got = run(jnp.float32(0.7), x)
    ref = ddim_sample(eps_jax, ddim_invert(eps_jax, x, asyrp_timesteps(4), s), asyrp_timesteps(4)[::-1], s)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_clipped_eps_fn_matches_diffusers_clip_sample(eta):
    """clipped_eps_fn + ddim_sample == DDIMScheduler(clip_sample=True).step(use_clipped_model_output=True);
    the tanh toy ε pushes P_t far outside [-1, 1], so the clipping is active at every step."""
    from jaxhspace.diffusion.ddim import clipped_eps_fn

    n = 10
    x = _x(1)
    noise = np.random.default_rng(2).standard_normal((n,) + SHAPE).astype(np.float32)
    sch = DDIMScheduler(clip_sample=True)
    sch.set_timesteps(n)
    xt, clipped = torch.from_numpy(x), 0
    for i, t in enumerate(sch.timesteps):
        out = sch.step(eps_torch(xt, int(t)), int(t), xt, eta=eta, use_clipped_model_output=True,
                       variance_noise=torch.from_numpy(noise[i]) if eta > 0 else None)
        clipped += int((out.pred_original_sample.abs() >= 1.0).sum())
        xt = out.prev_sample
    assert clipped > 0
    s = make_schedule()
    ours = ddim_sample(clipped_eps_fn(eps_jax, s), jnp.asarray(x), sch.timesteps.numpy(), s, eta=eta,
                       noise=jnp.asarray(noise))
    assert np.abs(np.asarray(ours) - xt.numpy()).max() < 1e-5
