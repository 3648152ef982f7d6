"""Parity of jaxhspace's Flax CLIP with transformers' PyTorch CLIPModel (random init, no network), plus
checkpoint round trips and loader errors."""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from flax import traverse_util  # noqa: E402

from jaxhspace.checkpoints.clip import (  # noqa: E402
    load_clip, load_clip_tokenizer, save_clip_hf, write_byte_level_clip_vocab)
from jaxhspace.models.clip import count_params  # noqa: E402
from unet_fixtures import check_parity  # noqa: E402

WORDS = ["a", "photo", "of", "the", "cat", "dog", "face", "smiling", "person", "old", "young"]
TOL = 1e-4  # the documented parity contract
REGRESSION_TOL = 5e-6  # measured <= 9.5e-7 on the tiny configs (printed); TOL stays the contract
B32_REGRESSION_TOL = 2e-5  # ViT-B/32, LayerNorms + biases perturbed: measured 2.6e-6 (text and image)


def tiny_config(hidden_act="quick_gelu", eos_token_id=None, vocab_size=None):
    vocab_size = vocab_size or 1000
    eos = vocab_size - 1 if eos_token_id is None else eos_token_id
    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=16, hidden_act=hidden_act, projection_dim=24,
                bos_token_id=vocab_size - 2, eos_token_id=eos, pad_token_id=vocab_size - 1)
    vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8, hidden_act=hidden_act, projection_dim=24)
    return transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)


def perturb_norms_and_biases_(model, scale=0.05, seed=0):
    """Add N(0, scale) to every LayerNorm weight and bias and every other bias in place (transformers initialises
    them to 1 / 0, so a dropped or swapped scale/bias would be invisible); other weights are left as initialised."""
    g = torch.Generator().manual_seed(seed)
    norms = {name for name, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    n = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[0] in norms or name.endswith(".bias"):
                p.add_(scale * torch.randn(p.shape, generator=g))
                n += 1
    return n


def make_hf_clip(folder, config, perturb=0.05, seed=0, tokenizer=True, norms_and_biases_only=False):
    """Random-init transformers CLIPModel saved with save_pretrained (+ a byte-level tokenizer); ``perturb`` adds
    N(0, perturb) to every parameter, or with ``norms_and_biases_only`` to the LayerNorms and biases only."""
    torch.manual_seed(seed)
    model = transformers.CLIPModel(config).eval()
    if perturb and norms_and_biases_only:
        perturb_norms_and_biases_(model, perturb, seed)
    elif perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(perturb * torch.randn_like(p))
    model.save_pretrained(folder)
    if tokenizer:
        write_byte_level_clip_vocab(folder, WORDS)
    return model


def torch_features(model, ids, mask, pix_nhwc):
    with torch.no_grad():
        t = model.get_text_features(input_ids=torch.as_tensor(np.asarray(ids), dtype=torch.long),
                                    attention_mask=None if mask is None else torch.as_tensor(np.asarray(mask)))
        i = model.get_image_features(pixel_values=torch.as_tensor(np.asarray(pix_nhwc).transpose(0, 3, 1, 2)))
    # transformers 5.x returns an output object whose projected features are .pooler_output
    t, i = getattr(t, "pooler_output", t), getattr(i, "pooler_output", i)
    return t.numpy(), i.numpy()


def jax_features(model, params, ids, mask, pix):
    t = model.apply({"params": params}, jnp.asarray(ids), None if mask is None else jnp.asarray(mask),
                    method=model.get_text_features)
    i = model.apply({"params": params}, jnp.asarray(pix), method=model.get_image_features)
    return np.asarray(t), np.asarray(i)


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("clip") / "hf")
    vocab = write_byte_level_clip_vocab(str(tmp_path_factory.mktemp("v")), WORDS)
    tmodel = make_hf_clip(folder, tiny_config(vocab_size=vocab))
    return folder, tmodel


