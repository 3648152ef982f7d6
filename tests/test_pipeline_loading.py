"""load_pipeline on tiny diffusers pipeline folders (unconditional LDM and Stable Diffusion) built from random-init,
perturbed components with save_pretrained; the helpers are compared with the diffusers pipelines' own formulas."""
import json
import os
import shutil

import jax
import numpy as np
import pytest
import torch

from jaxhspace.checkpoints import encode_prompt, images_to_latents, latents_to_images, load_pipeline, load_vae
from jaxhspace.checkpoints.clip import load_clip_tokenizer, write_byte_level_clip_vocab
from jaxhspace.models.clip import CLIPTextModel
from jaxhspace.models.vae import AutoencoderKL, VQModel
from unet_fixtures import check_parity

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

TOL = 1e-4  # the documented parity contract
# Regression bounds, ~5-10x above the measured max |ours - torch| (float32, CPU; in brackets), so a 10x regression
# fails while TOL stays the contract.
REG = dict(ldm_eps=2e-5,  # 3.2e-6
           ldm_latents=1.5e-6,  # 2.0e-7
           ldm_images=2e-5,  # 3.3e-6
           sd_prompt=1e-5,  # 1.4e-6
           sd_eps=1.5e-5,  # 2.4e-6
           sd_latents=1.5e-6,  # 2.7e-7 (mean and sampled)
           sd_images=1.5e-5)  # 2.5e-6
WORDS = ["a", "photo", "of", "cat", "dog", "smiling", "face"]
VAE_TINY = dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4)


def nchw(a):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)))


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def perturb(model, seed, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()


def image(shape, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.fixture(scope="module")
def ldm(tmp_path_factory):
    torch.manual_seed(0)
    unet = perturb(diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8), 1)
    vq = perturb(diffusers.VQModel(latent_channels=3, num_vq_embeddings=32, **VAE_TINY), 2)
    with torch.no_grad():  # codebook at the latents' scale
        h = vq.encode(nchw(image((1, 16, 16, 3), 9))).latents
        vq.quantize.embedding.weight.copy_(h.std() * torch.randn(vq.quantize.embedding.weight.shape))
    folder = str(tmp_path_factory.mktemp("ldm") / "pipe")
    diffusers.LDMPipeline(vqvae=vq, unet=unet, scheduler=diffusers.DDIMScheduler()).save_pretrained(folder)
    return folder, unet, vq, load_pipeline(folder)


def test_ldm_pipeline_components(ldm):
    folder, unet, vq, pipe = ldm
    assert pipe.pipeline_class == "LDMPipeline"
    assert isinstance(pipe.vae, VQModel) and pipe.is_vq
    assert pipe.text_encoder is None and pipe.text_params is None and pipe.tokenizer is None
    assert pipe.scheduler["_class_name"] == "DDIMScheduler" and pipe.prediction_type == "epsilon"
    assert pipe.vae_scaling_factor == vq.config.scaling_factor  # written by save_pretrained, used by LDMPipeline
    assert pipe.latent_channels == 3 and pipe.vae_downsample_factor == 2
    with pytest.raises(ValueError, match="no tokenizer"):
        encode_prompt(pipe, "a photo")
    z = np.random.RandomState(1).randn(2, 8, 8, 3).astype(np.float32)
    with torch.no_grad():
        eps = unet(nchw(z), torch.tensor([10, 500])).sample
    got = pipe.unet.apply({"params": pipe.unet_params}, z, np.array([10, 500]))
    check_parity("LDM unet eps", got, nhwc(eps), TOL, REG["ldm_eps"])


def test_ldm_latents_round_trip_vs_diffusers(ldm):
    _, _, vq, pipe = ldm
    s = vq.config.scaling_factor
    x = image((2, 16, 16, 3), 3)
    with torch.no_grad():
        h = vq.encode(nchw(x)).latents
        # LDMPipeline.__call__: latents / vqvae.config.scaling_factor, then vqvae.decode (quantises)
        img = vq.decode(h).sample
    z = images_to_latents(pipe, x)
    check_parity("LDM images_to_latents", z, nhwc(h) * s, TOL, REG["ldm_latents"])
    check_parity("LDM latents_to_images", latents_to_images(pipe, nhwc(h) * s), nhwc(img), TOL, REG["ldm_images"])
    with pytest.raises(ValueError, match="latents must be NHWC"):
        latents_to_images(pipe, np.zeros((1, 8, 8, 4), np.float32))
    vae, params = load_vae(ldm[0])  # a pipeline root resolves to its vqvae/
    assert isinstance(vae, VQModel) and params["quantize"]["embedding"]["embedding"].shape == (32, 3)


def test_vq_scaling_factor_defaults_to_one_when_absent(ldm, tmp_path):
    """ldm-celebahq-256's vqvae config has no scaling_factor; its latents are unscaled (LDM's scale_factor 1.0)."""
    folder = str(tmp_path / "pipe")
    shutil.copytree(ldm[0], folder)
    path = os.path.join(folder, "vqvae", "config.json")
    with open(path) as f:
        cfg = json.load(f)
    del cfg["scaling_factor"]
    with open(path, "w") as f:
        json.dump(cfg, f)
    assert load_pipeline(folder).vae_scaling_factor == 1.0
    assert load_pipeline(folder, vae_scaling_factor=0.5).vae_scaling_factor == 0.5


def test_missing_components_named_in_one_error(ldm, tmp_path):
    folder = str(tmp_path / "pipe")
    shutil.copytree(ldm[0], folder)
    os.remove(os.path.join(folder, "vqvae", "diffusion_pytorch_model.safetensors"))
    os.remove(os.path.join(folder, "scheduler", "scheduler_config.json"))
    with pytest.raises(ValueError) as e:
        load_pipeline(folder)
    msg = str(e.value)
    assert "vqvae: no weights" in msg and "diffusion_pytorch_model.safetensors" in msg
    assert "scheduler: no scheduler_config.json" in msg
    shutil.rmtree(os.path.join(folder, "unet"))
    with pytest.raises(ValueError, match="unet: folder .* is missing"):
        load_pipeline(folder)
    os.remove(os.path.join(folder, "model_index.json"))
    with pytest.raises(ValueError, match="model_index.json is missing"):
        load_pipeline(folder)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    torch.manual_seed(0)
    tok_dir = str(tmp_path_factory.mktemp("tok"))
    vocab = write_byte_level_clip_vocab(tok_dir, WORDS)
    with open(os.path.join(tok_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": 77}, f)
    tokenizer = load_clip_tokenizer(tok_dir)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        hidden_act="gelu", projection_dim=32, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
        pad_token_id=vocab - 1)).eval()
    perturb(text, 3, scale=0.05)
    unet = perturb(diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8), 4)
    vae = perturb(diffusers.AutoencoderKL(latent_channels=4, **VAE_TINY), 5)
    scheduler = diffusers.DDIMScheduler(prediction_type="v_prediction", beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    ref = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                            scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                            requires_safety_checker=False)
    folder = str(tmp_path_factory.mktemp("sd") / "pipe")
    ref.save_pretrained(folder)
    return folder, ref, load_pipeline(folder)


