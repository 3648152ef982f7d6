"""Matrix-free top-k SVD: accuracy vs a dense Jacobian, residuals, product counts, bf16, validation."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhspace.geometry.operators import JacobianOperator
from jaxhspace.geometry.svd import (
    align_signs,
    dense_svd_reference,
    principal_angles,
    randomized_block_krylov,
    subspace_iteration,
    two_sided_residuals,
)

IN_SHAPE, OUT_SHAPE = (8, 8, 3), (4, 4, 6)
K = 5  # sigma_5 / sigma_6 ~ 2: a clear spectral gap after the top-5


def _orth(key, n, r):
    return jnp.linalg.qr(jax.random.normal(key, (n, r)))[0]


def _designed_map():
    """f(x) = tanh(c A x)/c with A = U diag(sig) V^T: designed spectrum with gaps."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    m, n = 96, 192
    sig = jnp.concatenate([jnp.array([10.0, 8.0, 6.0, 5.0, 4.0]), 2.0 * 0.9 ** jnp.arange(m - 5)])
    A = (_orth(k1, m, m) * sig) @ _orth(k2, n, m).T

    def f(x):
        c = jnp.asarray(0.3, x.dtype)
        return (jnp.tanh(c * (A.astype(x.dtype) @ x.reshape(-1))) / c).reshape(OUT_SHAPE)

    return f


F = _designed_map()
X = 0.1 * jax.random.normal(jax.random.PRNGKey(3), IN_SHAPE)


@pytest.fixture(scope="module")
def ref():
    r = dense_svd_reference(F, X, 8)
    assert r.s[K - 1] / r.s[K] > 1.8  # the gap the subspace checks rely on
    return r


@pytest.fixture(scope="module")
def results():
    out = {}
    for name, meth in (("krylov", randomized_block_krylov), ("subspace", subspace_iteration)):
        op = JacobianOperator(F, X)
        out[name] = (op, meth(op, K, jax.random.PRNGKey(1), tol=1e-5))
    return out


@pytest.mark.parametrize("name", ["krylov", "subspace"])
def test_matches_dense_svd(results, ref, name):
    op, r = results[name]
    assert r.converged
    assert r.u.shape == (K,) + OUT_SHAPE and r.v.shape == (K,) + IN_SHAPE and r.s.shape == (K,)
    assert r.u.dtype == jnp.float32 and r.s.dtype == jnp.float32
    rel = np.abs(np.asarray(r.s) - ref.s[:K]) / ref.s[:K]
    ang_v = principal_angles(r.v, ref.v[:K])
    ang_u = principal_angles(r.u, ref.u[:K])
    # per triplet: the top-5 singular values are separated, so each vector is determined up to sign
    ra = r.aligned_to(ref)
    per_v = [principal_angles(ra.v[i:i + 1], ref.v[i:i + 1]) for i in range(K)]
    print(f"\n{name}: {r.iterations} it, {r.n_jvp} JVP + {r.n_vjp} VJP, max rel sigma err "
          f"{rel.max():.1e}, angles v {ang_v:.1e} u {ang_u:.1e}, per-triplet max {max(per_v):.1e}")
    assert rel.max() <= 1e-4
    assert ang_v <= 1e-2 and ang_u <= 1e-2 and max(per_v) <= 1e-2
    assert r.n_jvp == op.n_jvp and r.n_vjp == op.n_vjp


@pytest.mark.parametrize("name", ["krylov", "subspace"])
def test_two_sided_residuals_and_sign_consistency(results, name):
    op, r = results[name]
    explicit = np.asarray(two_sided_residuals(op, r.u, r.s, r.v))  # k JVPs + k VJPs
    s1 = float(r.s[0])
    assert explicit.max() <= 1e-3 * s1, explicit / s1
    # the free in-loop residuals agree with the explicit ones (both tiny here)
    assert np.abs(np.asarray(r.residuals) - explicit).max() <= 1e-4 * s1
    # u = J v / s: <J v_i, u_i> = s_i > 0, no random relative signs
    jv = op.flatten_out(op.matmat(r.v))
    dots = np.asarray(jnp.sum(jv * op.flatten_out(r.u), axis=1))
    np.testing.assert_allclose(dots, np.asarray(r.s), rtol=1e-4)
    # orthonormal outputs
    for a in (op.flatten_in(r.v), op.flatten_out(r.u)):
        np.testing.assert_allclose(np.asarray(a @ a.T), np.eye(K), atol=1e-5)


def test_krylov_uses_fewer_products_on_slow_spectrum():
    """Slowly decaying spectrum (sigma_i = 0.97^i): same tolerance, far fewer products."""
    m, n, k, tol = 128, 256, 10, 1e-4
    k1, k2 = jax.random.split(jax.random.PRNGKey(5))
    sig = 0.97 ** jnp.arange(m, dtype=jnp.float32)
    A = (_orth(k1, m, m) * sig) @ _orth(k2, n, m).T
    f = lambda x: (A @ x.reshape(-1)).reshape(8, 4, 4)  # noqa: E731
    x = jnp.zeros((8, 16, 2))
    runs = {
        "block Krylov (b=k+8)": lambda op: randomized_block_krylov(op, k, 1, tol=tol),
        "subspace (b=k+8)": lambda op: subspace_iteration(op, k, 1, tol=tol, block_size=k + 8,
                                                          max_iters=200),
        "subspace (b=k, official)": lambda op: subspace_iteration(op, k, 1, tol=tol, max_iters=200),
    }
    counts = {}
    for name, run in runs.items():
        r = run(JacobianOperator(f, x))
        assert r.converged, name
        assert np.abs(np.asarray(r.s) - np.asarray(sig[:k])).max() <= 1e-4
        counts[name] = r.n_products
    print("\nproducts at tol=1e-4 (k=10, sigma_i=0.97^i):", counts)
    kr = counts["block Krylov (b=k+8)"]
    assert counts["subspace (b=k+8)"] >= 2 * kr
    assert counts["subspace (b=k, official)"] >= 4 * kr


