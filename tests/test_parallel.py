"""jaxhspace.parallel: 4 fake CPU devices vs 1 device give the same DDIM samples / inversions, Asyrp batch edits,
top-k Jacobian SVD, and DDPM training losses (3 data-parallel steps) on a tiny random UNet.

XLA_FLAGS must be set before jax is imported, and tests/conftest.py imports jax, so the multi-device work runs in
ONE subprocess (this file executed as a script) that prints a JSON of measured differences; the tests assert on it.
In that process the 1-device reference is a genuine 1-device mesh (``make_mesh(devices=jax.devices()[:1])``) and the
plain, unsharded functions.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_DEV = 4
TOL = 1e-5

TINY = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=[8, 16], layers_per_block=1,
            down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"],
            norm_num_groups=4, norm_eps=1e-6, attention_head_dim=None, downsample_padding=0,
            flip_sin_to_cos=False, freq_shift=1)


def numpy_params(model, size: int, seed: int = 0):
    """Random UNet params drawn on the host (no init program to compile; jitted flax init of even a tiny UNet
    compiles for minutes on a loaded CPU): kernels ~ N(0, 1/fan_in), norm scales 1 + 0.02 N, biases 0.02 N."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1, size, size, model.config.in_channels)),
                                               jnp.zeros((1,), jnp.int32))["params"])
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = jax.tree_util.keystr(path[-1:])
        z = rng.standard_normal(s.shape).astype(np.float32)
        if "kernel" in name:
            return jnp.asarray(z / np.sqrt(np.prod(s.shape[:-1])))
        return jnp.asarray((1.0 if "scale" in name else 0.0) + 0.02 * z)

    return jax.tree_util.tree_map_with_path(draw, shapes)


# ----------------------------------------------------------------------------------------------
# Worker (runs with 4 fake devices)
# ----------------------------------------------------------------------------------------------
def _worker() -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    jax.config.update("jax_default_matmul_precision", "highest")
    from jaxhspace import parallel as par
    from jaxhspace.diffusion.ddim import ddim_invert, ddim_sample
    from jaxhspace.diffusion.schedule import asyrp_timesteps, ddim_timesteps, make_schedule
    from jaxhspace.editing.asyrp_edit import ConstantDelta, asyrp_edit
    from jaxhspace.geometry.operators import JacobianOperator
    from jaxhspace.geometry.svd import randomized_block_krylov
    from jaxhspace.models.functional import eps_fn, h_of_x
    from jaxhspace.models.unet import UNet2DModel, UNetConfig
    from jaxhspace.training.ddpm import DDPMState, make_train_step

    def rel(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))

    import time

    out = {"n_devices": jax.device_count(), "timings": {}}
    t0 = [time.time()]

    def lap(name):
        out["timings"][name] = round(time.time() - t0[0], 1)
        t0[0] = time.time()

    mesh1, mesh4 = par.make_mesh(devices=jax.devices()[:1]), par.make_mesh()
    model = UNet2DModel(UNetConfig.from_dict(TINY))
    params = numpy_params(model, 16, seed=0)
    schedule = make_schedule()
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))

    # --- DDIM sample (η = 1: partitioned noise too) and inversion; plain functions are the 1-device reference
    ts, key = ddim_timesteps(3), jax.random.PRNGKey(7)
    ref = ddim_sample(eps_fn(model, params), x, ts, schedule, eta=1.0, key=key)
    s4 = par.sharded_ddim_sample(model, params, x, ts, schedule, mesh4, eta=1.0, key=key)
    out["sample_4vplain"] = rel(s4, ref)
    out["sample_sharding_ndev"] = len(s4.sharding.device_set)
    x0 = jnp.clip(0.5 * x, -1, 1)
    inv_ts = asyrp_timesteps(3)
    inv_ref = ddim_invert(eps_fn(model, params), x0, inv_ts, schedule)
    inv4 = par.sharded_ddim_invert(model, params, x0, inv_ts, schedule, mesh4)
    out["invert_4vplain"] = rel(inv4, inv_ref)
    lap("ddim")

    # --- Asyrp batch edit from the latents: 4 images x 2 scales, boosting noise on (t_boost = 400)
    dh = 0.5 * jax.random.normal(jax.random.PRNGKey(2), model.hspace_shape(16, 16))
    kw = dict(x_lat=inv_ref, n_test=3, t_edit=300, t_boost=400)
    e_ref = asyrp_edit(model, params, schedule, None, ConstantDelta(dh), [1.0, -1.0], **kw)
    e4 = par.sharded_asyrp_edit(model, params, schedule, mesh4, None, ConstantDelta(dh), [1.0, -1.0], **kw)
    out["edit_4vplain"], out["edit_shape"] = rel(e4, e_ref), list(e4.shape)
    out["edit_sharding_ndev"] = len(e4.sharding.device_set)
    out["edit_nontrivial"] = rel(e4[0], e4[1])  # the two scales differ
    lap("edit")

    # --- Jacobian products and top-k SVD of dh/dx: probe block split over devices
    f = jax.jit(h_of_x(model, params, 500))  # jit: linearize traces once instead of running op by op
    xt = x[0]
    op = JacobianOperator(f, xt)
    sop = par.ShardedJacobianOperator(f, xt, mesh4)
    V = jax.random.normal(jax.random.PRNGKey(3), (6,) + xt.shape)  # 6 rows: padded to 8 over 4 devices
    out["matmat_4vplain"] = rel(sop.matmat(V), op.matmat(V))
    out["matmat_1vplain"] = rel(par.sharded_matmat(op, V, mesh1), op.matmat(V))  # a 1-device mesh works too
    U = jax.random.normal(jax.random.PRNGKey(4), (6,) + op.out_shape)
    out["rmatmat_4vplain"] = rel(sop.rmatmat(U), op.rmatmat(U))
    out["counts"] = [sop.n_jvp, sop.n_vjp]
    r = randomized_block_krylov(op, 4, 0, block_size=8, max_iters=6, tol=1e-5)
    r4 = randomized_block_krylov(sop, 4, 0, block_size=8, max_iters=6, tol=1e-5)
    out["svd_s_4vplain"] = rel(r4.s, r.s)
    out["svd_v_4vplain"] = rel(r4.aligned_to(r).v, r.v)
    out["svd_u_4vplain"] = rel(r4.aligned_to(r).u, r.u)
    out["svd_iters"] = [r.iterations, r4.iterations]
    lap("svd")

    # --- 3 data-parallel DDPM steps (global batch 8) vs 1 device. Clipped SGD, not Adam: Adam's first steps move
    # every weight by ±lr·sign(g), and a weight with a mathematically zero gradient (a conv bias right before a
    # GroupNorm) gets its sign from float noise, so the params could not be compared (the losses still could).
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1))
    bkey = jax.random.PRNGKey(5)
    data = [np.asarray(jnp.clip(jax.random.normal(jax.random.PRNGKey(10 + i), (8, 16, 16, 3)), -1, 1))
            for i in range(3)]

    def run(step):
        p = jax.tree.map(jnp.copy, params)  # the steps donate the state
        st = DDPMState(jnp.array(0, jnp.int32), p, jax.tree.map(jnp.copy, p), opt.init(p))
        losses = []
        for b in data:
            st, loss = step(st, b)
            losses.append(float(loss))
        return losses, st

    l_ref, st_ref = run(make_train_step(model, schedule, opt, 0.999, bkey))
    step4 = par.make_sharded_ddpm_train_step(model, schedule, opt, 0.999, bkey, mesh4)
    l4, st4 = run(step4)
    out["train_losses"] = [l_ref, l4]
    out["train_compiles"] = step4.__wrapped__._cache_size()
    out["train_loss_4vplain"] = max(abs(a - b) for a, b in zip(l4, l_ref))
    # absolute: a conv bias right before a GroupNorm has a zero gradient, its value is float noise (no relative test)
    out["train_params_4vplain"] = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                                      for a, b in zip(jax.tree.leaves(st4.params), jax.tree.leaves(st_ref.params)))
    out["train_params_ndev"] = len(jax.tree.leaves(st4.params)[0].sharding.device_set)
    lap("train")

    # --- clear error for an indivisible batch
    try:
        par.shard_batch(np.zeros((6, 2)), mesh4)
        out["indivisible_error"] = ""
    except ValueError as e:
        out["indivisible_error"] = str(e)
    return out


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------
import pytest  # noqa: E402


