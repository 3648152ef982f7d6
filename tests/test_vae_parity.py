"""Flax AutoencoderKL / VQModel vs diffusers (PyTorch) on random-init, perturbed tiny models loaded with load_vae."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from jaxhspace.checkpoints.vae import load_vae
from jaxhspace.models.vae import AutoencoderKLConfig, VQModelConfig
from unet_fixtures import check_parity

diffusers = pytest.importorskip("diffusers")

TOL = 1e-4  # the documented parity contract
# Regression bounds, ~5-10x above the measured max |ours - torch| (float32, CPU; in brackets), so a 10x regression
# fails while TOL stays the contract. Tiny models perturbed by 0.1*randn; SD VAE by 0.02*randn at 64x64.
REG = dict(kl_mean=1e-5,  # 1.7e-6
           kl_logvar=2e-5,  # 2.2e-6
           kl_decode=5e-5,  # 8.6e-6
           kl_jvp=5e-5,  # 7.0e-6
           kl_nq_mean=2e-5,  # 3.0e-6
           kl_nq_decode=3e-5,  # 4.8e-6
           vq_encode=1e-5,  # 1.4e-6
           vq_decode=3e-5,  # 4.9e-6
           vq_decode_nq=2e-5,  # 3.2e-6
           sd_mean=2e-5,  # 3.3e-6
           sd_logvar=3e-5,  # 4.5e-6
           sd_decode=4e-5)  # 6.1e-6
TINY = dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=2, norm_num_groups=4)


def nchw(a):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)))


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def perturb(model, seed, scale=0.1):
    """Add noise to every parameter (GroupNorm scales/biases included) so no parameter keeps its init value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def image(shape, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.fixture(scope="module")
def kl(tmp_path_factory):
    torch.manual_seed(0)
    ref = perturb(diffusers.AutoencoderKL(latent_channels=4, **TINY).eval(), 1)
    folder = str(tmp_path_factory.mktemp("kl"))
    ref.save_pretrained(folder)
    return ref, folder, *load_vae(folder)


@pytest.fixture(scope="module")
def vq(tmp_path_factory):
    torch.manual_seed(0)
    ref = perturb(diffusers.VQModel(latent_channels=3, num_vq_embeddings=64, **TINY).eval(), 2)
    x = image((2, 16, 16, 3), 3)
    with torch.no_grad():  # codebook at the latents' scale, so quantisation picks many different codes
        h = ref.encode(nchw(x)).latents
        g = torch.Generator().manual_seed(4)
        ref.quantize.embedding.weight.copy_(h.std() * torch.randn(ref.quantize.embedding.weight.shape, generator=g))
    folder = str(tmp_path_factory.mktemp("vq"))
    ref.save_pretrained(folder)
    return ref, folder, *load_vae(folder)


def test_kl_encode_mean_logvar_and_decode(kl):
    ref, _, vae, params = kl
    x = image((2, 16, 16, 3))
    with torch.no_grad():
        dist = ref.encode(nchw(x)).latent_dist
        dec = ref.decode(dist.mean).sample
    mean, logvar = vae.apply({"params": params}, x, method=vae.encode)
    assert mean.shape == (2, 8, 8, 4)
    check_parity("kl mean", mean, nhwc(dist.mean), TOL, REG["kl_mean"])
    check_parity("kl logvar", logvar, nhwc(dist.logvar), TOL, REG["kl_logvar"])
    out = vae.apply({"params": params}, nhwc(dist.mean), method=vae.decode)
    assert out.shape == (2, 16, 16, 3)
    check_parity("kl decode", out, nhwc(dec), TOL, REG["kl_decode"])


def test_kl_jvp_through_decoder_matches_torch(kl):
    ref, _, vae, params = kl
    from diffusers.models.attention_processor import AttnProcessor

    ref.set_attn_processor(AttnProcessor())  # torch.func.jvp does not support SDPA
    rng = np.random.RandomState(5)
    z, dz = rng.randn(1, 8, 8, 4).astype(np.float32), rng.randn(1, 8, 8, 4).astype(np.float32)
    _, t_tan = torch.func.jvp(lambda a: ref.decode(a).sample, (nchw(z),), (nchw(dz),))
    _, j_tan = jax.jvp(lambda a: vae.apply({"params": params}, a, method=vae.decode), (jnp.asarray(z),),
                       (jnp.asarray(dz),))
    check_parity("kl decoder jvp", j_tan, nhwc(t_tan), TOL, REG["kl_jvp"])


def test_kl_without_quant_convs_and_mid_attention(tmp_path):
    torch.manual_seed(0)
    ref = perturb(diffusers.AutoencoderKL(latent_channels=2, use_quant_conv=False, use_post_quant_conv=False,
                                          mid_block_add_attention=False, **TINY).eval(), 6)
    ref.save_pretrained(str(tmp_path))
    vae, params = load_vae(str(tmp_path))
    assert "quant_conv" not in params and "post_quant_conv" not in params
    x = image((1, 16, 16, 3), 7)
    with torch.no_grad():
        dist = ref.encode(nchw(x)).latent_dist
        dec = ref.decode(dist.mean).sample
    mean, _ = vae.apply({"params": params}, x, method=vae.encode)
    check_parity("kl no quant convs: mean", mean, nhwc(dist.mean), TOL, REG["kl_nq_mean"])
    check_parity("kl no quant convs: x -> decode(mean)", vae.apply({"params": params}, x), nhwc(dec), TOL,
                 REG["kl_nq_decode"])


def test_vq_encode_and_decode_with_quantisation(vq):
    ref, _, vae, params = vq
    x = image((2, 16, 16, 3), 3)
    with torch.no_grad():
        h = ref.encode(nchw(x)).latents
        dec = ref.decode(h).sample  # quantises first
        dec_nq = ref.decode(h, force_not_quantize=True).sample
        _, _, (_, _, idx_t) = ref.quantize(h)
    hj = vae.apply({"params": params}, x, method=vae.encode)
    check_parity("vq encode", hj, nhwc(h), TOL, REG["vq_encode"])
    _, idx = vae.apply({"params": params}, nhwc(h), method=vae.quantize_latents)
    np.testing.assert_array_equal(np.asarray(idx).reshape(-1), idx_t.numpy().reshape(-1))
    assert len(np.unique(np.asarray(idx))) > 5  # quantisation is not trivial
    out = vae.apply({"params": params}, nhwc(h), method=vae.decode)
    check_parity("vq decode (quantised)", out, nhwc(dec), TOL, REG["vq_decode"])
    out_nq = vae.apply({"params": params}, nhwc(h), True, method=vae.decode)
    check_parity("vq decode (not quantised)", out_nq, nhwc(dec_nq), TOL, REG["vq_decode_nq"])
    assert np.abs(np.asarray(out) - np.asarray(out_nq)).max() > 1e-2  # quantising changes the image


def test_vq_legacy_attention_keys(vq, tmp_path):
    """Old checkpoints (e.g. ldm-celebahq-256's vqvae) name the mid-block attention query/key/value/proj_attn."""
    _, folder, vae, params = vq
    sd = load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for k, v in sd.items():
        for new, legacy in old.items():
            k = k.replace(f"attentions.0.{new}.", f"attentions.0.{legacy}.")
        renamed[k] = v
    assert any(".proj_attn." in k for k in renamed)
    save_file(renamed, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(folder, "config.json")) as f:
        (tmp_path / "config.json").write_text(f.read())
    _, params2 = load_vae(str(tmp_path))
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_strict_keys_and_bad_configs(kl, tmp_path):
    _, folder, _, _ = kl
    sd = load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    del sd["decoder.conv_out.bias"]
    sd["encoder.extra.weight"] = np.zeros(3, np.float32)
    sd["quant_conv.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    save_file(sd, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as e:
        load_vae(str(tmp_path))
    msg = str(e.value)
    assert "decoder.conv_out.bias" in msg and "encoder.extra.weight" in msg and "quant_conv.weight" in msg
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "_class_name": "AutoencoderTiny"}))
    with pytest.raises(ValueError, match="_class_name"):
        load_vae(str(tmp_path))
    with pytest.raises(ValueError, match="norm_type"):
        VQModelConfig(norm_type="spatial")
    with pytest.raises(ValueError, match="shift_factor"):
        AutoencoderKLConfig(shift_factor=0.1159)
    with pytest.raises(ValueError, match="down_block_types"):
        AutoencoderKLConfig(down_block_types=("AttnDownEncoderBlock2D",))
    _, _, vae, params = kl
    with pytest.raises(ValueError, match="NCHW"):
        vae.apply({"params": params}, np.zeros((1, 3, 16, 16), np.float32), method=vae.encode)


