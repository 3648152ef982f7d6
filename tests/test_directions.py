"""h-space directions on a tiny random UNet at 16x16 (input 768 dims), against dense Jacobians
(jax.jacfwd + numpy SVD), numpy PCA, and closed forms for the edits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhspace.diffusion.schedule import make_schedule
from jaxhspace.directions import haas_jacobian, mean_difference, pca, pca_h, pullback
from jaxhspace.directions.haas import haas_operator
from jaxhspace.directions.pullback import pullback_operator
from jaxhspace.editing.pullback_edit import continue_sampling, edit_steps, reprojected_edit_steps
from jaxhspace.geometry.svd import dense_svd_reference, principal_angles
from jaxhspace.models.functional import encode_fn, eps_fn, eps_of_h, h_of_x
from jaxhspace.models.unet import UNet2DModel, UNetConfig

TINY = dict(sample_size=16, block_out_channels=[8, 16], layers_per_block=1,
            down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"],
            norm_num_groups=4, norm_eps=1e-6, attention_head_dim=None, flip_sin_to_cos=False, freq_shift=1,
            downsample_padding=0)
T = 500


@pytest.fixture(scope="module")
def tiny():
    model = UNet2DModel(UNetConfig.from_dict(TINY))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), jnp.zeros((1,), jnp.int32))["params"]
    # Perturb so the spectrum is not that of a pristine init.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    x = jax.random.normal(jax.random.PRNGKey(2), (16, 16, 3))
    return model, params, x


def _gap_k(s, kmax=6):
    """The k <= kmax with the largest relative gap s_k / s_{k+1} (where subspaces are well defined)."""
    ratios = s[:kmax] / s[1:kmax + 1]
    return int(np.argmax(ratios)) + 1, float(np.max(ratios))


@pytest.mark.parametrize("method", ["krylov", "subspace"])
def test_pullback_matches_dense_svd(tiny, method):
    model, params, x = tiny
    ref = dense_svd_reference(h_of_x(model, params, T), x)
    k, gap = _gap_k(ref.s)
    kw = dict(tol=1e-6, max_iters=300) if method == "subspace" else dict(tol=1e-6, max_iters=60)
    res = pullback(model, params, x, T, k, jax.random.PRNGKey(3), method=method, **kw)
    assert res.v.shape == (k, 16, 16, 3) and res.u.shape == (k, 8, 8, 16)
    np.testing.assert_allclose(np.asarray(res.s), ref.s[:k], rtol=1e-4)
    assert principal_angles(res.v, ref.v[:k]) <= 1e-2, f"gap {gap:.3f}"
    assert principal_angles(res.u, ref.u[:k]) <= 1e-2
    op = pullback_operator(model, params, x, T)
    for i in range(k):
        jv = op.matvec(res.v[i])
        jtu = op.rmatvec(res.u[i])
        assert float(jnp.linalg.norm(jv - res.s[i] * res.u[i])) <= 1e-3 * float(res.s[0])
        assert float(jnp.linalg.norm(jtu - res.s[i] * res.v[i])) <= 1e-3 * float(res.s[0])
        # adjoint identity <Jv, u> = <v, J^T u>
        np.testing.assert_allclose(float(jnp.vdot(jv, res.u[i])), float(jnp.vdot(res.v[i], jtu)), rtol=1e-5)


def test_haas_jacobian_matches_dense_svd(tiny):
    model, params, x = tiny
    h, skips, temb = encode_fn(model, params)(x[None], jnp.full((1,), T))
    ref = dense_svd_reference(eps_of_h(model, params, skips, temb), h[0])
    k, _ = _gap_k(ref.s)
    res = haas_jacobian(model, params, x, T, k, jax.random.PRNGKey(4), tol=1e-6, max_iters=60)
    assert res.v.shape == (k, 8, 8, 16) and res.u.shape == (k, 16, 16, 3)
    np.testing.assert_allclose(np.asarray(res.s), ref.s[:k], rtol=1e-4)
    assert principal_angles(res.v, ref.v[:k]) <= 1e-2
    op = haas_operator(model, params, x, T)
    eps = eps_fn(model, params)(x[None], jnp.full((1,), T))[0]
    np.testing.assert_allclose(np.asarray(op.primal_out), np.asarray(eps), atol=1e-5)


def test_operators_match_jvp_vjp_and_finite_difference(tiny):
    model, params, x = tiny
    f = h_of_x(model, params, T)
    op = pullback_operator(model, params, x, T)
    v = jax.random.normal(jax.random.PRNGKey(5), x.shape)
    _, jvp = jax.jvp(f, (x,), (v,))
    np.testing.assert_allclose(np.asarray(op.matvec(v)), np.asarray(jvp), atol=1e-5)
    u = jax.random.normal(jax.random.PRNGKey(6), op.out_shape)
    _, vjp = jax.vjp(f, x)
    np.testing.assert_allclose(np.asarray(op.rmatvec(u)), np.asarray(vjp(u)[0]), atol=1e-5)
    eps = 1e-3
    fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    assert float(jnp.linalg.norm(fd - jvp) / jnp.linalg.norm(jvp)) < 1e-2


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(0)
    for n, d in ((20, 300), (300, 40)):  # Gram path (N < D) and plain SVD path
        data = rng.normal(size=(n, d)) @ np.diag(np.linspace(3, 0.1, d)) + 5.0
        res = pca(data.reshape(n, d // 4 if d % 4 == 0 else d, -1) if False else data, 5)
        xc = data - data.mean(0)
        _, s, vt = np.linalg.svd(xc, full_matrices=False)
        np.testing.assert_allclose(res.std, s[:5] / np.sqrt(n - 1), rtol=1e-5)
        assert principal_angles(res.components, vt[:5]) < 1e-4
        for i in range(5):
            assert abs(abs(float(np.dot(res.components[i], vt[i]))) - 1) < 1e-4
            assert res.components[i][0] > 0
        np.testing.assert_allclose(res.mean, data.mean(0), rtol=1e-6)


def test_pca_h_and_mean_difference(tiny):
    model, params, _ = tiny
    xs = jax.random.normal(jax.random.PRNGKey(7), (12, 16, 16, 3))
    res = pca_h(model, params, xs, T, 3, batch_size=5)
    hs = np.asarray(encode_fn(model, params)(xs, jnp.full((12,), T))[0]).reshape(12, -1)
    _, s, _ = np.linalg.svd(hs - hs.mean(0), full_matrices=False)
    np.testing.assert_allclose(res.std, s[:3] / np.sqrt(11), rtol=1e-4)
    assert res.components.shape == (3, 8, 8, 16)
    d = mean_difference(hs[:4], hs[4:])
    np.testing.assert_allclose(d, hs[:4].mean(0) - hs[4:].mean(0), rtol=1e-5, atol=1e-6)


def test_edit_with_zero_gamma_reproduces_unedited_sample(tiny):
    model, params, _ = tiny
    f = eps_fn(model, params)
    sched = make_schedule()
    ts = np.array([T, 400, 300, 200, 100, 0])
    x_t = jax.random.normal(jax.random.PRNGKey(8), (2, 16, 16, 3))
    v = jax.random.normal(jax.random.PRNGKey(9), (16, 16, 3))
    v = v / jnp.linalg.norm(v)
    x_e = edit_steps(f, x_t, T, v, gamma=0.0, n_steps=4)
    np.testing.assert_array_equal(np.asarray(x_e), np.asarray(x_t))
    key = jax.random.PRNGKey(10)
    a = continue_sampling(f, x_e, ts, sched, t_boost=200, key=key)
    b = continue_sampling(f, x_t, ts, sched, t_boost=200, key=key)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_edit_step_closed_form_and_vmap(tiny):
    model, params, _ = tiny
    f = eps_fn(model, params)
    x_t = jax.random.normal(jax.random.PRNGKey(11), (2, 16, 16, 3))
    V = jax.random.normal(jax.random.PRNGKey(12), (3, 16, 16, 3))
    V = V / jnp.linalg.norm(V.reshape(3, -1), axis=1)[:, None, None, None]
    tb = jnp.full((2,), T)
    x1 = edit_steps(f, x_t, T, V[0], gamma=0.3, n_steps=1, lam=0.5)
    expect = x_t + 0.3 * (f(x_t + 0.5 * V[0], tb) - f(x_t, tb))
    np.testing.assert_allclose(np.asarray(x1), np.asarray(expect), atol=1e-5)
    batched = jax.vmap(lambda v: edit_steps(f, x_t, T, v, 0.3, 2))(V)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(edit_steps(f, x_t, T, V[i], 0.3, 2)), atol=1e-5)


def test_reprojected_edit_keeps_direction_in_tangent_space():
    """Each direction used by ``reprojected_edit_steps`` lies in the tangent space at the point where it is used.

    Closed forms (no UNet, so every tangent space is exact): h(x) = tanh(W x) with J(x) = diag(1 − h²) W, the tangent
    space at x = the top-k right singular vectors of J(x) (numpy SVD in float64), ε(x) = tanh(C x). The edited points
    are recomputed in numpy from x_{j+1} = x_j + γ[ε(x_j + v_j) − ε(x_j)], and at each x_j the direction v_j must be
    the normalised projection of v_{j−1} onto span V(x_j) (sign kept); the edit moves the space enough that v_{j−1}
    itself is far outside it (so keeping v unchanged fails)."""
    rng = np.random.default_rng(0)
    shape, m = (4, 4, 3), 32
    n = int(np.prod(shape))
    W = rng.normal(size=(m, n)) * 2.0 / np.sqrt(n)
    Cm = rng.normal(size=(n, n)) * 3.0 / np.sqrt(n)

    def jac(x):
        return (1.0 - np.tanh(W @ np.ravel(x)) ** 2)[:, None] * W

    def eps_np(x):
        return np.tanh(Cm @ np.ravel(x)).reshape(shape)

    def eps(x, t):  # [B, 4, 4, 3], t unused
        return jnp.tanh(x.reshape(x.shape[0], -1) @ jnp.asarray(Cm.T, jnp.float32)).reshape(x.shape)

    x0 = rng.normal(size=shape)
    k, gap = _gap_k(np.linalg.svd(jac(x0), compute_uv=False))

    def tangent(x):  # [k, n] orthonormal rows
        return np.linalg.svd(jac(np.asarray(x, np.float64)), full_matrices=False)[2][:k]

    def basis(x):
        return tangent(x).reshape((k,) + shape)

    gamma, n_steps = 1.0, 3
    v0 = tangent(x0)[0].reshape(shape)
    x_new, used = reprojected_edit_steps(eps, basis, jnp.asarray(x0, jnp.float32), T, jnp.asarray(v0, jnp.float32),
                                         gamma=gamma, n_steps=n_steps)
    assert x_new.shape == shape and len(used) == n_steps
    x, v_prev = x0, v0.ravel()
    for j, v in enumerate(used):
        v = np.asarray(v, np.float64).ravel()
        V = tangent(x)
        p = V.T @ (V @ v_prev)
        expect = p / np.linalg.norm(p) * np.sign(p @ v_prev)
        assert abs(np.linalg.norm(v) - 1.0) < 1e-5
        assert np.linalg.norm(v - V.T @ (V @ v)) < 1e-4, f"step {j}: direction leaves the tangent space"
        np.testing.assert_allclose(v, expect, atol=1e-4)
        if j > 0:  # the space moved: the previous direction is far from it (a missing re-projection shows)
            assert np.linalg.norm(v_prev - V.T @ (V @ v_prev)) > 0.05, (j, gap)
        x = x + gamma * (eps_np(x + v.reshape(shape)) - eps_np(x))
        v_prev = v
    np.testing.assert_allclose(np.asarray(x_new), x, atol=1e-4)


def test_bad_inputs(tiny):
    model, params, x = tiny
    with pytest.raises(ValueError, match="k="):
        pullback(model, params, x, T, 10_000, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="NaN"):
        pullback(model, params, x.at[0, 0, 0].set(jnp.nan), T, 2, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="one image"):
        pullback(model, params, x[None], T, 2, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="zero norm"):
        edit_steps(eps_fn(model, params), x[None], T, jnp.zeros_like(x), 0.1, 1)
    with pytest.raises(ValueError, match="k="):
        pca(np.zeros((3, 5)), 4)
