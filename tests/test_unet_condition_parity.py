"""Numerical parity of jaxhspace's UNet2DConditionModel (Stable Diffusion UNet) with diffusers' PyTorch
UNet2DConditionModel (float32): eps, h (the mid_block output, via a torch forward hook), delta_h, forward-mode
derivatives (against torch.func.jvp with the classic attention processor), loading via load_unet, and input and
config validation."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxhspace.checkpoints import load_unet
from jaxhspace.models.unet_condition import UNet2DConditionModel, UNetConditionConfig
from unet_fixtures import max_abs

TOL = 1e-4  # the parity bound
REGRESSION_TOL = 1e-5  # measured errors are ~1e-6 in float32 (see the printed numbers)

# SD-1 style: conv proj_in/proj_out, one head count for every block (attention_head_dim int = number of heads).
SD1_TINY = dict(
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=[16, 32, 32], layers_per_block=1,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim=24, attention_head_dim=2, norm_num_groups=8, norm_eps=1e-5, act_fn="silu",
    flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
)
# SD-2 style: Linear proj_in/proj_out, upcast_attention, per-block head counts; also per-block layers_per_block and
# only_cross_attention and transformer_layers_per_block (the mid block gets the last: 2), sin-first embedding,
# asymmetric downsample padding,
# scale_shift resnets, a mid-block scale factor and GELU.
SD2_TINY = dict(
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=[16, 32], layers_per_block=[2, 1],
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim=20, attention_head_dim=[2, 4], use_linear_projection=True, upcast_attention=True,
    only_cross_attention=[True, False], transformer_layers_per_block=[1, 2], norm_num_groups=8, norm_eps=1e-6,
    act_fn="gelu", flip_sin_to_cos=False, freq_shift=1, downsample_padding=0, resnet_time_scale_shift="scale_shift",
    mid_block_scale_factor=1.3,
)
TINY = {"sd1": SD1_TINY, "sd2": SD2_TINY}

# Published UNet configs (config.json values of runwayml/stable-diffusion-v1-5 and
# stabilityai/stable-diffusion-2-1-base, unet/ subfolder); the remaining fields are diffusers' defaults.
_SD_BLOCKS = dict(
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, act_fn="silu", center_input_sample=False,
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, out_channels=4, mid_block_scale_factor=1,
    norm_eps=1e-5, norm_num_groups=32, sample_size=64,
)
SD15 = dict(_SD_BLOCKS, cross_attention_dim=768, attention_head_dim=8)
SD21_BASE = dict(_SD_BLOCKS, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True,
                 dual_cross_attention=False, num_class_embeds=None, only_cross_attention=False)


def make_torch_unet(cfg: dict, seed: int = 0):
    """Random-init diffusers UNet2DConditionModel, every parameter perturbed by 0.02*randn (so norm scales/biases
    are not 1/0), classic AttnProcessor (torch.func.jvp fails with SDPA), eval mode."""
    from diffusers import UNet2DConditionModel as TorchUNet
    from diffusers.models.attention_processor import AttnProcessor

    torch.manual_seed(seed)
    model = TorchUNet(**cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.set_attn_processor(AttnProcessor())
    return model.eval()


def nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2))))


def nhwc(a: torch.Tensor) -> np.ndarray:
    return a.detach().numpy().transpose(0, 2, 3, 1)


def torch_forward(model, z, t, c, delta_h=None):
    """Torch eps and the mid_block output (before any edit), NHWC NumPy; ``delta_h`` (NHWC) is added to the
    mid_block output by a forward hook."""
    captured = {}

    def hook(_module, _inputs, out):
        captured["h"] = out.detach().clone()
        return out if delta_h is None else out + nchw(delta_h)

    handle = model.mid_block.register_forward_hook(hook)
    try:
        with torch.no_grad():
            eps = model(nchw(z), torch.from_numpy(np.asarray(t)), encoder_hidden_states=torch.from_numpy(c)).sample
    finally:
        handle.remove()
    return nhwc(eps), nhwc(captured["h"])


def torch_encode(model, z: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """diffusers' forward steps 1-4 (time embedding, conv_in, down blocks, mid block) for SD configs: the mid_block
    output as a function torch.func.jvp can differentiate (a hook cannot return it from inside the transform)."""
    emb = model.time_embedding(model.time_proj(t.expand(z.shape[0])).to(z.dtype))
    s = model.conv_in(z)
    for block in model.down_blocks:
        if getattr(block, "has_cross_attention", False):
            s, _ = block(s, emb, encoder_hidden_states=c)
        else:
            s, _ = block(s, emb)
    return model.mid_block(s, emb, encoder_hidden_states=c)


def inputs(cfg, batch=2, size=16, seed=0, tokens=7, float_t=False, one_prompt=False):
    """z ``[B, S, S, C]``, distinct timesteps ``[B]`` (int, or fractional floats), text ``[B or 1, tokens, D]``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(batch, size, size, cfg["in_channels"])).astype(np.float32)
    c = rng.normal(size=(1 if one_prompt else batch, tokens, cfg["cross_attention_dim"])).astype(np.float32)
    t = np.linspace(3.25, 999, batch).astype(np.float32) if float_t else np.linspace(3, 999, batch).astype(np.int64)
    return z, t, c


