"""jaxhspace.precision: bf16 compute (float32 params) stays within the documented tolerance of float32 for ε, a short
DDIM sample and Jacobian products; remat (jax.checkpoint) gives the same loss and gradients as no remat."""
import jax
import jax.numpy as jnp
import pytest

from jaxhspace.diffusion.ddim import ddim_sample
from jaxhspace.diffusion.schedule import ddim_timesteps, make_schedule
from jaxhspace.geometry.operators import JacobianOperator
from jaxhspace.models.functional import eps_fn, h_of_x
from jaxhspace.models.unet import UNet2DModel, UNetConfig
from jaxhspace.precision import (
    BF16_EPS_RTOL, BF16_JVP_RTOL, BF16_SAMPLE_RTOL, RematModel, relative_max_error, remat_apply, with_compute_dtype)
from jaxhspace.training.ddpm import ddpm_loss
from test_parallel import TINY as PARALLEL_TINY, numpy_params  # tests/ is on sys.path (as for unet_fixtures)

# The tiny parity fixture (tests/unet_fixtures.py TINY_ATTN2: attention at two resolutions, asymmetric padding).
TINY = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=[16, 32, 32], layers_per_block=1,
            down_block_types=["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"], norm_num_groups=8, norm_eps=1e-6,
            attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1)


@pytest.fixture(scope="module")
def tiny():
    model = UNet2DModel(UNetConfig.from_dict(TINY))
    params = numpy_params(model, 16, seed=0)  # random weights, GroupNorm scales/biases perturbed as in the parity tests
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 16, 3))
    return model, params, x


def test_with_compute_dtype_keeps_params_and_output_dtype(tiny):
    model, params, x = tiny
    m16 = with_compute_dtype(model, jnp.bfloat16)
    assert m16.dtype == jnp.bfloat16 and model.dtype == jnp.float32 and m16.config == model.config
    assert with_compute_dtype(model, jnp.float32) is model
    t = jnp.array([10, 500])
    # the float32 params pytree is used as is
    eps = jax.eval_shape(lambda p: m16.apply({"params": p}, x, t), params)
    h, _, _ = jax.eval_shape(lambda p: m16.apply({"params": p}, x, t, method=m16.encode), params)
    assert eps.dtype == jnp.float32 and h.dtype == jnp.bfloat16


def test_bf16_eps_and_sample_within_documented_tolerance(tiny):
    model, params, x = tiny
    m16 = with_compute_dtype(model, jnp.bfloat16)
    t = jnp.array([10, 700])
    f32 = jax.jit(lambda p, x: model.apply({"params": p}, x, t))(params, x)
    b16 = jax.jit(lambda p, x: m16.apply({"params": p}, x, t))(params, x)
    err = relative_max_error(b16, f32)
    print(f"bf16 eps: max|eps_bf16 - eps_f32| / max|eps_f32| = {err:.2e}")
    assert 1e-5 < err < BF16_EPS_RTOL  # really computed in bf16, and close

    sched, ts = make_schedule(), ddim_timesteps(4)
    s32 = ddim_sample(eps_fn(model, params), x, ts, sched)
    s16 = ddim_sample(eps_fn(m16, params), x, ts, sched)
    err_s = relative_max_error(s16, s32)
    print(f"bf16 4-step DDIM sample: relative max error {err_s:.2e}")
    assert s16.dtype == jnp.float32 and err_s < BF16_SAMPLE_RTOL


def test_bf16_jacobian_products_within_documented_tolerance(tiny):
    model, params, x = tiny
    m16 = with_compute_dtype(model, jnp.bfloat16)
    op32 = JacobianOperator(jax.jit(h_of_x(model, params, 500)), x[0])  # jit: linearize traces once
    op16 = JacobianOperator(jax.jit(h_of_x(m16, params, 500)), x[0])
    V = jax.random.normal(jax.random.PRNGKey(3), (3,) + op32.in_shape)
    err = relative_max_error(op16.matmat(V), op32.matmat(V))
    print(f"bf16 J v (dh/dx): relative max error {err:.2e}")
    assert op16.dtype == jnp.float32 and 1e-5 < err < BF16_JVP_RTOL  # really computed in bf16, and close


def test_remat_identical_loss_and_grads():
    model = UNet2DModel(UNetConfig.from_dict(PARALLEL_TINY))  # 2 levels: half the compile time of the parity fixture
    params = numpy_params(model, 16, seed=1)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 16, 3))
    rm = remat_apply(model)
    assert isinstance(rm, RematModel) and rm.config is model.config
    sched, key = make_schedule(), jax.random.PRNGKey(4)
    x0 = jnp.clip(x, -1, 1)
    t = jnp.array([3, 900])
    dh = 0.1 * jnp.ones(model.hspace_shape(16, 16))

    def losses(m, p):
        """The DDPM loss, plus an Asyrp-like term with an array keyword argument (delta_h) through the checkpoint."""
        ddpm = ddpm_loss(m, p, sched, x0, key)
        other = jnp.mean(m.apply({"params": p}, x, t, delta_h=dh) ** 2)
        return ddpm + other, (ddpm, other)

    (_, (d0, o0)), g0 = jax.jit(jax.value_and_grad(lambda p: losses(model, p), has_aux=True))(params)
    (_, (d1, o1)), g1 = jax.jit(jax.value_and_grad(lambda p: losses(rm, p), has_aux=True))(params)
    print(f"remat: |loss diff| = {abs(float(d0) - float(d1)):.1e}, max |grad diff| = "
          f"{max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1))):.1e}")
    assert abs(float(d0) - float(d1)) <= 1e-6 and abs(float(o0) - float(o1)) <= 1e-6
    # the rematerialisation is really in the program: the traced loss holds a checkpoint (remat) equation
    grad_jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: losses(rm, p)[0]))(params))
    assert "checkpoint" in grad_jaxpr or "remat" in grad_jaxpr
    assert "checkpoint" not in str(jax.make_jaxpr(jax.grad(lambda p: losses(model, p)[0]))(params))
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1))) <= 1e-6
    # methods are forwarded (the Asyrp loss calls encode / decode on the model it is given)
    h = jax.eval_shape(lambda p: rm.apply({"params": p}, x, t, method=rm.encode)[0], params)
    assert h.shape == (2,) + model.hspace_shape(16, 16)