SD_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, norm_num_groups=32,
              sample_size=512, scaling_factor=0.18215)


@pytest.mark.slow
def test_sd_vae_full_config(tmp_path):
    """The SD-1.x/2.x VAE config at a 64x64 image: parameter count and encode/decode parity."""
    torch.manual_seed(0)
    ref = perturb(diffusers.AutoencoderKL(**SD_VAE).eval(), 8, scale=0.02)
    n_torch = sum(p.numel() for p in ref.parameters())
    assert n_torch == 83_653_863
    ref.save_pretrained(str(tmp_path))
    vae, params = load_vae(str(tmp_path))
    assert sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params)) == 83_653_863
    assert vae.config.scaling_factor == 0.18215
    x = image((1, 64, 64, 3), 9)
    with torch.no_grad():
        dist = ref.encode(nchw(x)).latent_dist
        dec = ref.decode(dist.mean).sample
    del ref
    mean, logvar = jax.jit(lambda p, a: vae.apply({"params": p}, a, method=vae.encode))(params, x)
    check_parity("SD VAE mean", mean, nhwc(dist.mean), TOL, REG["sd_mean"])
    check_parity("SD VAE logvar", logvar, nhwc(dist.logvar), TOL, REG["sd_logvar"])
    out = jax.jit(lambda p, a: vae.apply({"params": p}, a, method=vae.decode))(params, nhwc(dist.mean))
    check_parity("SD VAE decode", out, nhwc(dec), TOL, REG["sd_decode"])