# sd1: int t, one prompt per sample; sd2: fractional float t, one prompt broadcast over the batch.
INPUT_KW = {"sd1": {}, "sd2": dict(float_t=True, one_prompt=True)}
_JIT = {}


def jax_forward(model, params, z, t, c, delta_h=None):
    """One jitted program per model (cached): eps of ``__call__`` with ``delta_h`` (zeros when None), h of
    ``encode``, and eps of ``decode(h + delta_h, skips, temb, c)`` (which must equal the first exactly). NumPy."""
    if id(model) not in _JIT:
        def f(params, z, t, c, dh):
            v = {"params": params}
            b = model.apply(v, z, t, c, method=model.encode)
            eps_decode = model.apply(v, b.h + dh, b.skips, b.temb, c, method=model.decode)
            return model.apply(v, z, t, encoder_hidden_states=c, delta_h=dh), b.h, eps_decode

        _JIT[id(model)] = (model, jax.jit(f))
    f = _JIT[id(model)][1]
    hw = model.hspace_shape(z.shape[1], z.shape[2])
    dh = np.zeros((z.shape[0], *hw), np.float32) if delta_h is None else delta_h
    eps, h, eps_decode = map(np.asarray, f(params, z, t, c, dh))
    np.testing.assert_array_equal(eps_decode, eps)  # __call__ == decode(encode) (+ delta_h), bit for bit
    return eps, h


def torch_context(c, batch):
    return np.array(np.broadcast_to(c, (batch, *c.shape[1:])))


_BUILT = {}


def built(name, tmp_path_factory):
    """(name, config, torch reference, jax model, jax params, folder) for a tiny config, loaded through load_unet;
    built once per test session."""
    if name not in _BUILT:
        cfg = TINY[name]
        torch_model = make_torch_unet(cfg, seed=len(name) + 3)
        folder = str(tmp_path_factory.mktemp(name))
        torch_model.save_pretrained(folder)
        model, params = load_unet(folder)
        _BUILT[name] = (name, cfg, torch_model, model, params, folder)
    return _BUILT[name]


@pytest.fixture(scope="module", params=sorted(TINY))
def tiny(request, tmp_path_factory):
    return built(request.param, tmp_path_factory)[:5]


@pytest.fixture(scope="module")
def sd2(tmp_path_factory):
    """The richer tiny config (linear projection, upcast, per-block heads/layers, only_cross_attention)."""
    return built("sd2", tmp_path_factory)[:5]


def test_eps_and_h_match_diffusers(tiny):
    name, cfg, torch_model, model, params = tiny
    assert isinstance(model, UNet2DConditionModel)
    n_torch = sum(p.numel() for p in torch_model.parameters())
    assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)) == n_torch
    z, t, c = inputs(cfg, **INPUT_KW[name])
    eps_t, h_t = torch_forward(torch_model, z, t, torch_context(c, 2))
    eps_j, h_j = jax_forward(model, params, z, t, c)
    assert h_j.shape == h_t.shape == (2, *model.hspace_shape(16, 16))
    e_eps, e_h = max_abs(eps_j, eps_t), max_abs(h_j, h_t)
    print(f"\n{name}: eps err {e_eps:.2e} (|eps| max {np.abs(eps_t).max():.2f}), h err {e_h:.2e} "
          f"(|h| max {np.abs(h_t).max():.2f})")
    assert e_eps <= TOL and e_h <= TOL
    assert e_eps <= REGRESSION_TOL and e_h <= REGRESSION_TOL


