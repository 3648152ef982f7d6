"""Flax CLIP text tower loaded from a standalone transformers ``CLIPTextModel`` folder (a Stable Diffusion pipeline's
``text_encoder/``) vs transformers: ``last_hidden_state`` (after final_layer_norm, what SD's UNet receives)."""
import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from jaxhspace.checkpoints.clip import load_clip_text
from unet_fixtures import check_parity

transformers = pytest.importorskip("transformers")

TOL = 1e-4  # the documented parity contract
REGRESSION = 1e-5  # measured 2.0e-6 (SD-1 style) and 1.8e-6 (SD-2 style) on the tiny configs
FULL_REGRESSION = 4e-5  # measured 6.0e-6 (SD-1 ViT-L/14 text), 5.0e-6 (SD-2 OpenCLIP ViT-H text)
# SD-1.x: CLIP ViT-L/14 text (runwayml/stable-diffusion-v1-5 text_encoder/config.json)
SD1 = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
           max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, layer_norm_eps=1e-5,
           bos_token_id=0, eos_token_id=2, pad_token_id=1)
# SD-2.x: OpenCLIP ViT-H text in CLIPTextModel format (stabilityai/stable-diffusion-2-1-base text_encoder/config.json)
SD2 = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
           max_position_embeddings=77, hidden_act="gelu", projection_dim=512, layer_norm_eps=1e-5,
           bos_token_id=0, eos_token_id=2, pad_token_id=1)
TINY = dict(vocab_size=600, hidden_size=64, intermediate_size=128, num_attention_heads=4)


def tiny(cfg, layers):
    return {**cfg, **TINY, "num_hidden_layers": layers, "projection_dim": 32}


def build(cfg, folder, seed=0, legacy_keys=False):
    """Random-init CLIPTextModel with perturbed LayerNorms and biases, saved to ``folder``; returns the torch model."""
    torch.manual_seed(seed)
    ref = transformers.CLIPTextModel(transformers.CLIPTextConfig(**cfg)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # LayerNorm weights 1 / biases 0 and Linear biases 0 at init: perturb them
        for name, p in ref.named_parameters():
            if "layer_norm" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    ref.save_pretrained(folder)
    if legacy_keys:  # transformers 4.x layout, as in every published SD text_encoder/
        sd = {f"text_model.{k}": v.detach().numpy() for k, v in ref.state_dict().items()}
        sd["text_model.embeddings.position_ids"] = np.arange(cfg["max_position_embeddings"])[None].astype(np.int64)
        save_file(sd, f"{folder}/model.safetensors")
    return ref


def ids_for(cfg, batch=2, seed=0):
    """Token ids like an SD prompt: bos, words, eos, then padding up to 77."""
    rng = np.random.RandomState(seed)
    ids = np.full((batch, 77), cfg["pad_token_id"], np.int64)
    for b in range(batch):
        n = rng.randint(3, 20)
        ids[b, 0] = cfg["bos_token_id"]
        ids[b, 1:n] = rng.randint(3, cfg["vocab_size"], n - 1)
        ids[b, n] = cfg["eos_token_id"]
    return ids


def compare(ref, folder, cfg, label, regression_tol):
    model, params = load_clip_text(folder)
    assert model.config.hidden_act == cfg["hidden_act"]
    assert model.config.num_hidden_layers == cfg["num_hidden_layers"]
    ids = ids_for(cfg)
    with torch.no_grad():
        want = ref(torch.from_numpy(ids)).last_hidden_state.numpy()
    got, _ = model.apply({"params": params}, ids)
    assert np.abs(want).max() > 0.5  # not a trivially small comparison
    return check_parity(label, got, want, TOL, regression_tol)


@pytest.mark.parametrize("cfg,layers", [(SD1, 3), (SD2, 5)], ids=["sd1_quick_gelu", "sd2_gelu"])
@pytest.mark.parametrize("legacy_keys", [False, True], ids=["tf5_keys", "text_model_keys"])
def test_tiny_sd_text_encoders(cfg, layers, legacy_keys, tmp_path):
    c = tiny(cfg, layers)
    ref = build(c, str(tmp_path), legacy_keys=legacy_keys)
    compare(ref, str(tmp_path), c, f"tiny {cfg['hidden_act']} text encoder, legacy_keys={legacy_keys}", REGRESSION)


def test_text_encoder_rejects_a_full_clip_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ValueError, match="clip_text_model"):
        load_clip_text(str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [SD1, SD2], ids=["sd1_vit_l14_text", "sd2_openclip_vit_h_text"])
def test_full_size_sd_text_encoders(cfg, tmp_path):
    ref = build(cfg, str(tmp_path), legacy_keys=True)
    compare(ref, str(tmp_path), cfg, f"full-size {cfg['hidden_act']} text encoder", FULL_REGRESSION)
