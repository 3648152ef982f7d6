"""The Asyrp asymmetric step and sampler vs DDIM and vs a float64 NumPy port of the official code."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp

from jaxhspace.diffusion.asyrp import asyrp_gates, asyrp_reverse, asyrp_step
from jaxhspace.diffusion.ddim import ddim_sample, ddim_step
from jaxhspace.diffusion.schedule import alpha_bar, asyrp_timesteps, make_schedule

SHAPE = (2, 4, 4, 3)
SCHED = make_schedule()
# official: β and cumprod in float64 (diffusion_utils.py:5-9), then `extract` casts ᾱ to float32 (:12-20);
# the reference below does all arithmetic in float64 on those float32 ᾱ values.
AC64 = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000)).astype(np.float32).astype(np.float64)


def _x(seed):
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


def official_step_np(xt, et, et_mod, at, at_next, eta, z):
    """utils/diffusion_utils.py:84-97, float64, index given (edited P_t)."""
    x0_t = (xt - et_mod * np.sqrt(1 - at)) / np.sqrt(at)
    if eta == 0:
        return np.sqrt(at_next) * x0_t + np.sqrt(1 - at_next) * et
    c1 = eta * np.sqrt((1 - at / at_next) * (1 - at_next) / (1 - at))
    c2 = np.sqrt((1 - at_next) - c1**2)
    return np.sqrt(at_next) * x0_t + c2 * et + c1 * z


# (t, t_prev) pairs, including the first step of the grid and the last step to ᾱ = 1
PAIRS = [(999, 973), (512, 486), (25, 0), (0, -1)]


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_asyrp_step_without_edit_is_ddim_step_exactly(eta):
    x, e, z = jnp.asarray(_x(0)), jnp.tanh(jnp.asarray(_x(1))), jnp.asarray(_x(2))
    for t, tp in PAIRS:
        a_t, a_p = alpha_bar(SCHED, jnp.full((2,), t)), alpha_bar(SCHED, jnp.full((2,), tp))
        noise = z if eta > 0 else None
        a = asyrp_step(x, e, e, a_t, a_p, eta, noise)
        b = ddim_step(x, e, a_t, a_p, eta, noise)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        # jitted too
        a = jax.jit(asyrp_step)(x, e, e, a_t, a_p, eta, z)
        b = jax.jit(ddim_step)(x, e, a_t, a_p, eta, z)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_asyrp_step_matches_official_float64(eta):
    x, e, z = _x(3), np.tanh(_x(4)), _x(5)
    e_mod = e + 0.2 * np.cos(_x(6))
    worst = 0.0
    for t, tp in PAIRS:
        at, an = AC64[t], (1.0 if tp < 0 else AC64[tp])
        ref = official_step_np(x.astype(np.float64), e.astype(np.float64), e_mod.astype(np.float64), at, an, eta,
                               z.astype(np.float64))
        ours, x0 = asyrp_step(jnp.asarray(x), jnp.asarray(e), jnp.asarray(e_mod), alpha_bar(SCHED, t),
                              alpha_bar(SCHED, tp), eta, jnp.asarray(z) if eta else None, return_pred_x0=True)
        err = np.abs(np.asarray(ours, np.float64) - ref).max()
        worst = max(worst, err)
        assert err < 1e-6, (t, tp, err)
        # P_t comes from the edited ε, the direction term from the unedited one
        np.testing.assert_allclose(np.asarray(x0), (x - np.sqrt(1 - at) * e_mod) / np.sqrt(at), rtol=2e-6, atol=1e-5)
    print(f"\n[asyrp_step vs official float64, eta={eta}] max abs err = {worst:.2e}", end="")
    # and the edit really changes the step
    a_t, a_p = alpha_bar(SCHED, 512), alpha_bar(SCHED, 486)
    z = jnp.asarray(z) if eta else None
    assert np.abs(np.asarray(asyrp_step(jnp.asarray(x), jnp.asarray(e), jnp.asarray(e_mod), a_t, a_p, eta, z))
                  - np.asarray(ddim_step(jnp.asarray(x), jnp.asarray(e), a_t, a_p, eta, z))).max() > 1e-3


# ----------------------------------------------------------------------------------------------
# asyrp_reverse
# ----------------------------------------------------------------------------------------------
def eps_base(x, t):
    """Exact ε of x0 ~ N(0.3, 0.5²) plus a small nonlinear term: keeps samples O(1)."""
    a = alpha_bar(SCHED, t)[:, None, None, None]
    tt = (t.astype(jnp.float32) / 1000.0)[:, None, None, None]
    return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * 0.3) / (a * 0.25 + 1 - a) + 0.05 * jnp.tanh(x + tt)


def eps_base_np(x, t):
    a = AC64[t]
    return np.sqrt(1 - a) * (x - np.sqrt(a) * 0.3) / (a * 0.25 + 1 - a) + 0.05 * np.tanh(x + t / 1000.0)


def pair_no_edit(x, t):
    e = eps_base(x, t)
    return e, e


def pair_fn(x, t, edit):
    """ε depends (slightly) on the edit flag it receives, so a wrong flag shows up in the result;
    ε̃ differs from ε everywhere, so only the sampler's own gating makes it inactive below t_edit."""
    e = eps_base(x, t) + 1e-3 * edit.astype(x.dtype)[:, None, None, None]
    return e, e + 0.02 * jnp.cos(x)