def test_delta_h_matches_torch_hook(tiny):
    name, cfg, torch_model, model, params = tiny
    z, t, c = inputs(cfg, seed=3, **INPUT_KW[name])
    dh = np.random.default_rng(0).normal(0, 0.5, (2, *model.hspace_shape(16, 16))).astype(np.float32)
    eps_t, _ = torch_forward(torch_model, z, t, torch_context(c, 2), delta_h=dh)
    eps_j, _ = jax_forward(model, params, z, t, c, delta_h=dh)
    err = max_abs(eps_j, eps_t)
    print(f"\n{name}: delta_h eps err {err:.2e}")
    assert err <= TOL
    assert max_abs(eps_j, torch_forward(torch_model, z, t, torch_context(c, 2))[0]) > 1e-3  # the edit does something


def test_jvp_matches_torch_func_jvp(sd2):
    """Forward-mode derivatives d eps/dz·v and dh/dz·v (what pullback directions use) against torch.func.jvp."""
    _, cfg, torch_model, model, params = sd2
    z, t, c = inputs(cfg, batch=1, seed=4)
    dz = np.random.default_rng(5).normal(size=z.shape).astype(np.float32)
    tt, ct = torch.from_numpy(t), torch.from_numpy(c)
    with torch.no_grad():
        _, h_hook = torch_forward(torch_model, z, t, c)
        assert max_abs(nhwc(torch_encode(torch_model, nchw(z), tt, ct)), h_hook) < 1e-6  # the reference is diffusers'
        _, jeps_t = torch.func.jvp(lambda x: torch_model(x, tt, encoder_hidden_states=ct).sample, (nchw(z),),
                                   (nchw(dz),))
        _, jh_t = torch.func.jvp(lambda x: torch_encode(torch_model, x, tt, ct), (nchw(z),), (nchw(dz),))
    v = {"params": params}

    def eps_and_h(x):
        b = model.apply(v, x, t, c, method=model.encode)
        return model.apply(v, *b, c, method=model.decode), b.h

    jeps_j, jh_j = jax.jit(lambda z, dz: jax.jvp(eps_and_h, (z,), (dz,))[1])(z, dz)
    e_eps, e_h = max_abs(jeps_j, nhwc(jeps_t)), max_abs(jh_j, nhwc(jh_t))
    print(f"\njvp err: eps {e_eps:.2e} (max {np.abs(nhwc(jeps_t)).max():.2f}), h {e_h:.2e} "
          f"(max {np.abs(nhwc(jh_t)).max():.2f})")
    assert e_eps <= TOL and e_h <= TOL


def test_query_chunked_attention(sd1):
    """The memory option attention_query_chunk (48: padded chunks at 16x16 and 8x8, none at the 4x4 mid block) gives
    diffusers' eps and h, and its JVP and VJP agree with the plain path (JVP) and with each other (adjoint)."""
    folder, model, params = sd1
    chunked = model.clone(attention_query_chunk=48)
    z, t, c = inputs(SD1_TINY, seed=8)
    eps_t, h_t = torch_forward(make_torch_unet(SD1_TINY, seed=len("sd1") + 3), z, t, c)
    eps_j, h_j = jax_forward(chunked, params, z, t, c)
    print(f"\nchunked: eps err {max_abs(eps_j, eps_t):.2e}, h err {max_abs(h_j, h_t):.2e}")
    assert max_abs(eps_j, eps_t) <= REGRESSION_TOL and max_abs(h_j, h_t) <= REGRESSION_TOL
    rng = np.random.default_rng(9)
    dz = rng.normal(size=z.shape).astype(np.float32)
    u = rng.normal(size=h_j.shape).astype(np.float32)

    @jax.jit
    def products(z, dz, u):
        h_of = lambda m: lambda x: m.apply({"params": params}, x, t, c, method=m.encode).h  # noqa: E731
        jv_plain = jax.jvp(h_of(model), (z,), (dz,))[1]
        jv = jax.jvp(h_of(chunked), (z,), (dz,))[1]
        jtu = jax.vjp(h_of(chunked), z)[1](u)[0]
        return jv_plain, jv, jnp.vdot(jv, u), jnp.vdot(dz, jtu)

    jv_plain, jv, lhs, rhs = products(z, dz, u)
    assert max_abs(jv, jv_plain) <= REGRESSION_TOL
    # <Jv, u> = <v, Jᵀu>, to float32 rounding of sums of ~1e3 terms (bound relative to |Jv| |u|)
    assert abs(float(lhs) - float(rhs)) <= 1e-6 * float(np.linalg.norm(jv) * np.linalg.norm(u))