@pytest.mark.parametrize("hidden_act,legacy_eos", [("quick_gelu", False), ("gelu", True), ("gelu_new", False)])
def test_tiny_parity_padded(tmp_path, hidden_act, legacy_eos):
    vocab = write_byte_level_clip_vocab(str(tmp_path), WORDS)
    cfg = tiny_config(hidden_act, eos_token_id=2 if legacy_eos else None, vocab_size=vocab)
    folder = str(tmp_path / "hf")
    tmodel = make_hf_clip(folder, cfg)
    model, params = load_clip(folder)
    tok = load_clip_tokenizer(folder)
    enc = tok(["a photo of the cat", "dog", "an old smiling person, photo!"], padding=True, truncation=True,
              max_length=16, return_tensors="np")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert mask.min() == 0 and mask[:, -1].max() == 1  # really padded, lengths differ
    assert (ids == tok.eos_token_id).any(axis=1).all() and tok.eos_token_id == vocab - 1
    pix = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    tt, ti = torch_features(tmodel, ids, mask, pix)
    jt, ji = jax_features(model, params, ids, mask, pix)
    assert np.abs(tt).max() > 0.1 and np.abs(ti).max() > 0.1  # non-trivial features
    check_parity(f"tiny {hidden_act} legacy_eos={legacy_eos} text", jt, tt, TOL, REGRESSION_TOL)
    check_parity(f"tiny {hidden_act} legacy_eos={legacy_eos} image", ji, ti, TOL, REGRESSION_TOL)
    # without attention_mask (causal mask only, like OpenAI clip): same pooled features at EOS
    tt2, _ = torch_features(tmodel, ids, None, pix)
    jt2, _ = jax_features(model, params, ids, None, pix)
    check_parity(f"tiny {hidden_act} text, no attention_mask", jt2, tt2, TOL, REGRESSION_TOL)
    assert count_params(params) == sum(p.numel() for p in tmodel.parameters())


def test_full_forward_logits(tiny_hf):
    folder, tmodel = tiny_hf
    model, params = load_clip(folder)
    ids = load_clip_tokenizer(folder)(["a dog", "a b"], padding=True, return_tensors="np")["input_ids"]
    pix = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        out = tmodel(input_ids=torch.as_tensor(ids), pixel_values=torch.as_tensor(pix.transpose(0, 3, 1, 2)))
    ours = model.apply({"params": params}, jnp.asarray(ids), jnp.asarray(pix))
    # logits are cosine similarities times exp(logit_scale) ~ 14.3: the contract is 5e-4 absolute here
    check_parity("tiny logits_per_text", ours["logits_per_text"], out.logits_per_text.numpy(), 5e-4, 1e-5)


