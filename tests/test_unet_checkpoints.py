"""load_unet / save_unet_converted / save_unet_diffusers / the converter CLI, and input validation."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from checkpoints_convert import diffusers_unet as convert_cli
from jaxhspace.checkpoints import load_unet, save_unet_converted, save_unet_diffusers
from jaxhspace.checkpoints import unet as unet_ckpt
from jaxhspace.models.unet import UNetConfig
from unet_fixtures import TINY_ATTN2, make_torch_unet, max_abs, random_inputs, torch_forward

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """A diffusers folder (random perturbed torch weights) and its torch model."""
    torch_model = make_torch_unet(TINY_ATTN2, seed=7)
    folder = str(tmp_path_factory.mktemp("diffusers_unet"))
    torch_model.save_pretrained(folder)
    return folder, torch_model


@pytest.fixture(scope="module")
def loaded(src):
    return load_unet(src[0])


def _assert_params_equal(a, b):
    fa, fb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (path, x), (_, y) in zip(fa, fb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def _eps(model, params, seed=0):
    x, t = random_inputs(TINY_ATTN2, batch=2, seed=seed)
    return np.asarray(jax.jit(model.apply)({"params": params}, x, t))


def _copy_with_state_dict(src_folder, dst, edit):
    os.makedirs(dst)
    with open(os.path.join(src_folder, "config.json")) as f:
        cfg = f.read()
    with open(os.path.join(dst, "config.json"), "w") as f:
        f.write(cfg)
    sd = load_file(os.path.join(src_folder, WEIGHTS))
    save_file(edit(sd), os.path.join(dst, WEIGHTS))
    return dst


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def test_legacy_attention_key_names_load_identically(src, loaded, tmp_path):
    rename = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

    def to_legacy(sd):
        out = {}
        for k, v in sd.items():
            for new, old in rename.items():
                k = k.replace(f".{new}.", f".{old}.")
            out[k] = v
        assert any(".proj_attn." in k for k in out) and not any(".to_q." in k for k in out)
        return out

    folder = _copy_with_state_dict(src[0], str(tmp_path / "legacy"), to_legacy)
    _, params = load_unet(folder)
    _assert_params_equal(params, loaded[1])


def test_pipeline_folder_with_unet_subfolder(src, loaded, tmp_path):
    _copy_with_state_dict(src[0], str(tmp_path / "pipe" / "unet"), lambda sd: sd)
    _, params = load_unet(str(tmp_path / "pipe"))
    _assert_params_equal(params, loaded[1])


def test_missing_key_is_reported(src, tmp_path):
    gone = "mid_block.attentions.0.to_k.bias"
    folder = _copy_with_state_dict(src[0], str(tmp_path / "missing"),
                                   lambda sd: {k: v for k, v in sd.items() if k != gone})
    with pytest.raises(ValueError, match=r"missing keys \(1\): " + gone.replace(".", r"\.")):
        load_unet(folder)


def test_unexpected_and_misshaped_keys_are_reported(src, tmp_path):
    def edit(sd):
        sd = dict(sd)
        sd["extra.weight"] = np.zeros(3, np.float32)
        sd["conv_in.bias"] = np.zeros(5, np.float32)
        return sd

    folder = _copy_with_state_dict(src[0], str(tmp_path / "bad"), edit)
    with pytest.raises(ValueError,
                       match=r"(?s)unexpected keys \(1\): extra\.weight.*shape mismatches \(1\): conv_in\.bias"):
        load_unet(folder)


def test_corrupt_safetensors_is_reported(src, tmp_path):
    folder = _copy_with_state_dict(src[0], str(tmp_path / "corrupt"), lambda sd: sd)
    path = os.path.join(folder, WEIGHTS)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(ValueError, match=r"corrupt or truncated"):
        load_unet(folder)


def test_missing_weights_and_config_are_reported(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        load_unet(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", **TINY_ATTN2}))
    with pytest.raises(ValueError, match="no weights file"):
        load_unet(str(tmp_path))


@pytest.mark.parametrize("field, value, supported", [
    ("time_embedding_type", "learned", "positional"),
    ("class_embed_type", "timestep", "None"),
    ("down_block_types", ["DownBlock2D", "CrossAttnDownBlock2D", "AttnDownBlock2D"], "AttnDownBlock2D"),
    ("up_block_types", ["AttnUpBlock2D", "AttnUpBlock2D", "SkipUpBlock2D"], "UpBlock2D"),
    ("downsample_type", "resnet", "conv"),
    ("resnet_time_scale_shift", "spatial", "scale_shift"),
    ("act_fn", "tanh", "silu"),
])
def test_unsupported_config_values_name_the_field(field, value, supported):
    cfg = {"_class_name": "UNet2DModel", "_diffusers_version": "0.30.0", **TINY_ATTN2, field: value}
    with pytest.raises(ValueError, match=rf"(?s){field}=.*{value if isinstance(value, str) else ''}.*{supported}"):
        UNetConfig.from_dict(cfg)


def test_config_round_trip():
    cfg = UNetConfig.from_dict({"_class_name": "UNet2DModel", **TINY_ATTN2})
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.block_out_channels == (16, 32, 32) and cfg.flip_sin_to_cos is False
    json.dumps(cfg.to_dict())


# ----------------------------------------------------------------------------------------------
# Writing: converted (orbax) and diffusers folders
# ----------------------------------------------------------------------------------------------
def test_converter_round_trip_is_bit_identical(src, loaded, tmp_path, capsys):
    dst = str(tmp_path / "converted")
    convert_cli.main([src[0], dst])
    out = capsys.readouterr().out.strip().splitlines()
    n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(loaded[1]))
    assert len(out) == 1 and f"{n:,} params" in out[0]
    with open(os.path.join(dst, "config.json")) as f:
        assert json.load(f)["_jaxhspace_format"] == "orbax"
    model, params = load_unet(dst)
    assert model.config == loaded[0].config
    _assert_params_equal(params, loaded[1])
    apply = jax.jit(model.apply)
    x, t = random_inputs(TINY_ATTN2, batch=2)
    np.testing.assert_array_equal(apply({"params": params}, x, t), apply({"params": loaded[1]}, x, t))
    with pytest.raises(SystemExit, match="already exists"):
        convert_cli.main([src[0], dst])
    convert_cli.main([src[0], dst, "--overwrite"])


def test_interrupted_conversion_leaves_nothing(src, tmp_path, monkeypatch):
    def boom(folder, params):
        os.makedirs(os.path.join(folder, "params"))  # partial output
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(unet_ckpt, "save_params", boom)
    dst = tmp_path / "converted"
    with pytest.raises(KeyboardInterrupt):
        convert_cli.main([src[0], str(dst)])
    assert not dst.exists()
    assert os.listdir(tmp_path) == []


def test_save_unet_diffusers_loads_in_diffusers(src, loaded, tmp_path):
    from diffusers import UNet2DModel as TorchUNet2DModel

    model, params = loaded
    dst = str(tmp_path / "exported")
    save_unet_diffusers(dst, model, params)
    torch_model = TorchUNet2DModel.from_pretrained(dst).eval()
    x, t = random_inputs(TINY_ATTN2, batch=2, seed=0)
    eps_t, _ = torch_forward(torch_model, x, t)
    assert max_abs(_eps(model, params), eps_t) <= 1e-5
    # and our loader reads it back bit-identically
    _assert_params_equal(load_unet(dst)[1], params)


def test_save_unet_diffusers_float16(loaded, tmp_path):
    model, params = loaded
    dst = str(tmp_path / "fp16")
    save_unet_diffusers(dst, model, params, dtype=np.float16)
    assert all(v.dtype == np.float16 for v in load_file(os.path.join(dst, WEIGHTS)).values())
    _, params16 = load_unet(dst)
    for a, b in zip(jax.tree.leaves(params16), jax.tree.leaves(params)):
        assert a.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b).astype(np.float16).astype(np.float32))


def test_save_unet_converted_is_atomic_and_refuses_overwrite(loaded, tmp_path):
    model, params = loaded
    dst = str(tmp_path / "c")
    save_unet_converted(dst, model, params)
    with pytest.raises(ValueError, match="already exists"):
        save_unet_converted(dst, model, params)
    save_unet_converted(dst, model, params, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["c"]


# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("x_shape, x_dtype, t, match", [
    ((2, 16, 16, 4), np.float32, [1, 2], r"3 channels in the last axis"),
    ((2, 3, 16, 16), np.float32, [1, 2], r"NCHW"),
    ((16, 16, 3), np.float32, [1], r"4-D"),
    ((2, 14, 16, 3), np.float32, [1, 2], r"14x16 must be divisible by 4"),
    ((2, 16, 16, 3), np.int32, [1, 2], r"float"),
    ((2, 16, 16, 3), np.float32, [1, 2, 3], r"t must be a scalar or of shape \[B\]=\[2\]"),
    ((2, 16, 16, 3), np.float32, [[1, 2]], r"t must be a scalar or of shape"),
])
def test_bad_inputs_raise_clear_errors(loaded, x_shape, x_dtype, t, match):
    model, params = loaded
    x = jnp.zeros(x_shape, x_dtype)
    with pytest.raises(ValueError, match=match):
        jax.jit(model.apply)({"params": params}, x, jnp.asarray(t))


def test_bad_delta_h_raises(loaded):
    model, params = loaded
    x, t = random_inputs(TINY_ATTN2, batch=2)
    with pytest.raises(ValueError, match="delta_h of shape"):
        jax.jit(model.apply)({"params": params}, x, t, delta_h=jnp.zeros((2, 4, 4, 7)))