def test_bfloat16_compute_is_close(sd2, tmp_path_factory):
    _, cfg, torch_model, _, _ = sd2
    model16, params16 = load_unet(built("sd2", tmp_path_factory)[5], dtype=jnp.bfloat16)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params16))
    z, t, c = inputs(cfg, batch=1, seed=6)
    eps_t, _ = torch_forward(torch_model, z, t, c)
    eps16 = np.asarray(jax.jit(model16.apply)({"params": params16}, z, t, c))
    assert eps16.dtype == np.float32
    assert max_abs(eps16, eps_t) < 0.1 * np.abs(eps_t).max()


# ------------------------------------------------------------------------------------------------------------------
# Bad input, bad configs, bad checkpoints
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    _, _, _, model, params, folder = built("sd1", tmp_path_factory)
    return folder, model, params


def test_bad_inputs_raise_clear_errors(sd1):
    _, model, params = sd1
    z, t, c = inputs(SD1_TINY, batch=2)
    v = {"params": params}

    def apply(*args, **kwargs):  # traced only: the checks run on static shapes before any computation
        return jax.eval_shape(lambda *a: model.apply(v, *a, **kwargs), *args)

    with pytest.raises(ValueError, match="encoder_hidden_states is required"):
        apply(z, t)
    with pytest.raises(ValueError, match="encoder_hidden_states is required"):
        apply(z, t, method=model.encode)
    with pytest.raises(ValueError, match="width 30 but this UNet's cross_attention_dim is 24"):
        apply(z, t, np.zeros((2, 7, 30), np.float32))
    with pytest.raises(ValueError, match="must be 3-D"):
        apply(z, t, np.zeros((7, 24), np.float32))
    with pytest.raises(ValueError, match="batch 3 must be 1 or the latent batch 2"):
        apply(z, t, np.zeros((3, 7, 24), np.float32))
    with pytest.raises(ValueError, match="must have 4 latent channels"):
        apply(np.zeros((2, 16, 16, 3), np.float32), t, c)
    with pytest.raises(ValueError, match="looks like NCHW"):
        apply(np.zeros((2, 4, 16, 16), np.float32), t, c)
    with pytest.raises(ValueError, match="divisible by 4"):
        apply(np.zeros((2, 18, 18, 4), np.float32), t, c)
    b = apply(z, t, c, method=model.encode)
    with pytest.raises(ValueError, match="encoder_hidden_states is required"):
        apply(b.h, b.skips, b.temb, method=model.decode)
    with pytest.raises(ValueError, match="decode expects 6 skip tensors"):
        apply(b.h, b.skips[1:], b.temb, c, method=model.decode)
    with pytest.raises(ValueError, match="encoder_hidden_states must be float"):
        apply(z, t, np.zeros((2, 7, 24), np.int32))
    with pytest.raises(ValueError, match="does not broadcast"):
        apply(z, t, c, delta_h=np.zeros((2, 3, 3, 32), np.float32))