def run_on_fake_devices(script: str, timeout: int = 600) -> dict:
    """Run ``script`` (a test file whose ``__main__`` prints ``RESULTS <json>``) with N_DEV fake CPU devices in a
    fresh process and return the JSON."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={N_DEV}", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.abspath(script)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")][-1]
    return json.loads(line[len("RESULTS "):])


@pytest.fixture(scope="module")
def results():
    return run_on_fake_devices(__file__)


def test_four_devices(results):
    assert results["n_devices"] == N_DEV


def test_ddim_sample_and_invert_match_one_device(results):
    assert results["sample_sharding_ndev"] == N_DEV
    for k in ("sample_4vplain", "invert_4vplain"):
        assert results[k] <= TOL, (k, results[k])


def test_batch_edits_match_one_device(results):
    assert results["edit_shape"] == [2, 4, 16, 16, 3] and results["edit_sharding_ndev"] == N_DEV
    assert results["edit_nontrivial"] > 1e-3
    assert results["edit_4vplain"] <= TOL, results["edit_4vplain"]


def test_jacobian_products_and_svd_match_one_device(results):
    for k in ("matmat_4vplain", "matmat_1vplain", "rmatmat_4vplain", "svd_s_4vplain", "svd_v_4vplain", "svd_u_4vplain"):
        assert results[k] <= TOL, (k, results[k])
    assert results["counts"] == [6, 6]  # padding columns are not counted


def test_data_parallel_ddpm_steps_match_one_device(results):
    assert results["train_loss_4vplain"] <= TOL, results["train_losses"]
    assert results["train_compiles"] == 1  # the returned state keeps its sharding: no recompilation
    assert results["train_params_4vplain"] <= TOL
    assert results["train_params_ndev"] == N_DEV  # params stay replicated


def test_indivisible_batch_error(results):
    msg = results["indivisible_error"]
    assert "not divisible" in msg and "8" in msg and "4" in msg


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    print("RESULTS " + json.dumps(_worker()), flush=True)