def test_convert_round_trip_and_save_hf(tiny_hf, tmp_path):
    folder, tmodel = tiny_hf
    model, params = load_clip(folder)
    dst = str(tmp_path / "converted")
    r = subprocess.run([sys.executable, "-m", "checkpoints_convert.hf_clip", folder, dst], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 0, r.stderr
    assert "params" in r.stdout and "vocab.json" in r.stdout
    assert json.load(open(os.path.join(dst, "config.json")))["_jaxhspace_format"] == "orbax"
    model2, params2 = load_clip(dst)
    assert model2.config == model.config
    a, b = traverse_util.flatten_dict(params), traverse_util.flatten_dict(params2)
    assert a.keys() == b.keys()
    for k in a:
        assert np.asarray(b[k]).dtype == np.float32 and np.array_equal(np.asarray(a[k]), np.asarray(b[k])), k
    assert load_clip_tokenizer(dst)("a cat")["input_ids"] == load_clip_tokenizer(folder)("a cat")["input_ids"]
    # refusing to overwrite; nothing left behind by the failed attempt
    r = subprocess.run([sys.executable, "-m", "checkpoints_convert.hf_clip", folder, dst], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode != 0 and "already exists" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["converted"]

    # save_clip_hf -> transformers loads it and gives the same features
    out = str(tmp_path / "hf_out")
    save_clip_hf(out, model2, params2, tokenizer=dst)
    back = transformers.CLIPModel.from_pretrained(out).eval()
    tok = transformers.CLIPTokenizer.from_pretrained(out)
    enc = tok(["a photo of the dog", "cat"], padding=True, return_tensors="np")
    pix = np.random.default_rng(2).normal(size=(1, 32, 32, 3)).astype(np.float32)
    sd0, sd1 = tmodel.state_dict(), back.state_dict()
    assert sd0.keys() == sd1.keys()
    for k in sd0:
        assert torch.equal(sd0[k], sd1[k]), k
    t0, i0 = torch_features(tmodel, enc["input_ids"], enc["attention_mask"], pix)
    t1, i1 = torch_features(back, enc["input_ids"], enc["attention_mask"], pix)
    # identical weights; torch's conv may pick another kernel path for the reloaded tensor (~1 ulp)
    np.testing.assert_allclose(t0, t1, rtol=0, atol=1e-6)
    np.testing.assert_allclose(i0, i1, rtol=0, atol=1e-6)
    jt, ji = jax_features(model2, params2, enc["input_ids"], enc["attention_mask"], pix)
    check_parity("converted text vs save_clip_hf reload", jt, t1, TOL, REGRESSION_TOL)
    check_parity("converted image vs save_clip_hf reload", ji, i1, TOL, REGRESSION_TOL)


def test_position_ids_buffer_ignored_but_other_keys_rejected(tiny_hf, tmp_path):
    from safetensors.numpy import load_file, save_file

    folder, _ = tiny_hf
    sd = load_file(os.path.join(folder, "model.safetensors"))
    cfg = json.load(open(os.path.join(folder, "config.json")))

    def write(name, state, config=cfg):
        d = tmp_path / name
        d.mkdir()
        save_file(state, str(d / "model.safetensors"))
        json.dump(config, open(d / "config.json", "w"))
        return str(d)

    with_buffers = {**sd, "text_model.embeddings.position_ids": np.arange(16)[None],
                    "vision_model.embeddings.position_ids": np.arange(17)[None]}
    load_clip(write("buffers", with_buffers))
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): text_model.extra.weight"):
        load_clip(write("extra", {**sd, "text_model.extra.weight": np.zeros(3, np.float32)}))
    missing = {k: v for k, v in sd.items() if k != "vision_model.encoder.layers.1.mlp.fc2.bias"}
    with pytest.raises(ValueError, match=r"missing keys \(1\): vision_model.encoder.layers.1.mlp.fc2.bias"):
        load_clip(write("missing", missing))
    bad_shape = {**sd, "text_projection.weight": np.zeros((24, 31), np.float32)}
    with pytest.raises(ValueError, match=r"shape mismatches \(1\): text_projection.weight"):
        load_clip(write("shape", bad_shape))
    bad_act = json.loads(json.dumps(cfg))
    bad_act["vision_config"]["hidden_act"] = "foo"
    with pytest.raises(ValueError, match=r"vision_config.hidden_act='foo' is not supported"):
        load_clip(write("act", sd, bad_act))
    with pytest.raises(ValueError, match="model_type='clip_text_model'"):
        load_clip(write("mt", sd, {**cfg, "model_type": "clip_text_model"}))
    empty = tmp_path / "noweights"
    empty.mkdir()
    json.dump(cfg, open(empty / "config.json", "w"))
    with pytest.raises(ValueError, match="no weights file"):
        load_clip(str(empty))
    with pytest.raises(ValueError, match=r"no CLIP tokenizer .*missing \['vocab.json', 'merges.txt'\]"):
        load_clip_tokenizer(str(empty))


def test_wrong_image_size_for_tower(tiny_hf):
    model, params = load_clip(tiny_hf[0])
    with pytest.raises(ValueError, match=r"pixel_values must be NHWC \[batch, 32, 32, 3\]"):
        model.apply({"params": params}, jnp.zeros((1, 3, 32, 32)), method=model.get_image_features)
    with pytest.raises(ValueError, match="max_position_embeddings=16"):
        model.apply({"params": params}, jnp.zeros((1, 17), jnp.int32), method=model.get_text_features)


@pytest.mark.slow
def test_vit_b32_default_parity(tmp_path):
    """Default CLIPConfig() (ViT-B/32 shapes): 151,277,313 params, batch 1, float32. LayerNorm scales/biases and all
    biases are perturbed (transformers initialises them to 1 / 0, where a dropped or swapped one would not show)."""
    cfg = transformers.CLIPConfig()
    folder = str(tmp_path / "b32")
    tmodel = make_hf_clip(folder, cfg, perturb=0.05, tokenizer=False, norms_and_biases_only=True)
    n_torch = sum(p.numel() for p in tmodel.parameters())
    ln = tmodel.vision_model.pre_layrnorm
    assert np.abs(ln.weight.detach().numpy() - 1).min() > 0 and np.abs(ln.bias.detach().numpy()).min() > 0
    assert np.abs(tmodel.text_model.encoder.layers[0].self_attn.q_proj.bias.detach().numpy()).min() > 0
    model, params = load_clip(folder)
    assert count_params(params) == n_torch == 151_277_313
    rng = np.random.default_rng(0)
    ids = np.concatenate([[49406], rng.integers(300, 49000, size=10), [49407, 49407, 49407]])[None]
    mask = (np.arange(14) < 12).astype(np.int64)[None]
    pix = rng.normal(size=(1, 224, 224, 3)).astype(np.float32)
    tt, ti = torch_features(tmodel, ids, mask, pix)
    jt, ji = jax_features(model, params, ids, mask, pix)
    print(f"\nViT-B/32: |f|max text {np.abs(tt).max():.2f}, image {np.abs(ti).max():.2f}", end="")
    check_parity("ViT-B/32 text", jt, tt, TOL, B32_REGRESSION_TOL)
    check_parity("ViT-B/32 image", ji, ti, TOL, B32_REGRESSION_TOL)