@pytest.mark.parametrize("field, value", [
    ("class_embed_type", "timestep"), ("addition_embed_type", "text_time"), ("time_cond_proj_dim", 32),
    ("num_class_embeds", 10), ("encoder_hid_dim", 64), ("num_attention_heads", 2), ("dual_cross_attention", True),
    ("time_embedding_act_fn", "silu"), ("attention_type", "gated"), ("mid_block_type", "UNetMidBlock2DSimpleCrossAttn"),
    ("down_block_types", ["SimpleCrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]),
    ("up_block_types", ["UpBlock2D", "CrossAttnUpBlock2D", "AttnUpBlock2D"]), ("act_fn", "tanh"),
    ("attention_head_dim", [2, 3, 2]), ("cross_attention_dim", [24, 24, 32]),
])
def test_unsupported_config_fields_are_named(field, value):
    with pytest.raises(ValueError, match=f"UNetConditionConfig.{field}"):
        UNetConditionConfig.from_dict({**SD1_TINY, field: value})


def test_unknown_fields_and_class_names(sd1, tmp_path):
    with pytest.raises(ValueError, match="unknown config fields \\['brand_new_conditioning'\\]"):
        UNetConditionConfig.from_dict({**SD1_TINY, "brand_new_conditioning": 3})
    with pytest.warns(UserWarning, match="ignoring unknown config keys"):
        UNetConditionConfig.from_dict({**SD1_TINY, "legacy_flag": None})
    folder, _, _ = sd1
    cfg = json.load(open(os.path.join(folder, "config.json")))
    for name, overrides, match in [
        ("sdxl_like", {"addition_embed_type": "text_time"}, "UNetConditionConfig.addition_embed_type"),
        ("other_class", {"_class_name": "UNet3DConditionModel"}, "_class_name 'UNet3DConditionModel'"),
    ]:
        dst = tmp_path / name
        dst.mkdir()
        os.symlink(os.path.join(folder, "diffusion_pytorch_model.safetensors"),
                   dst / "diffusion_pytorch_model.safetensors")
        json.dump({**cfg, **overrides}, open(dst / "config.json", "w"))
        with pytest.raises(ValueError, match=match):
            load_unet(str(dst))


def test_checkpoint_mismatch_lists_keys(sd1, tmp_path):
    """Weights that do not fit the config: every missing / unexpected / mis-shaped key is listed."""
    from safetensors.numpy import load_file, save_file

    folder, _, _ = sd1
    cfg = json.load(open(os.path.join(folder, "config.json")))
    sd = load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    dropped = "mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight"
    sd.pop(dropped)
    sd["extra.weight"] = np.zeros(3, np.float32)
    (tmp_path / "m").mkdir()
    save_file(sd, str(tmp_path / "m" / "diffusion_pytorch_model.safetensors"))
    json.dump({**cfg, "cross_attention_dim": 16}, open(tmp_path / "m" / "config.json", "w"))
    with pytest.raises(ValueError) as err:
        load_unet(str(tmp_path / "m"))
    msg = str(err.value)
    assert f"missing keys (1): {dropped}" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight: checkpoint (16, 24)" in msg
    assert "attn1.to_k" not in msg  # self-attention keys do not depend on cross_attention_dim


def test_pipeline_folder_unet_subfolder(sd1, tmp_path):
    folder, model, params = sd1
    os.symlink(folder, tmp_path / "unet")
    model2, params2 = load_unet(str(tmp_path))
    assert model2.config == model.config
    jax.tree.map(np.testing.assert_array_equal, params2, params)


# ------------------------------------------------------------------------------------------------------------------
# The exact Stable Diffusion UNets (slow: ~3.5 GB of weights each; built, compared and freed one at a time)
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name, cfg, n_params", [("sd15", SD15, 859_520_964), ("sd21_base", SD21_BASE, 865_910_724)])
def test_stable_diffusion_config_parity(name, cfg, n_params, tmp_path):
    import gc

    torch_model = make_torch_unet(cfg, seed=0)
    n_torch = sum(p.numel() for p in torch_model.parameters())
    z, _, c = inputs(cfg, batch=1, size=8, seed=7, tokens=77)
    t = np.array([500])
    eps_t, h_t = torch_forward(torch_model, z, t, c)
    torch_model.save_pretrained(str(tmp_path))
    del torch_model
    gc.collect()
    model, params = load_unet(str(tmp_path))
    n_ours = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    assert n_ours == n_torch == n_params
    assert model.hspace_shape(64, 64) == (8, 8, 1280)
    eps_j, h_j = jax_forward(model, params, z, t, c)
    assert h_j.shape == (1, 1, 1, 1280)
    e_eps, e_h = max_abs(eps_j, eps_t), max_abs(h_j, h_t)
    print(f"\n{name}: {n_ours:,} params; eps err {e_eps:.2e} (|eps| max {np.abs(eps_t).max():.2f}), "
          f"h err {e_h:.2e} (|h| max {np.abs(h_t).max():.2f})")
    assert e_eps <= TOL and e_h <= TOL
