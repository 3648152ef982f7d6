"""Thick-restart Lanczos bidiagonalisation SVD (jaxhspace.geometry.lanczos) against dense float64 SVDs of analytic
maps with known spectra and of a tiny UNet; jit, vmap over images, product counts, errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhspace.geometry.lanczos import lanczos_bidiag_svd, lanczos_svd_core, lanczos_svd_of
from jaxhspace.geometry.operators import JacobianOperator
from jaxhspace.geometry.svd import dense_svd_reference, principal_angles, two_sided_residuals

M, N = 48, 64  # output 48 = [4, 4, 3], input 64 = [4, 4, 4]
IN_SHAPE, OUT_SHAPE = (4, 4, 4), (4, 4, 3)
K = 6
TOL = 1e-6


def _spectrum(name):
    i = np.arange(M, dtype=np.float64)
    return {
        "decaying": 10.0 * 0.8 ** i,
        "clustered": np.concatenate([[5.0, 4.99, 4.98, 3.0, 2.99, 2.98], 1.0 + 0.001 * np.arange(M - 6)[::-1]]),
        "flat": 1.0 + 1e-3 * np.linspace(1.0, 0.0, M),
        "rankdef": np.concatenate([[4.0, 3.0, 2.0, 1.0], np.zeros(M - 4)]),
    }[name]


def _matrix(name):
    """A = U diag(sig) V^T (m x n) with the designed spectrum, float32."""
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.standard_normal((M, M)))
    V, _ = np.linalg.qr(rng.standard_normal((N, M)))
    return jnp.asarray((U * _spectrum(name)) @ V.T, jnp.float32)


def _map(name):
    """f(x) = tanh(A x) reshaped; at x = 0 its Jacobian is A (known spectrum)."""
    A = _matrix(name)
    return lambda x: jnp.tanh(A @ x.reshape(-1)).reshape(OUT_SHAPE)


X0 = jnp.zeros(IN_SHAPE)


@functools.lru_cache(maxsize=None)
def _solver(b):
    """One compiled solver per block size, the matrix a traced argument (no recompilation per spectrum)."""
    return jax.jit(lambda A, key: lanczos_svd_core(lambda R: R @ A.T, lambda R: R @ A, N, M, K, key, tol=TOL,
                                                   block_size=b))


@pytest.mark.parametrize("name", ["decaying", "clustered", "flat", "rankdef"])
@pytest.mark.parametrize("b", [1, 3])
def test_known_spectra_match_dense(name, b):
    sig = _spectrum(name)
    A = _matrix(name)
    J = np.asarray(A, np.float64)
    Ur, Sr, Vr = np.linalg.svd(J)  # dense float64 reference
    res = _solver(b)(A, jax.random.PRNGKey(1))
    assert bool(jnp.all(res.converged)) and not bool(res.nan)
    s, u, v = (np.asarray(a, np.float64) for a in (res.s, res.u, res.v))
    nz = sig[:K] > 0
    np.testing.assert_allclose(Sr[:K][nz], sig[:K][nz], rtol=1e-5)  # the reference agrees with the design
    np.testing.assert_allclose(s[nz], Sr[:K][nz], rtol=1e-5)
    # explicit two-sided residuals, relative to s_1, below tol (float32 products: allow 3x)
    res_r = np.linalg.norm(v @ J.T - s[:, None] * u, axis=1)
    res_l = np.linalg.norm(u @ J - s[:, None] * v, axis=1)
    assert max(res_r.max(), res_l.max()) <= 3 * TOL * s[0], (res_r.max() / s[0], res_l.max() / s[0])
    assert np.asarray(res.residuals).max() <= TOL * s[0]
    if name in ("decaying", "clustered"):  # the gap after k (and inside the clusters) determines the vectors
        assert principal_angles(v, Vr[:K]) <= 1e-2 and principal_angles(u, Ur[:, :K].T) <= 1e-2
    zero = np.asarray(res.zero)
    if name == "rankdef":
        assert zero.tolist() == [False] * 4 + [True] * (K - 4) and np.all(s[4:] == 0)
        assert principal_angles(v[:4], Vr[:4]) <= 1e-2
        assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)  # flagged triplets are still unit vectors
    else:
        assert not zero.any()


def test_operator_wrapper_matches_dense():
    """The public JacobianOperator path (tanh map at 0, Jacobian A), counts added to the operator."""
    f = _map("decaying")
    ref = dense_svd_reference(f, X0, K)
    op = JacobianOperator(f, X0)
    res = lanczos_bidiag_svd(op, K, jax.random.PRNGKey(1), tol=TOL)
    assert res.converged and res.u.shape == (K,) + OUT_SHAPE and res.v.shape == (K,) + IN_SHAPE
    np.testing.assert_allclose(np.asarray(res.s), ref.s[:K], rtol=1e-5)
    assert principal_angles(res.v, ref.v[:K]) <= 1e-2
    assert res.n_jvp == op.n_jvp == res.n_vjp == op.n_vjp > 0
    n0 = op.n_products
    explicit = np.asarray(two_sided_residuals(op, res.u, res.s, res.v))
    assert op.n_products == n0 + 2 * K and explicit.max() <= 3 * TOL * float(res.s[0])


def test_product_counts_equal_columns_evaluated_under_jit():
    """Count the columns inside the compiled loop with a host callback, compare with the returned counts."""
    A = _matrix("decaying")
    seen = {"jvp": 0, "vjp": 0}

    def bump(which, cols):
        seen[which] += int(cols)

    def matmat(R):
        jax.debug.callback(bump, "jvp", R.shape[0])
        return R @ A.T

    def rmatmat(R):
        jax.debug.callback(bump, "vjp", R.shape[0])
        return R @ A

    for b in (1, 2):
        seen.update(jvp=0, vjp=0)
        run = jax.jit(lambda key: lanczos_svd_core(matmat, rmatmat, N, M, K, key, tol=TOL, block_size=b))
        out = jax.block_until_ready(run(jax.random.PRNGKey(0)))
        assert int(out.n_jvp) == seen["jvp"] > 0 and int(out.n_vjp) == seen["vjp"] > 0, (b, out.n_jvp, seen)
        assert int(out.n_jvp) == b * int(out.steps)


def test_budget():
    op = JacobianOperator(_map("flat"), X0)
    res = lanczos_bidiag_svd(op, K, 0, tol=TOL, max_products=40)
    assert res.n_jvp == res.n_vjp == 20 == op.n_jvp == op.n_vjp and not res.converged


@pytest.fixture(scope="module")
def tiny_unet():
    from jaxhspace.models.functional import h_of_x
    from jaxhspace.models.unet import UNet2DModel, UNetConfig

    cfg = dict(sample_size=8, block_out_channels=[8, 16], layers_per_block=1,
               down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"],
               norm_num_groups=4, norm_eps=1e-6, attention_head_dim=None)
    model = UNet2DModel(UNetConfig.from_dict(cfg))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,), jnp.int32))["params"]
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    f = h_of_x(model, params, 500)  # x [8, 8, 3] (n = 192) -> h [4, 4, 16] (m = 256)
    xs = jax.random.normal(jax.random.PRNGKey(2), (3, 8, 8, 3))
    return f, xs


@pytest.mark.parametrize("b", [1, 4])
def test_tiny_unet_matches_dense(tiny_unet, b):
    f, xs = tiny_unet
    ref = dense_svd_reference(f, xs[0], 9)
    k = 4
    op = JacobianOperator(f, xs[0])
    res = lanczos_bidiag_svd(op, k, jax.random.PRNGKey(3), tol=TOL, block_size=b)
    assert res.converged
    np.testing.assert_allclose(np.asarray(res.s), ref.s[:k], rtol=1e-5)
    gap = ref.s[k - 1] / ref.s[k]
    if gap > 1.05:
        assert principal_angles(res.v, ref.v[:k]) <= 1e-2, gap
    assert np.asarray(two_sided_residuals(op, res.u, res.s, res.v)).max() <= 3 * TOL * ref.s[0]


def test_vmap_over_images_equals_unbatched(tiny_unet):
    """One compiled vmapped call over 3 images; each image's triplets and counts equal its own jitted run."""
    f, xs = tiny_unet
    k = 4
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    one = jax.jit(lambda x, key: lanczos_svd_of(f, x, k, key, tol=TOL))
    batched = jax.jit(jax.vmap(lambda x, key: lanczos_svd_of(f, x, k, key, tol=TOL)))(xs, keys)
    assert batched.v.shape == (3, k, 8, 8, 3) and batched.n_jvp.shape == (3,)
    for i in range(3):
        r = one(xs[i], keys[i])
        assert bool(jnp.all(r.converged)) and bool(jnp.all(batched.converged[i]))
        assert int(r.n_jvp) == int(batched.n_jvp[i]) and int(r.steps) == int(batched.steps[i])
        np.testing.assert_allclose(np.asarray(batched.s[i]), np.asarray(r.s), rtol=1e-5)
        ref = dense_svd_reference(f, xs[i], k + 1)
        np.testing.assert_allclose(np.asarray(r.s), ref.s[:k], rtol=1e-5)
        if ref.s[k - 1] / ref.s[k] > 1.05:
            assert principal_angles(batched.v[i], r.v) <= 1e-3