def official_reverse_np(x, seq_desc, t_edit, t_boost, noise, symmetric=False, eta=0.0):
    """save_image loop (diffusion_latent.py:499-520) in float64 NumPy with given per-step noise."""
    x = x.astype(np.float64)
    nxt = list(seq_desc[1:]) + [-1]
    for i, (t, tn) in enumerate(zip(seq_desc, nxt)):
        edit = t >= t_edit
        e = eps_base_np(x, t) + (1e-3 if edit else 0.0)
        e_mod = e + 0.02 * np.cos(x) if edit else e
        at, an = AC64[t], (1.0 if tn < 0 else AC64[tn])
        step_eta = 1.0 if t < t_boost else eta
        x = official_step_np(x, e_mod if symmetric else e, e_mod, at, an, step_eta, noise[i].astype(np.float64))
    return x


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_asyrp_reverse_without_edit_equals_ddim_sample(eta):
    x = jnp.asarray(_x(7))
    seq = asyrp_timesteps(12)[::-1]
    key = jax.random.PRNGKey(0)
    ref = ddim_sample(eps_base, x, seq, SCHED, eta=eta, key=key)
    # t_edit above every grid point: never edit; t_boost = 0: never boost
    got = asyrp_reverse(lambda x, t, edit: pair_no_edit(x, t), x, seq, SCHED, t_edit=1000, t_boost=0,
                        key=key, eta=eta)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=0, atol=1e-6)
    # ε̃ ≠ ε but gated off everywhere (the pair_fn flag is False at every step) -> also plain DDIM
    got = asyrp_reverse(lambda x, t, edit: (eps_base(x, t), eps_base(x, t) + 1.0), x, seq, SCHED,
                        t_edit=1000, t_boost=0, key=key, eta=eta)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=0, atol=1e-6)