def test_bf16_krylov_within_loose_tolerance(ref):
    """bfloat16 products: sigma within 3e-2 relative, top-k subspace within 0.1 rad (documented)."""
    op = JacobianOperator(F, X, compute_dtype=jnp.bfloat16)
    r = randomized_block_krylov(op, K, 1, tol=3e-2, max_iters=6)
    rel = np.abs(np.asarray(r.s) - ref.s[:K]) / ref.s[:K]
    ang = principal_angles(r.v, ref.v[:K])
    print(f"\nbf16 block Krylov: max rel sigma err {rel.max():.1e}, angle {ang:.1e}, "
          f"{r.n_products} products")
    assert r.s.dtype == jnp.float32
    assert rel.max() <= 3e-2 and ang <= 0.1


def test_small_space_exhausted_exactly():
    """When the Krylov basis fills the input space (incl. a truncated last block) it is exact."""
    k1 = jax.random.PRNGKey(7)
    A = jax.random.normal(k1, (30, 24))
    f = lambda x: jnp.sin(A @ x.reshape(-1)).reshape(5, 6)  # noqa: E731
    x = 0.1 * jnp.ones((2, 3, 4))
    ref = dense_svd_reference(f, x, 10)
    op = JacobianOperator(f, x)
    r = randomized_block_krylov(op, 10, 2, tol=1e-12)  # unreachable tol: stops on completeness
    assert r.converged and op.n_jvp == 24  # 18 + 6 (truncated block)
    np.testing.assert_allclose(np.asarray(r.s), ref.s, rtol=1e-5)
    assert principal_angles(r.v, ref.v) <= 1e-3


def test_max_products_budget():
    op = JacobianOperator(F, X)
    r = randomized_block_krylov(op, K, 1, tol=1e-12, max_products=60)
    assert r.n_products <= 60 and not r.converged
    with pytest.raises(ValueError, match="max_products"):
        randomized_block_krylov(JacobianOperator(F, X), K, 1, max_products=10)


def test_bad_inputs():
    op = JacobianOperator(F, X)
    for meth in (randomized_block_krylov, subspace_iteration):
        with pytest.raises(ValueError, match=r"k=0 .*dim_in=192.*dim_out=96"):
            meth(op, 0, 1)
        with pytest.raises(ValueError, match=r"k=97 .*dim_in=192.*dim_out=96"):
            meth(op, 97, 1)
        with pytest.raises(ValueError, match="zero-norm"):
            meth(op, 2, 1, init=jnp.zeros((3,) + IN_SHAPE).at[0].set(1.0))
        with pytest.raises(ValueError, match="NaN"):
            meth(op, 2, 1, init=jnp.full((3,) + IN_SHAPE, jnp.nan))
    with pytest.raises(ValueError, match="NaN or inf"):
        JacobianOperator(F, X.at[0, 0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="k=200"):
        dense_svd_reference(F, X, 200)
    assert op.n_products == 0  # validation happens before any product


def test_principal_angles_and_signs():
    e = np.eye(4)
    t = 0.3
    A = e[:2]
    B = np.stack([e[0], np.cos(t) * e[1] + np.sin(t) * e[2]])
    assert abs(principal_angles(A, B) - t) < 1e-12
    np.testing.assert_allclose(principal_angles(A, B, reduce=None), [0.0, t], atol=1e-12)
    assert principal_angles(A, A[::-1] * -3.0) < 1e-12  # spans, not signs or scales
    assert abs(principal_angles(A, np.stack([e[0], 1e-7 * e[1] + e[2]])) - (np.pi / 2 - 1e-7)) < 1e-9
    small = np.stack([e[0], e[1] + 1e-9 * e[3]])
    assert abs(principal_angles(A, small) - 1e-9) < 1e-12  # small angles resolved
    a, sg = align_signs(np.array([[1.0, 0], [0, -2.0]]), np.array([[2.0, 0], [0, 1.0]]))
    np.testing.assert_array_equal(sg, [1.0, -1.0])
    np.testing.assert_array_equal(a, [[1.0, 0], [0, 2.0]])
    with pytest.raises(ValueError, match="zero-norm"):
        principal_angles(A, np.zeros((1, 4)))


def test_dense_reference_is_consistent(ref):
    assert np.asarray(ref.residuals).max() <= 1e-10 * ref.s[0]
    assert ref.u.shape == (8,) + OUT_SHAPE and ref.v.shape == (8,) + IN_SHAPE
    r2 = dataclasses.replace(ref, v=-ref.v, u=-ref.u).aligned_to(ref)
    np.testing.assert_allclose(r2.v, ref.v)