def test_errors():
    f = _map("decaying")
    op = JacobianOperator(f, X0)
    with pytest.raises(ValueError, match="k="):
        lanczos_bidiag_svd(op, M + 1, 0)
    with pytest.raises(ValueError, match="tol"):
        lanczos_bidiag_svd(op, 2, 0, tol=0.0)
    with pytest.raises(ValueError, match="tol"):
        lanczos_bidiag_svd(op, 2, 0, tol=-1e-3)
    with pytest.raises(ValueError, match="block_size"):
        lanczos_bidiag_svd(op, 2, 0, block_size=0)
    assert op.n_products == 0  # raised before any product

    def f_nan(x):  # finite at x = 0, but its Jacobian has a NaN column (0 * inf)
        w = jnp.ones(N).at[5].set(jnp.inf)
        return jnp.tanh(x.reshape(-1) * w)[:M].reshape(OUT_SHAPE) * 1.0

    op = JacobianOperator(f_nan, X0)
    with pytest.raises(FloatingPointError, match="NaN"):
        lanczos_bidiag_svd(op, 2, 0)
    # inside jit the flag is returned instead
    out = jax.jit(lambda key: lanczos_svd_of(f_nan, X0, 2, key))(jax.random.PRNGKey(0))
    assert bool(out.nan)


