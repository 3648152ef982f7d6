"""Tucker/HOSVD of the h-space Jacobians of a tiny random UNet vs the dense Jacobian, directions built
from the Tucker factors (shapes, norms, usable by edit_steps / delta_h), and a smoke run of the study.

Tiny UNet: block_out_channels (8, 16), one layer per block, attention in the last down block,
perturbed random init. Jacobians are taken at an 8x8 input (x = 8x8x3 = 192 dims, h = 4x4x16 = 256
dims) so that the dense references (``jax.jacfwd`` via ``dense_hosvd_reference``) stay cheap; the
study smoke runs the same weights at 32x32 (the probe's size).

Tolerances (randomized regime: top-32 Krylov SVD + 32 Hutchinson probes per side, i.e. the
engine's default use, not the exact regime where the SVD spans the whole row space):

* mode singular values: ``max_i |s_i - s_i^ref| / s_1^ref <= 2e-2`` over the kept rank + 1
  (measured <= 7e-3);
* factor subspaces: ranks are picked at the largest gap ``s_r / s_{r+1}`` (r <= 4) of each mode's
  dense spectrum; the largest principal angle must be <= 0.15 rad (random-init spectra have gaps of
  only 1.1-1.5, so the Hutchinson error on the tail is amplified by ~1 / (gap - 1));
* the core is exact given the factors: ``||core||^2`` vs the dense tensor projected onto the
  returned factors, rel. 1e-4; ``||J||_F^2`` exact (min(m, n) = 192 <= exact_norm_max_dim), rel. 1e-4.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhspace.directions.hosvd_directions import (channel_directions, core_ranking, hosvd_haas, hosvd_pullback,
                                                   matched_svd_rank, separable_directions, svd_num_params,
                                                   top_separable_directions, tucker_num_params)
from jaxhspace.directions.pullback import pullback_operator
from jaxhspace.editing.pullback_edit import edit_steps
from jaxhspace.geometry.hosvd import dense_hosvd_reference, jacobian_hosvd
from jaxhspace.geometry.svd import principal_angles, randomized_block_krylov
from jaxhspace.models.functional import encode_fn, eps_fn, eps_of_h, h_of_x
from jaxhspace.models.unet import UNet2DModel, UNetConfig

TINY = dict(sample_size=32, block_out_channels=[8, 16], layers_per_block=1,
            down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"],
            norm_num_groups=4, norm_eps=1e-6, attention_head_dim=None, flip_sin_to_cos=False, freq_shift=1,
            downsample_padding=0)
T = 500
S = 8
KW = dict(svd_rank=32, n_probes=32)


@pytest.fixture(scope="module")
def tiny():
    model = UNet2DModel(UNetConfig.from_dict(TINY))
    # Random params from the init's shapes (eval_shape only: compiling model.init costs ~25 s of CPU):
    # kernels N(0, 1/fan_in) (LeCun normal, flax's default), biases N(0, 0.05^2), norm scales 1 + N(0, 0.05^2).
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, S, S, 3)),
                            jnp.zeros((1,), jnp.int32))["params"]
    rng = np.random.default_rng(0)

    def draw(path, s):
        name = str(path[-1].key)
        z = rng.standard_normal(s.shape).astype(np.float32)
        if name == "kernel":
            return jnp.asarray(z / np.sqrt(np.prod(s.shape[:-1])))
        return jnp.asarray((1.0 if name == "scale" else 0.0) + 0.05 * z)

    params = jax.tree_util.tree_map_with_path(draw, shapes)
    x = jax.random.normal(jax.random.PRNGKey(2), (S, S, 3))
    return model, params, x


def _gap_ranks(svs, rmax=4):
    """Per mode, the rank r <= rmax (and < d) with the largest gap s_r / s_{r+1}."""
    out = []
    for s in svs:
        s = np.asarray(s)
        top = min(rmax, len(s) - 1)
        out.append(int(np.argmax(s[:top] / s[1:top + 1])) + 1)
    return tuple(out)


def _compare(res, ref):
    """(max mode-sigma error rel. to sigma_1, max factor angle, min gap) against the dense HOSVD."""
    sv_err, angles, gaps = [], [], []
    for s_m, s_r, F, R in zip(res.out_singular_values + res.in_singular_values,
                              ref["out_singular_values"] + ref["in_singular_values"],
                              res.out_factors + res.in_factors, ref["out_factors"] + ref["in_factors"]):
        r = F.shape[1]
        n = min(r + 1, len(s_r))
        sv_err.append(float(np.max(np.abs(np.asarray(s_m[:n]) - s_r[:n])) / s_r[0]))
        angles.append(principal_angles(np.asarray(F).T, R[:, :r].T))
        gaps.append(s_r[r - 1] / s_r[r] if r < len(s_r) else np.inf)
    return max(sv_err), max(angles), min(gaps)


def _dense_core_energy(res, ref):
    T_ = ref["tensor"]
    for n, F in enumerate(list(res.out_factors) + list(res.in_factors)):
        T_ = np.moveaxis(np.tensordot(T_, np.asarray(F, np.float64), axes=([n], [0])), -1, n)
    return float(np.sum(T_**2))


def _check_against_dense(res, ref, op_counts, name):
    sv_err, angle, gap = _compare(res, ref)
    core_e = _dense_core_energy(res, ref)
    print(f"\n{name}: ranks out {res.out_ranks} in {res.in_ranks}, min gap {gap:.3f}, mode sigma err {sv_err:.1e}, "
          f"factor angle {angle:.3f} rad, captured {res.captured_energy:.4f} (svd part {res.svd_energy:.3f}), "
          f"{res.n_jvp} JVP + {res.n_vjp} VJP")
    assert sv_err <= 2e-2
    assert angle <= 0.15
    assert res.frobenius_exact and abs(res.frobenius_sq - ref["frobenius_sq"]) <= 1e-4 * ref["frobenius_sq"]
    assert abs(float(np.sum(np.asarray(res.core, np.float64) ** 2)) - core_e) <= 1e-4 * core_e
    assert abs(res.captured_energy - core_e / ref["frobenius_sq"]) <= 1e-4
    assert (res.n_jvp, res.n_vjp) == op_counts


def _expected_counts(res, op_dims, svd_jvp_vjp):
    """Cost formula of jacobian_hosvd: SVD stage + p VJPs + probes (each side) + exact norm + core."""
    m, n = op_dims
    p = KW["svd_rank"]
    j, v = svd_jvp_vjp
    j += KW["n_probes"]
    v += p + KW["n_probes"]
    if n <= m:
        j += n
    else:
        v += m
    rin, rout = int(np.prod(res.in_ranks)), int(np.prod(res.out_ranks))
    if rin <= rout:
        j += rin
    else:
        v += rout
    return j, v


@pytest.fixture(scope="module")
def pullback_case(tiny):
    """Dense HOSVD (one mode per axis) and the matrix-free Tucker model of J = dh/dx at the gap ranks.

    The Krylov SVD stage is run separately (and passed in) so that the Tucker stage's own products
    can be checked against the cost formula."""
    model, params, x = tiny
    ref = dense_hosvd_reference(h_of_x(model, params, T), x)
    oranks = _gap_ranks(ref["out_singular_values"])
    iranks = _gap_ranks(ref["in_singular_values"])
    op = pullback_operator(model, params, x, T)
    # a few Krylov iterations suffice: the Gram split is exact on any Rayleigh-Ritz subspace
    svd = randomized_block_krylov(op, KW["svd_rank"], 5, tol=1e-3, max_iters=3)
    res = jacobian_hosvd(op, oranks, iranks, 3, out_modes="axes", in_modes="axes", svd=svd,
                         n_probes=KW["n_probes"])
    return ref, res, svd


def test_pullback_hosvd_matches_dense(tiny, pullback_case):
    ref, res, svd = pullback_case
    assert res.out_shape == (4, 4, 16) and res.in_shape == (S, S, 3)
    assert svd.n_jvp > 0 and svd.n_vjp > 0
    # products of the Tucker stage (SVD stage passed in): p VJPs, probes per side, exact norm, core
    _check_against_dense(res, ref, _expected_counts(res, (256, 192), (0, 0)), "pullback dh/dx, axes modes")
    # the convenience wrapper (its own operator) reproduces the model for the same key and SVD stage
    model, params, x = tiny
    res2 = hosvd_pullback(model, params, x, T, res.out_ranks, res.in_ranks, 3, out_modes="axes", in_modes="axes",
                          svd=svd, n_probes=KW["n_probes"])
    np.testing.assert_allclose(res2.captured_energy, res.captured_energy, rtol=1e-4)
    assert (res2.n_jvp, res2.n_vjp) == (res.n_jvp, res.n_vjp)


def test_haas_hosvd_matches_dense(tiny):
    """J = deps/dh with (spatial, channel) modes on both sides, through the hosvd_haas wrapper."""
    model, params, x = tiny
    h, skips, temb = encode_fn(model, params)(x[None], jnp.full((1,), T))
    ref = dense_hosvd_reference(eps_of_h(model, params, skips, temb), h[0], out_modes="spatial_channel",
                                in_modes="spatial_channel")
    oranks = _gap_ranks(ref["out_singular_values"])
    iranks = _gap_ranks(ref["in_singular_values"])
    res = hosvd_haas(model, params, x, T, oranks, iranks, 4, **KW)  # SVD stage inside, counted too
    assert res.in_shape == (4, 4, 16) and res.out_shape == (S, S, 3)
    assert [F.shape[0] for F in res.in_factors] == [16, 16] and [F.shape[0] for F in res.out_factors] == [64, 3]
    # the Krylov stage is included in the counts, on top of the Tucker stage's formula (m = 192, n = 256)
    j, v = _expected_counts(res, (192, 256), (0, 0))
    assert res.n_jvp > j and res.n_vjp > v
    _check_against_dense(res, ref, (res.n_jvp, res.n_vjp), "haas deps/dh, spatial_channel modes")
    # Haas: h is the input side -> channel directions from the input channel factor
    dh = channel_directions(res, side="in")
    assert dh.shape == (iranks[1], 4, 4, 16)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(dh).reshape(len(dh), -1), axis=1), 1.0, rtol=1e-5)


def test_directions_shapes_norms_and_editing(tiny, pullback_case):
    model, params, x = tiny
    _, res, _ = pullback_case
    # (a) channel directions in h (pullback: h is the output side), orthonormal, constant over positions
    dh = np.asarray(channel_directions(res, side="out"))
    rc = res.out_ranks[2]
    assert dh.shape == (rc, 4, 4, 16)
    G = dh.reshape(rc, -1) @ dh.reshape(rc, -1).T
    np.testing.assert_allclose(G, np.eye(rc), atol=1e-5)
    np.testing.assert_allclose(dh, np.broadcast_to(dh[:, :1, :1], dh.shape), atol=0)
    assert abs(abs(np.dot(dh[0, 0, 0], np.asarray(res.out_factors[2])[:, 0])) - 0.25) <= 1e-5  # c / sqrt(16)
    # usable as delta_h: finite, changes eps, linear response for small scales
    xb, tb = x[None], jnp.full((1,), T)
    e0 = model.apply({"params": params}, xb, tb)
    e1 = model.apply({"params": params}, xb, tb, delta_h=jnp.asarray(dh[:1]))
    assert bool(jnp.all(jnp.isfinite(e1))) and float(jnp.max(jnp.abs(e1 - e0))) > 0

    # (b) separable x directions: leading row (x) column (x) colour vector, unit norm
    v = np.asarray(separable_directions(res, (0, 0, 0), side="in"))
    assert v.shape == (1, S, S, 3)
    F = [np.asarray(f, np.float64) for f in res.in_factors]
    expect = np.einsum("a,b,c->abc", F[0][:, 0], F[1][:, 0], F[2][:, 0])
    np.testing.assert_allclose(v[0], expect / np.linalg.norm(expect), atol=1e-6)

    # (c) ranking by core energy: sorted, sums to ||core||^2, tuples are valid, directions orthonormal
    core2 = float(np.sum(np.asarray(res.core, np.float64) ** 2))
    for by in ("in", "out", "entry"):
        rows = core_ranking(res, by=by)
        e = [r["energy"] for r in rows]
        assert e == sorted(e, reverse=True)
        np.testing.assert_allclose(sum(e), core2, rtol=1e-5)
        np.testing.assert_allclose(rows[0]["fraction_jacobian"], e[0] / res.frobenius_sq, rtol=1e-6)
    entry = core_ranking(res, 1, by="entry")[0]
    assert abs(entry["value"] ** 2 - entry["energy"]) <= 1e-6 * entry["energy"]
    k = min(3, int(np.prod(res.in_ranks)))
    V, rows = top_separable_directions(res, k, side="in")
    assert V.shape == (k, S, S, 3) and len({r["in_index"] for r in rows}) == k
    np.testing.assert_allclose(np.asarray(V).reshape(k, -1) @ np.asarray(V).reshape(k, -1).T, np.eye(k), atol=1e-5)
    # the ranking energy is the Tucker model's squared gain ||P_U J v||^2 = ||res.apply(v)||^2
    np.testing.assert_allclose(float(jnp.sum(res.apply(V[0]) ** 2)), rows[0]["energy"], rtol=1e-4)
    Ve, _ = top_separable_directions(res, k, side="in", by="entry")
    assert Ve.shape == (k, S, S, 3)

    # usable by edit_steps: one step, closed form
    f = eps_fn(model, params)
    x1 = edit_steps(f, xb, T, V[0], gamma=0.3, n_steps=1, lam=0.5)
    np.testing.assert_allclose(np.asarray(x1), np.asarray(xb + 0.3 * (f(xb + 0.5 * V[0], tb) - f(xb, tb))), atol=1e-5)

    # parameter counts
    assert tucker_num_params(res) == (sum(r * d for r, d in zip(res.out_ranks, (4, 4, 16)))
                                      + sum(r * d for r, d in zip(res.in_ranks, (S, S, 3)))
                                      + int(np.prod(res.out_ranks + res.in_ranks)))
    assert svd_num_params(256, 192, 3) == 3 * 449 and matched_svd_rank(3 * 449 + 100, 256, 192) == 3
    assert matched_svd_rank(10, 256, 192) == 1


def test_bad_inputs(pullback_case):
    _, res, _ = pullback_case
    with pytest.raises(ValueError, match="one entry per mode"):
        separable_directions(res, [(0, 0)], side="in")
    with pytest.raises(ValueError, match="outside the kept rank"):
        separable_directions(res, [(0, 0, res.in_ranks[2])], side="in")
    with pytest.raises(ValueError, match="side must be"):
        channel_directions(res, side="h")
    with pytest.raises(ValueError, match="by must be"):
        core_ranking(res, by="diag")
    flat = type(res)(**{**res.__dict__, "out_modes": ((0, 1, 2),)})
    with pytest.raises(ValueError, match="channel axis"):
        channel_directions(flat, side="out")


def test_study_smoke(tiny, tmp_path):
    """The study job end to end on the tiny random UNet (saved to a folder, run at 32x32) with tiny settings."""
    import json
    import os

    from configs.hosvd import get_config
    from jaxhspace.checkpoints import save_unet_diffusers
    from jaxhspace.tasks import get_task

    model, params, _ = tiny
    save_unet_diffusers(str(tmp_path / "unet"), model, params)
    c = get_config()
    c.model_path = str(tmp_path / "unet")
    c.num_images, c.n_steps, c.edit_t, c.t_boost = 1, 4, 600, 0
    # equal block sizes (3) wherever possible: each new product batch shape is a new XLA compile
    c.svd_k, c.svd_max_iters, c.n_probes, c.hooi_iters = 3, 2, 3, 0
    c.rank_choices = (("spatial_channel", (2, 2), "spatial_channel", (1, 3)),)
    c.n_dirs, c.n_edit_steps, c.upscale = 3, 1, 1
    out = str(tmp_path / "run")
    m = get_task("hosvd")(c, out)
    for name in ("hosvd_grid.png", "hosvd_table.md", "hosvd_table.json", "metrics.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    e = m["energy"][0]
    assert e["tucker_params"] == 2 * 256 + 2 * 16 + 1 * 1024 + 3 * 3 + 12  # h = 16x16x16, x = 32x32x3
    assert e["svd_k"] == 1 and e["svd_params"] == 4096 + 3072 + 1
    assert 0 < e["tucker_energy"] <= 1 and 0 < e["svd_energy"] <= 1
    img = m["per_image"][0]
    assert img["svd_products"]["n_jvp"] > 0 and img["choices"][0]["products"]["n_vjp"] > 0
    assert len(m["edit_scores"]) == 12 and {r["method"] for r in m["edit_scores"]} == {"svd", "hosvd"}
    assert "Tucker" in m["summary"]
    table = json.load(open(os.path.join(out, "hosvd_table.json")))
    assert table["energy"][0]["tucker_params"] == e["tucker_params"]