def test_sd_pipeline_components_and_prompt_embeddings(sd):
    _, ref, pipe = sd
    assert pipe.pipeline_class == "StableDiffusionPipeline"
    assert isinstance(pipe.vae, AutoencoderKL) and isinstance(pipe.text_encoder, CLIPTextModel)
    assert pipe.prediction_type == "v_prediction" and pipe.scheduler["beta_schedule"] == "scaled_linear"
    assert pipe.vae_scaling_factor == 0.18215 and pipe.latent_channels == 4
    prompts = ["a photo of a smiling cat", ""]
    with torch.no_grad():
        want, _ = ref.encode_prompt(prompts, "cpu", 1, False)
    got = encode_prompt(pipe, prompts)
    assert got.shape == (2, 77, 32)
    check_parity("SD encode_prompt", got, want.numpy(), TOL, REG["sd_prompt"])
    check_parity("SD encode_prompt (one str)", encode_prompt(pipe, "a photo of a smiling cat"), want.numpy()[:1], TOL,
                 REG["sd_prompt"])
    # the UNet sees the embeddings as encoder_hidden_states (UNet2DConditionModel loaded through load_unet)
    z = np.random.RandomState(2).randn(2, 8, 8, 4).astype(np.float32)
    with torch.no_grad():
        eps = ref.unet(nchw(z), torch.tensor([10, 700]), encoder_hidden_states=want).sample
    got_eps = pipe.unet.apply({"params": pipe.unet_params}, z, np.array([10, 700]), encoder_hidden_states=got)
    check_parity("SD unet eps", got_eps, nhwc(eps), TOL, REG["sd_eps"])


def test_sd_latents_vs_diffusers(sd):
    _, ref, pipe = sd
    s = ref.vae.config.scaling_factor
    x = image((2, 16, 16, 3), 4)
    with torch.no_grad():
        dist = ref.vae.encode(nchw(x)).latent_dist
        z_ref = dist.mean * s  # img2img's retrieve_latents(sample_mode="argmax") * scaling_factor
        img_ref = ref.vae.decode(z_ref / s).sample  # StableDiffusionPipeline's decode
    z = images_to_latents(pipe, x)
    check_parity("SD images_to_latents", z, nhwc(z_ref), TOL, REG["sd_latents"])
    check_parity("SD latents_to_images", latents_to_images(pipe, nhwc(z_ref)), nhwc(img_ref), TOL, REG["sd_images"])
    key = jax.random.PRNGKey(7)
    noise = np.asarray(jax.random.normal(key, (2, 8, 8, 4)))
    with torch.no_grad():
        sampled = (dist.mean + dist.std * nchw(noise)) * s  # DiagonalGaussianDistribution.sample with our noise
    check_parity("SD images_to_latents (sampled)", images_to_latents(pipe, x, key=key), nhwc(sampled), TOL,
                 REG["sd_latents"])


def test_sd_missing_text_encoder_and_tokenizer(sd, tmp_path):
    folder = str(tmp_path / "pipe")
    shutil.copytree(sd[0], folder, ignore=shutil.ignore_patterns("*.safetensors"))
    for sub in ("unet", "vae"):
        shutil.copy(os.path.join(sd[0], sub, "diffusion_pytorch_model.safetensors"), os.path.join(folder, sub))
    shutil.rmtree(os.path.join(folder, "tokenizer"))
    with pytest.raises(ValueError) as e:
        load_pipeline(folder)
    msg = str(e.value)
    assert "text_encoder: no weights" in msg and "model.safetensors" in msg
    assert "tokenizer: folder" in msg and "is missing" in msg
    with open(os.path.join(folder, "model_index.json")) as f:
        index = json.load(f)
    del index["text_encoder"], index["tokenizer"]
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f)
    with pytest.raises(ValueError, match="text_encoder: model_index.json lists no 'text_encoder'"):
        load_pipeline(folder)