def test_hoisted_conv_kernels_same_vjp_and_canonical_in_loop():
    """The VJP with its convolution kernels made canonical outside the loop (_hoist_conv_kernels) equals J^T u from
    the dense float64 Jacobian, its convolutions use HWIO kernels (no ``01oi`` dim_labels left in a while-loop
    body's compiled HLO, where XLA CPU would not canonicalise them), and it changes nothing without convolutions."""
    from jaxhspace.geometry.lanczos import _hoist_conv_kernels

    rng = np.random.default_rng(0)
    w1 = jnp.asarray(rng.standard_normal((3, 3, 3, 5)), jnp.float32)
    w2 = jnp.asarray(rng.standard_normal((3, 3, 5, 4)), jnp.float32)
    dn = ("NHWC", "HWIO", "NHWC")

    def f(x):  # [6, 6, 3] -> [3, 3, 4]: a strided and a plain convolution around a nonlinearity
        h = jax.lax.conv_general_dilated(x[None], w1, (2, 2), "SAME", dimension_numbers=dn)
        return jax.lax.conv_general_dilated(jnp.tanh(h), w2, (1, 1), "SAME", dimension_numbers=dn)[0]

    x = jnp.asarray(rng.standard_normal((6, 6, 3)), jnp.float32)
    y, jvp = jax.linearize(f, x)
    vjp = lambda u: jax.linear_transpose(jvp, x)(u)[0]  # noqa: E731
    J = np.asarray(jax.jacfwd(f)(x), np.float64).reshape(y.size, x.size)
    u = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    vjp_h = _hoist_conv_kernels(vjp, jax.ShapeDtypeStruct(y.shape, y.dtype))
    assert vjp_h is not vjp
    np.testing.assert_allclose(np.asarray(vjp_h(u)).ravel(), J.T @ np.asarray(u, np.float64).ravel(),
                               rtol=1e-5, atol=1e-5)
    convs = [e for e in jax.make_jaxpr(vjp_h)(u).eqns if e.primitive.name == "conv_general_dilated"]
    assert convs and all(e.params["dimension_numbers"].rhs_spec == (3, 2, 0, 1) for e in convs)

    def loop(u, hoist):
        g = _hoist_conv_kernels(vjp, jax.ShapeDtypeStruct(y.shape, y.dtype)) if hoist else vjp
        body = lambda c: (c[0] + 1, c[1] + jnp.sum(g(u * c[0])))  # noqa: E731
        return jax.lax.while_loop(lambda c: c[0] < 3, body, (0, jnp.zeros(())))[1]

    hlo = jax.jit(loop, static_argnums=1).lower(u, True).compile().as_text()
    assert "01oi" not in hlo
    assert "01oi" in jax.jit(loop, static_argnums=1).lower(u, False).compile().as_text()  # what it fixes
    np.testing.assert_allclose(float(jax.jit(loop, static_argnums=1)(u, True)),
                               float(jax.jit(loop, static_argnums=1)(u, False)), rtol=1e-5)
    g = _map("decaying")
    assert _hoist_conv_kernels(g, X0) is g


