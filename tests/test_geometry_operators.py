"""JacobianOperator: products are exact JVPs/VJPs, adjoint identity, blocks, chunking, counters, bf16."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhspace.geometry.operators import JacobianOperator

IN_SHAPE, OUT_SHAPE = (8, 8, 3), (4, 4, 6)


def _make_map():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    A = jax.random.normal(k1, (96, 192)) / np.sqrt(192)
    b = 0.1 * jax.random.normal(k2, (96,))

    def f(x):
        # dtype-polymorphic (parameters follow x), with a genuinely nonlinear mix of ops
        z = A.astype(x.dtype) @ x.reshape(-1) + b.astype(x.dtype)
        y = jnp.tanh(z) + 0.1 * jnp.sin(z) * jnp.mean(x * x)
        return y.reshape(OUT_SHAPE)

    return f


F = _make_map()
X = jax.random.normal(jax.random.PRNGKey(1), IN_SHAPE)


@pytest.fixture(scope="module")
def op():
    return JacobianOperator(F, X)


def _rand(key, shape):
    return jax.random.normal(jax.random.PRNGKey(key), shape)


def test_shapes_and_primal(op):
    assert op.in_shape == IN_SHAPE and op.out_shape == OUT_SHAPE
    assert op.shape == (96, 192) and op.dim_in == 192 and op.dim_out == 96
    np.testing.assert_allclose(op.primal_out, F(X), rtol=1e-6, atol=1e-6)
    v = _rand(2, (5,) + IN_SHAPE)
    assert op.flatten_in(v).shape == (5, 192)
    np.testing.assert_array_equal(op.unflatten_in(op.flatten_in(v)), v)
    u = _rand(3, OUT_SHAPE)
    np.testing.assert_array_equal(op.unflatten_out(op.flatten_out(u)), u)


def test_matvec_is_jvp_and_rmatvec_is_vjp(op):
    v, u = _rand(4, IN_SHAPE), _rand(5, OUT_SHAPE)
    _, jv = jax.jvp(F, (X,), (v,))
    _, vjp = jax.vjp(F, X)
    np.testing.assert_allclose(op.matvec(v), jv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(op.rmatvec(u), vjp(u)[0], rtol=1e-5, atol=1e-6)


def test_adjoint_identity(op):
    for s in range(3):
        v, u = _rand(10 + s, IN_SHAPE), _rand(20 + s, OUT_SHAPE)
        lhs = float(jnp.vdot(op.matvec(v), u))
        rhs = float(jnp.vdot(v, op.rmatvec(u)))
        scale = float(jnp.linalg.norm(op.matvec(v)) * jnp.linalg.norm(u))
        assert abs(lhs - rhs) <= 1e-5 * scale, (lhs, rhs)


def test_jvp_matches_central_difference(op):
    v = _rand(6, IN_SHAPE)
    v = v / jnp.linalg.norm(v)
    jv = op.matvec(v)
    errs = []
    for h in (0.2, 0.1):
        fd = (F(X + h * v) - F(X - h * v)) / (2 * h)
        errs.append(float(jnp.linalg.norm(fd - jv) / jnp.linalg.norm(jv)))
    assert errs[0] < 2e-2, errs
    # central differences are second order: halving h divides the error by ~4
    assert errs[1] < 0.4 * errs[0], errs


def test_matmat_equals_stacked_matvecs(op):
    V, U = _rand(7, (5,) + IN_SHAPE), _rand(8, (4,) + OUT_SHAPE)
    np.testing.assert_allclose(
        op.matmat(V), jnp.stack([op.matvec(v) for v in V]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        op.rmatmat(U), jnp.stack([op.rmatvec(u) for u in U]), rtol=1e-5, atol=1e-6)


def test_chunked_equals_unchunked(op):
    chunked = JacobianOperator(F, X, chunk_size=3)  # 7 = 3 + 3 + 1: exercises the remainder
    V, U = _rand(9, (7,) + IN_SHAPE), _rand(10, (7,) + OUT_SHAPE)
    np.testing.assert_allclose(chunked.matmat(V), op.matmat(V), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(chunked.rmatmat(U), op.rmatmat(U), rtol=1e-6, atol=1e-6)
    assert chunked.counts() == {"n_jvp": 7, "n_vjp": 7}


def test_counters():
    o = JacobianOperator(F, X)
    o.matvec(_rand(1, IN_SHAPE))
    o.matmat(_rand(2, (6,) + IN_SHAPE))
    o.rmatmat(_rand(3, (4,) + OUT_SHAPE))
    assert (o.n_jvp, o.n_vjp, o.n_products) == (7, 4, 11)
    o.reset_counts()
    assert o.counts() == {"n_jvp": 0, "n_vjp": 0}


def test_bf16_products(op):
    """bfloat16 tangents and arithmetic (8-bit mantissa): documented tolerance 5e-2 relative."""
    ob = JacobianOperator(F, X, compute_dtype=jnp.bfloat16)
    V, U = _rand(11, (4,) + IN_SHAPE), _rand(12, (4,) + OUT_SHAPE)
    jv, jtu = ob.matmat(V), ob.rmatmat(U)
    assert jv.dtype == jnp.float32 and jtu.dtype == jnp.float32
    rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))  # noqa: E731
    e1, e2 = rel(jv, op.matmat(V)), rel(jtu, op.rmatmat(U))
    print(f"\nbf16 operator relative errors: J {e1:.2e}, J^T {e2:.2e}")
    assert e1 < 5e-2 and e2 < 5e-2


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN or inf"):
        JacobianOperator(F, X.at[0, 0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="NaN or inf"):
        JacobianOperator(F, X.at[1, 2, 0].set(jnp.inf))
    with pytest.raises(ValueError, match="floating"):
        JacobianOperator(lambda x: x * 2, jnp.ones(IN_SHAPE, jnp.int32))
    with pytest.raises(ValueError, match="chunk_size"):
        JacobianOperator(F, X, chunk_size=0)
    o = JacobianOperator(F, X)
    with pytest.raises(ValueError, match="expected an array shaped"):
        o.matvec(jnp.ones((8, 8, 4)))
    with pytest.raises(ValueError, match="expected an array shaped"):
        o.rmatmat(jnp.ones(OUT_SHAPE))