@pytest.mark.parametrize("symmetric", [False, True])
def test_asyrp_reverse_gating_matches_official_loop(symmetric):
    n, t_edit, t_boost = 20, 500, 200
    seq = asyrp_timesteps(n)[::-1]
    x = _x(8)
    noise = np.random.default_rng(9).standard_normal((n,) + SHAPE).astype(np.float32)
    out, traj = asyrp_reverse(pair_fn, jnp.asarray(x), seq, SCHED, t_edit, t_boost, noise=jnp.asarray(noise),
                              symmetric=symmetric, return_trajectory=True)
    # the gates: edit iff t >= 500 (official: `if t[0] >= t_edit`), eta = 1 iff t < 200 (strict)
    exp_edit = np.array([t >= 500 for t in seq])
    exp_eta = np.array([1.0 if t < 200 else 0.0 for t in seq], np.float32)
    np.testing.assert_array_equal(traj["edit"], exp_edit)
    np.testing.assert_array_equal(traj["eta"], exp_eta)
    assert list(seq[traj["edit"]]) == [999, 946, 893, 841, 788, 736, 683, 630, 578, 525]
    assert list(seq[traj["eta"] == 1]) == [157, 105, 52, 0]
    ref = official_reverse_np(x, seq, t_edit, t_boost, noise, symmetric=symmetric)
    err = np.abs(np.asarray(out, np.float64) - ref).max()
    print(f"\n[asyrp_reverse vs official float64 loop, n={n}, symmetric={symmetric}] max abs err = {err:.2e}", end="")
    assert err < 1e-5
    # a wrong gate (e.g. editing one more step) is visible
    bad = official_reverse_np(x, seq, 470, t_boost, noise, symmetric=symmetric)
    assert np.abs(bad - ref).max() > 100 * max(err, 1e-7)
    # asymmetric and symmetric variants differ
    other = asyrp_reverse(pair_fn, jnp.asarray(x), seq, SCHED, t_edit, t_boost, noise=jnp.asarray(noise),
                          symmetric=not symmetric)
    assert np.abs(np.asarray(other) - np.asarray(out)).max() > 1e-3


def test_asyrp_gates_helper():
    edit, eta = asyrp_gates([999, 500, 499, 200, 199, 0], t_edit=500, t_boost=200, eta=0.0, boost_eta=1.0)
    np.testing.assert_array_equal(edit, [True, True, False, False, False, False])
    np.testing.assert_array_equal(eta, [0, 0, 0, 0, 1, 1])


def test_asyrp_reverse_scan_equals_progress_and_key_determinism():
    x = jnp.asarray(_x(10))
    seq = asyrp_timesteps(8)[::-1]
    key = jax.random.PRNGKey(5)
    a, ta = asyrp_reverse(pair_fn, x, seq, SCHED, 500, 300, key=key, return_trajectory=True)
    b, tb = asyrp_reverse(pair_fn, x, seq, SCHED, 500, 300, key=key, return_trajectory=True, progress=True)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(ta["pred_x0"]), np.asarray(tb["pred_x0"]))
    c = asyrp_reverse(pair_fn, x, seq, SCHED, 500, 300, key=key)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    # fold_in(key, i) per step: equal to precomputed noise from the same keys
    z = jnp.stack([jax.random.normal(jax.random.fold_in(key, i), x.shape) for i in range(len(seq))])
    d = asyrp_reverse(pair_fn, x, seq, SCHED, 500, 300, noise=z)
    np.testing.assert_allclose(np.asarray(a), np.asarray(d), rtol=0, atol=1e-6)
    # vmap over examples == batch (precomputed noise, so per-example noise is the batch slice)
    vm = jax.vmap(lambda xi, zi: asyrp_reverse(pair_fn, xi[None], seq, SCHED, 500, 300, noise=zi[:, None])[0],
                  in_axes=(0, 1))(x, z)
    np.testing.assert_allclose(np.asarray(vm), np.asarray(d), rtol=0, atol=1e-6)


def test_asyrp_reverse_bad_inputs():
    x = jnp.asarray(_x(11))
    with pytest.raises(ValueError, match="key"):  # boosting needs randomness
        asyrp_reverse(pair_fn, x, asyrp_timesteps(5)[::-1], SCHED, 500, 200)
    with pytest.raises(ValueError, match="descending"):
        asyrp_reverse(pair_fn, x, asyrp_timesteps(5), SCHED, 500, 0)
    with pytest.raises(ValueError, match="noise"):
        asyrp_step(x, x, x, 0.5, 0.6, eta=1.0)
