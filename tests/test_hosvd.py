"""Matrix-free HOSVD/Tucker of Jacobian tensors vs ground truth and vs dense HOSVD."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhspace.geometry.hosvd import dense_hosvd_reference, jacobian_hosvd, resolve_modes
from jaxhspace.geometry.operators import JacobianOperator
from jaxhspace.geometry.svd import principal_angles, randomized_block_krylov

IN_SHAPE, OUT_SHAPE = (8, 8, 3), (4, 4, 6)
IN_RANKS, OUT_RANKS = (3, 3, 2), (2, 2, 3)


def _angle(F, G):
    """Largest principal angle between the column spaces of two factor matrices [d, r]."""
    return principal_angles(np.asarray(F).T, np.asarray(G).T)


@pytest.fixture(scope="module")
def tucker_map():
    """Linear map with exact Tucker structure: J = core x_out U_n x_in V_n (orthonormal factors)."""
    rng = np.random.default_rng(0)
    orth = lambda d, r: np.linalg.qr(rng.standard_normal((d, r)))[0]  # noqa: E731
    V = [orth(d, r) for d, r in zip(IN_SHAPE, IN_RANKS)]
    U = [orth(d, r) for d, r in zip(OUT_SHAPE, OUT_RANKS)]
    core = rng.standard_normal(OUT_RANKS + IN_RANKS)
    Vj, Uj, cj = ([jnp.asarray(a, jnp.float32) for a in V], [jnp.asarray(a, jnp.float32) for a in U],
                  jnp.asarray(core, jnp.float32))

    def f(x):
        c = jnp.einsum("abc,ai,bj,ck->ijk", x, *Vj)
        y = jnp.einsum("pqrijk,ijk->pqr", cj, c)
        return jnp.einsum("pqr,ap,bq,cr->abc", y, *Uj)

    return f, U, V, core


def test_recovers_known_tucker_structure(tucker_map):
    f, U, V, core = tucker_map
    op = JacobianOperator(f, jnp.zeros(IN_SHAPE))
    res = jacobian_hosvd(op, OUT_RANKS, IN_RANKS, 0, svd_rank=12, n_probes=4)  # rank(J) <= 12
    out_ang = [_angle(a, b) for a, b in zip(res.out_factors, U)]
    in_ang = [_angle(a, b) for a, b in zip(res.in_factors, V)]
    print(f"\nTucker map: factor angles out {max(out_ang):.1e} in {max(in_ang):.1e}, "
          f"captured {res.captured_energy:.8f}, {res.n_jvp} JVP + {res.n_vjp} VJP")
    assert max(out_ang + in_ang) <= 1e-3
    assert res.core.shape == OUT_RANKS + IN_RANKS
    assert res.frobenius_exact and abs(res.frobenius_sq - np.sum(core**2)) <= 1e-4 * np.sum(core**2)
    assert abs(res.captured_energy - 1.0) <= 1e-5
    assert all(abs(e - 1.0) <= 1e-5 for e in res.out_mode_energy + res.in_mode_energy)
    assert res.n_jvp == op.n_jvp and res.n_vjp == op.n_vjp
    # the core reproduces the map (both directions)
    v = jax.random.normal(jax.random.PRNGKey(1), IN_SHAPE)
    u = jax.random.normal(jax.random.PRNGKey(2), OUT_SHAPE)
    rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))  # noqa: E731
    assert rel(res.apply(v), f(v)) <= 1e-4
    assert rel(res.rapply(u), op.rmatvec(u)) <= 1e-4


def test_grouped_modes(tucker_map):
    """(spatial, channel) grouping: the spatial factor is the Kronecker product of the axis factors."""
    f, U, V, _ = tucker_map
    op = JacobianOperator(f, jnp.zeros(IN_SHAPE))
    res = jacobian_hosvd(op, (4, 3), (9, 2), 0, out_modes="spatial_channel",
                         in_modes=("spatial", "channel"), svd_rank=12, n_probes=0)
    assert res.in_modes == ((0, 1), (2,)) and [F.shape for F in res.in_factors] == [(64, 9), (3, 2)]
    assert _angle(res.in_factors[0], np.kron(V[0], V[1])) <= 1e-3
    assert _angle(res.out_factors[0], np.kron(U[0], U[1])) <= 1e-3
    assert _angle(res.in_factors[1], V[2]) <= 1e-3
    assert abs(res.captured_energy - 1.0) <= 1e-5


def _nonlinear_map():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    m, n = 96, 192
    orth = lambda k, a, b: jnp.linalg.qr(jax.random.normal(k, (a, b)))[0]  # noqa: E731
    # slowly decaying tail: the top-24 singular triplets hold ~98% of ||J||_F^2, not all of it
    sig = jnp.concatenate([jnp.array([10.0, 8, 6, 5, 4]), 2.0 * 0.95 ** jnp.arange(m - 5)])
    A = (orth(k1, m, m) * sig) @ orth(k2, n, m).T
    return lambda x: (jnp.tanh(0.3 * (A @ x.reshape(-1))) / 0.3).reshape(OUT_SHAPE)


G = _nonlinear_map()
XG = 0.3 * jax.random.normal(jax.random.PRNGKey(3), IN_SHAPE)


@pytest.fixture(scope="module")
def dense_ref():
    return dense_hosvd_reference(G, XG)


@pytest.fixture(scope="module")
def gop():
    """One operator shared by the tests (compiled once); results count their own products."""
    return JacobianOperator(G, XG)


def _compare(res, dense_ref):
    sv_err, angles = [], []
    mine = res.out_singular_values + res.in_singular_values
    refs = dense_ref["out_singular_values"] + dense_ref["in_singular_values"]
    facs = res.out_factors + res.in_factors
    rfacs = dense_ref["out_factors"] + dense_ref["in_factors"]
    for s_m, s_r, F, R in zip(mine, refs, facs, rfacs):
        r = F.shape[1]
        assert s_r[r - 1] / s_r[r] > 1.01  # a (small) gap after the kept rank
        sv_err.append(float(np.max(np.abs(s_m[:r] - s_r[:r])) / s_r[0]))
        angles.append(_angle(F, R[:, :r]))
    return max(sv_err), max(angles)


@pytest.mark.parametrize(
    "kw,sv_tol,angle_tol",
    [
        # exact regime: the SVD subspace is the whole row space of J (Gram estimate exact)
        (dict(svd_rank=96, n_probes=0), 1e-4, 1e-3),
        # randomized regime: top-24 SVD + 16 Hutchinson probes on the complement (unbiased);
        # the factor angles are limited by the small mode gaps (s_r / s_{r+1} ~ 1.02-1.1)
        (dict(svd_rank=24, n_probes=16), 1e-2, 0.1),
    ],
    ids=["exact", "randomized"],
)
def test_matches_dense_hosvd(dense_ref, gop, kw, sv_tol, angle_tol):
    res = jacobian_hosvd(gop, OUT_RANKS, IN_RANKS, 1, **kw)
    sv_err, angle = _compare(res, dense_ref)
    print(f"\n{kw}: mode sigma err {sv_err:.1e} (rel. to mode sigma_1), factor angle {angle:.1e}, "
          f"{res.n_jvp} JVP + {res.n_vjp} VJP, captured {res.captured_energy:.4f}, "
          f"svd energy {res.svd_energy:.4f}")
    assert sv_err <= sv_tol and angle <= angle_tol
    assert abs(res.frobenius_sq - dense_ref["frobenius_sq"]) <= 1e-4 * dense_ref["frobenius_sq"]


def test_probes_complete_the_truncated_gram(dense_ref, gop):
    """The Hutchinson completion on the complement of the SVD subspace reduces the Gram error."""
    # one SVD stage shared by both runs (also exercises reuse of an existing SVDResult)
    svd = randomized_block_krylov(gop, 24, 7, tol=1e-3)
    errs = {}
    for n_probes in (0, 16):
        res = jacobian_hosvd(gop, OUT_RANKS, IN_RANKS, 1, svd=svd, n_probes=n_probes)
        # cost formula: no SVD-stage products; 24 VJPs (J^T u_j), probes on both sides, 96 VJPs
        # for the exact ||J||_F^2 (dim_out = 96), core on the cheaper side: prod(OUT_RANKS) = 12 VJPs
        assert (res.n_jvp, res.n_vjp) == (n_probes, 24 + n_probes + 96 + 12)
        errs[n_probes] = _compare(res, dense_ref)[0]
    print(f"\nmode sigma error: truncated {errs[0]:.1e}, with 16 probes {errs[16]:.1e}")
    assert errs[16] <= 0.5 * errs[0]


def test_hooi_does_not_decrease_energy(gop):
    res = jacobian_hosvd(gop, OUT_RANKS, IN_RANKS, 1, svd_rank=24, n_probes=8, hooi_iters=3)
    h = res.hooi_history
    print(f"\nHOOI captured energy per sweep: {np.round(h, 5).tolist()}")
    assert len(h) >= 2 and all(b >= a - 1e-6 for a, b in zip(h, h[1:]))
    assert h[-1] > h[0]
    # the returned core is consistent with the returned factors: ||core||^2 = captured energy
    assert abs(float(jnp.sum(res.core**2)) / res.frobenius_sq - res.captured_energy) <= 1e-5


def test_frobenius_estimate_without_exact_norm(gop):
    res = jacobian_hosvd(gop, 2, 2, 4, svd_rank=24, n_probes=16, exact_norm_max_dim=0)
    ref = float(np.sum(np.asarray(jax.jacfwd(G)(XG), np.float64) ** 2))
    assert not res.frobenius_exact
    assert abs(res.frobenius_sq - ref) <= 2e-2 * ref


def test_bad_inputs(gop):
    op, spent = gop, gop.n_products
    with pytest.raises(ValueError, match="input mode 2: rank 4 must satisfy 1 <= rank <= dim 3"):
        jacobian_hosvd(op, OUT_RANKS, (3, 3, 4), svd_rank=None, n_probes=1)
    with pytest.raises(ValueError, match="one entry per mode"):
        jacobian_hosvd(op, (2, 2), IN_RANKS, svd_rank=None, n_probes=1)
    with pytest.raises(ValueError, match="partition"):
        jacobian_hosvd(op, 2, 2, in_modes=((0, 1), (1, 2)), svd_rank=None, n_probes=1)
    with pytest.raises(ValueError, match="n_probes"):
        jacobian_hosvd(op, 2, 2, n_probes=-1)
    with pytest.raises(ValueError, match="nothing to estimate"):
        jacobian_hosvd(op, 2, 2, svd_rank=None, n_probes=0)
    with pytest.raises(ValueError, match="Jacobian is zero"):
        jacobian_hosvd(JacobianOperator(lambda x: 0.0 * x[:4, :4], XG), 1, 1, svd_rank=2)
    assert op.n_products == spent  # validation happens before any product
    assert resolve_modes("spatial_channel", (8, 8, 3)) == ((0, 1), (2,))
    assert resolve_modes("flat", (8, 8, 3)) == ((0, 1, 2),)
