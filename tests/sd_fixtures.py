"""A tiny Stable-Diffusion-format pipeline folder built offline with diffusers/transformers (random init, perturbed so
norms and biases are not 1/0), for the latent-world tests. Image 32x32 -> latent 8x8x4 -> h 4x4x64."""
from __future__ import annotations

import json
import os
import string

import torch

VOCAB_WORDS = ("face", "smiling", "red", "hair", "glasses")


def _tokenizer(folder: str):
    """A CLIPTokenizer over a-z characters (+ a few merges), written and read back offline."""
    from transformers import CLIPTokenizer

    os.makedirs(folder, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase:
        vocab[c] = len(vocab)
    for c in string.ascii_lowercase:
        vocab[c + "</w>"] = len(vocab)
    merges = ["f a", "fa c", "fac e</w>", "h a", "ha i", "hai r</w>"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"), model_max_length=12)


def perturb_(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Add N(0, scale) to every parameter (LayerNorm/GroupNorm weights move away from 1, biases from 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def tiny_sd_pipeline(folder: str, seed: int = 0, prediction_type: str = "epsilon"):
    """Build, perturb and ``save_pretrained`` a tiny ``StableDiffusionPipeline`` to ``folder``; returns it (torch)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = _tokenizer(os.path.join(folder + ".tok"))
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok.get_vocab()), hidden_size=32, intermediate_size=37,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=12,
                                        projection_dim=16, hidden_act="quick_gelu",
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(16, 32, 32), layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        latent_channels=4, norm_num_groups=8, sample_size=32)
    for i, m in enumerate((text, unet, vae)):
        perturb_(m, seed + 100 + i)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)
    pipe = StableDiffusionPipeline(vae=vae.eval(), text_encoder=text.eval(), tokenizer=tok, unet=unet.eval(),
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return pipe