def _decaying_operator(m=400, n=300, dtype=jnp.float32):
    """A float matrix with singular values 20 e^{-6 i / 299} (σ_1/σ_30 ≈ 1.8) and its float64 dense spectrum."""
    rng = np.random.default_rng(0)
    d = min(m, n)
    U, _ = np.linalg.qr(rng.standard_normal((m, d)))
    V, _ = np.linalg.qr(rng.standard_normal((n, d)))
    A = jnp.asarray((U * (20.0 * np.exp(-np.linspace(0, 6, d)))) @ V.T, dtype)
    return A, np.linalg.svd(np.asarray(A, np.float64), compute_uv=False)


def _run_dense(A, k, **kw):
    m, n = A.shape
    return jax.jit(lambda A, key: lanczos_svd_core(lambda R: R @ A.T, lambda R: R @ A, n, m, k, key, tol=1e-6,
                                                   **kw))(A, jax.random.PRNGKey(0))


def test_float64_projected_problem_gives_singular_values_to_float32_round_off():
    """The small SVDs in float64 (the default off TPU) keep σ at the float32 round-off of the products: measured
    8.5e-8 relative at k = 30 with a restart, against 6.8e-7 with float32 small SVDs (backward error
    c eps ||B||, relative to the smaller σ_i, compounded through the restart's Ritz vectors)."""
    A, S = _decaying_operator()
    r = _run_dense(A, 30)
    assert bool(jnp.all(r.converged)) and int(r.restarts) >= 1
    err = np.abs(np.asarray(r.s, np.float64) - S[:30]) / S[:30]
    assert err.max() <= 2.5e-7, err.max()
    r32 = _run_dense(A, 30, projected_dtype="float32")  # the option exists and is the less accurate one
    err32 = np.abs(np.asarray(r32.s, np.float64) - S[:30]) / S[:30]
    assert err32.max() > err.max() and int(r32.n_jvp) == int(r.n_jvp)
    with pytest.raises(ValueError, match="projected_dtype"):
        _run_dense(A, 30, projected_dtype="bfloat16")


def test_runs_with_x64_enabled_and_float64_operators():
    """Under ``jax_enable_x64`` (Python ints become int64: slice indices must still agree) a float64 operator gets
    float64 vectors and σ to the tolerance's quadratic accuracy."""
    with jax.enable_x64(True):
        A, S = _decaying_operator(dtype=jnp.float64)
        r = _run_dense(A, 10, dtype=jnp.float64)
        assert r.s.dtype == jnp.float64 and bool(jnp.all(r.converged))
        np.testing.assert_allclose(np.asarray(r.s), S[:10], rtol=1e-10)
        r32 = _run_dense(A.astype(jnp.float32), 10)  # a float32 operator with x64 on
        np.testing.assert_allclose(np.asarray(r32.s, np.float64), S[:10], rtol=1e-6)


def test_nested_vmap_over_images_and_timesteps_matches_dense_and_unbatched():
    """vmap(vmap(solver)) over a 2 x 3 grid of operators (images x timesteps): each result equals its own dense
    SVD and the unbatched call (the float64 small SVDs stay float64 at every batching level)."""
    rng = np.random.default_rng(3)
    A = jnp.asarray(rng.standard_normal((2, 3, 40, 30)), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), 6).reshape(2, 3, -1)

    def f(A, key):
        return lanczos_svd_core(lambda R: R @ A.T, lambda R: R @ A, 30, 40, 4, key, tol=1e-6).s

    s = np.asarray(jax.jit(jax.vmap(jax.vmap(f)))(A, keys), np.float64)
    one = jax.jit(f)
    for i in range(2):
        for j in range(3):
            ref = np.linalg.svd(np.asarray(A[i, j], np.float64), compute_uv=False)[:4]
            np.testing.assert_allclose(s[i, j], ref, rtol=1e-6)
            np.testing.assert_allclose(s[i, j], np.asarray(one(A[i, j], keys[i, j])), rtol=1e-6)


def test_batched_loop_equals_single_runs_when_images_finish_at_different_cycles():
    """Three operators with different spectra in one batched loop (Ritz checks only at cycle ends, so each image
    finishes with a full buffer, after 1 to several restarts): every image's triplets, counts and restarts equal
    its own single-image run, and σ its dense SVD. A finished image keeps its state while the others go on."""
    from jaxhspace.geometry.lanczos import _lanczos_batch

    names = ["decaying", "clustered", "flat"]
    A = jnp.stack([_matrix(nm) for nm in names])  # [3, M, N]
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    kw = dict(tol=TOL, work_size=12, check_every=1000)
    batch = jax.jit(lambda A, keys: _lanczos_batch(lambda R: jnp.einsum("ibn,imn->ibm", R, A),
                                                   lambda R: jnp.einsum("ibm,imn->ibn", R, A), N, M, 4, keys, **kw))
    out = batch(A, keys)
    single = jax.jit(lambda A, key: lanczos_svd_core(lambda R: R @ A.T, lambda R: R @ A, N, M, 4, key, **kw))
    restarts = []
    for i, nm in enumerate(names):
        one = single(A[i], keys[i])
        assert bool(jnp.all(out.converged[i])) and bool(jnp.all(one.converged))
        assert int(out.n_jvp[i]) == int(one.n_jvp) and int(out.restarts[i]) == int(one.restarts)
        np.testing.assert_allclose(np.asarray(out.s[i]), np.asarray(one.s), rtol=1e-6, err_msg=nm)
        if nm == "decaying":  # separated σ: the vectors too (clustered / flat ones rotate with round-off)
            for field in ("u", "v"):
                np.testing.assert_allclose(np.asarray(getattr(out, field)[i]), np.asarray(getattr(one, field)),
                                           atol=1e-5, err_msg=f"{nm} {field}")
        # each triplet's two-sided residual against the dense matrix
        J = np.asarray(A[i], np.float64)
        s, u, v = (np.asarray(a[i], np.float64) for a in (out.s, out.u, out.v))
        np.testing.assert_allclose(s, np.linalg.svd(J, compute_uv=False)[:4], rtol=1e-5)
        res = max(np.linalg.norm(v @ J.T - s[:, None] * u, axis=1).max(), np.linalg.norm(u @ J - s[:, None] * v,
                                                                                           axis=1).max())
        assert res <= 3 * TOL * s[0], (nm, res / s[0])
        restarts.append(int(one.restarts))
    assert restarts[0] == restarts[1] < restarts[2], restarts  # the images did finish at different cycles
    # A finished image keeps its state: the two early images come out bit for bit as in a batch without the slow
    # one (without the row write-back, the slow image's later steps overwrote their last basis rows: 4e-7 in u).
    early = batch(A[:2], keys[:2])
    for field in ("s", "u", "v", "n_jvp", "steps"):
        np.testing.assert_array_equal(np.asarray(getattr(out, field)[:2]), np.asarray(getattr(early, field)), field)


def test_batch_of_tiny_unet_equals_unbatched(tiny_unet):
    """lanczos_svd_batch_of over 3 images (one linearisation of vmap(f), one loop) equals each image's own
    lanczos_svd_of run: σ, vectors, product counts, steps; and σ the dense SVD."""
    from jaxhspace.geometry.lanczos import lanczos_svd_batch_of

    f, xs = tiny_unet
    k = 4
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    out = jax.jit(lambda xs, keys: lanczos_svd_batch_of(f, xs, k, keys, tol=TOL))(xs, keys)
    assert out.v.shape == (3, k, 8, 8, 3) and out.n_jvp.shape == (3,)
    one = jax.jit(lambda x, key: lanczos_svd_of(f, x, k, key, tol=TOL))
    steps = []
    for i in range(3):
        r = one(xs[i], keys[i])
        assert bool(jnp.all(out.converged[i])) and int(out.n_jvp[i]) == int(r.n_jvp)
        assert int(out.steps[i]) == int(r.steps)
        np.testing.assert_allclose(np.asarray(out.s[i]), np.asarray(r.s), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(out.s[i]), dense_svd_reference(f, xs[i], k + 1).s[:k], rtol=1e-5)
        assert principal_angles(out.v[i], r.v) <= 1e-3
        steps.append(int(r.steps))
    # one key splits into the same per-image keys
    again = jax.jit(lambda xs: lanczos_svd_batch_of(f, xs, k, jax.random.PRNGKey(5), tol=TOL))(xs)
    np.testing.assert_array_equal(np.asarray(again.s), np.asarray(out.s))
