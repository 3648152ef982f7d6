"""CLIP preprocessing and the directional loss (tiny random Flax CLIP; no network, no weights)."""
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhspace.checkpoints.clip import load_clip_tokenizer, write_byte_level_clip_vocab
from jaxhspace.losses.clip_directional import (
    IMAGENET_TEMPLATES, asyrp_clip_loss, clip_directional_loss, directional_loss, encode_texts, image_features,
    text_direction)
from jaxhspace.losses.clip_preprocess import bicubic_resize, clip_preprocess, torch_bicubic_matrix
from jaxhspace.models.clip import CLIP_MEAN, CLIP_STD, CLIPConfig, CLIPModel, init_clip_params


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tok"))
    words = sorted({w for t in IMAGENET_TEMPLATES for w in re.findall(r"[a-z]+", t)} | {"smiling", "face", "old"})
    vocab = write_byte_level_clip_vocab(folder, words)
    tok = load_clip_tokenizer(folder)
    cfg = CLIPConfig.from_dict({
        "model_type": "clip", "projection_dim": 16,
        "text_config": dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=24, eos_token_id=vocab - 1),
        "vision_config": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, hidden_act="gelu"),
    })
    model = CLIPModel(cfg)
    params = init_clip_params(model, jax.random.PRNGKey(0))
    return model, params, tok


def _np_normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_directional(fe, fs, td):
    """The official formula (StyleGAN-NADA / Asyrp CL:170-180) in NumPy float64."""
    d = _np_normalize(fe) - _np_normalize(fs)
    d = d / (np.linalg.norm(d, axis=-1, keepdims=True) + 1e-7)
    td = np.broadcast_to(td, d.shape)
    cos = (d * td).sum(-1) / np.maximum(np.linalg.norm(d, axis=-1) * np.linalg.norm(td, axis=-1), 1e-8)
    return 1 - cos


def test_templates():
    assert len(IMAGENET_TEMPLATES) == 79 == len(set(IMAGENET_TEMPLATES))
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert "a photo of many {}." not in IMAGENET_TEMPLATES
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}." and IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."


def test_directional_loss_matches_numpy_and_vmaps():
    rng = np.random.default_rng(0)
    fe, fs = rng.normal(size=(5, 16)), rng.normal(size=(5, 16))
    td = _np_normalize(rng.normal(size=16))
    ref = _np_directional(fe, fs, td)
    got = directional_loss(jnp.asarray(fe, jnp.float32), jnp.asarray(fs, jnp.float32), jnp.asarray(td, jnp.float32))
    assert got.shape == (5,)
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-6)
    vm = jax.vmap(directional_loss, in_axes=(0, 0, None))(jnp.asarray(fe), jnp.asarray(fs), jnp.asarray(td))
    np.testing.assert_allclose(np.asarray(vm), ref, atol=1e-6)
    a = asyrp_clip_loss(jnp.asarray(fe), jnp.asarray(fs), jnp.asarray(td))
    np.testing.assert_allclose(np.asarray(a), -np.log((2 - ref) / 2), atol=1e-6)
    # identical features: finite loss and gradient (official code would give NaN gradients here)
    g = jax.grad(lambda f: directional_loss(f, f, jnp.asarray(td)).sum())(jnp.asarray(fe))
    assert np.isfinite(np.asarray(g)).all()


@pytest.mark.parametrize("in_hw", [(40, 40), (24, 30), (256, 256)])
def test_preprocess_matches_torch_bicubic(in_hw):
    torch = pytest.importorskip("torch")
    size = 224 if in_hw[0] == 256 else 32
    x = np.random.default_rng(1).uniform(-1, 1, size=(2, *in_hw, 3)).astype(np.float32)
    ours = np.asarray(clip_preprocess(jnp.asarray(x), size))
    # reference: the pinned torchvision pipeline on tensors = interpolate(bicubic, no antialias) + center crop
    # float64 reference: torch float32 computes source coordinates in float32 (~2e-5 off the exact kernel)
    t = (torch.as_tensor(x, dtype=torch.float64).permute(0, 3, 1, 2) + 1) / 2
    h, w = in_hw
    out_hw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    t = torch.nn.functional.interpolate(t, size=out_hw, mode="bicubic", align_corners=False)
    top, left = int(round((out_hw[0] - size) / 2)), int(round((out_hw[1] - size) / 2))
    t = t[:, :, top:top + size, left:left + size]
    t = (t - torch.tensor(CLIP_MEAN, dtype=torch.float64)[:, None, None]) / torch.tensor(
        CLIP_STD, dtype=torch.float64)[:, None, None]
    ref = t.permute(0, 2, 3, 1).numpy()
    assert ours.shape == (2, size, size, 3)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # jax.image.resize's bicubic (Keys a=-0.5, renormalised borders) is close but not identical
    jx = np.asarray(clip_preprocess(jnp.asarray(x), size, method="jax"))
    assert 1e-4 < np.abs(jx - ref).max() < 1.5


def test_resize_rows_sum_to_one():
    for i, o in [(256, 224), (7, 32), (32, 32)]:
        np.testing.assert_allclose(torch_bicubic_matrix(i, o).sum(1), 1.0, atol=1e-6)
    x = jnp.ones((1, 9, 9, 3))
    np.testing.assert_allclose(np.asarray(bicubic_resize(x, (5, 5))), 1.0, atol=1e-6)


def test_text_direction_matches_numpy(tiny):
    model, params, tok = tiny
    d = text_direction(model, params, tok, "face", "smiling face")
    assert d.shape == (16,)
    src = np.asarray(encode_texts(model, params, tok, [t.format("face") for t in IMAGENET_TEMPLATES]), np.float64)
    tgt = np.asarray(encode_texts(model, params, tok, [t.format("smiling face") for t in IMAGENET_TEMPLATES]),
                     np.float64)
    ref = _np_normalize((_np_normalize(tgt) - _np_normalize(src)).mean(0))
    np.testing.assert_allclose(np.asarray(d), ref, atol=1e-5)
    # features are per-prompt: batching/padding to a fixed length does not change them
    one = np.asarray(encode_texts(model, params, tok, [IMAGENET_TEMPLATES[3].format("face")]))
    np.testing.assert_allclose(one[0], src[3], atol=1e-5)
    raw = text_direction(model, params, tok, "face", "old face", templates=None)
    s, t = np.asarray(encode_texts(model, params, tok, ["face", "old face"]), np.float64)
    np.testing.assert_allclose(np.asarray(raw), _np_normalize(_np_normalize(t) - _np_normalize(s)), atol=1e-5)


def test_clip_directional_loss_gradient_fd(tiny):
    model, params, tok = tiny
    tdir = text_direction(model, params, tok, "face", "smiling face", templates=None)
    rng = np.random.default_rng(2)
    x_src = rng.uniform(-0.9, 0.9, size=(1, 40, 40, 3))
    x_edit = np.clip(np.repeat(x_src, 2, 0) + rng.normal(scale=0.2, size=(2, 40, 40, 3)), -1, 1)
    # value in float32 equals NumPy on the same features
    l32 = jax.jit(lambda a, b: clip_directional_loss(model, params, a, b, tdir))(
        jnp.asarray(x_edit, jnp.float32), jnp.asarray(x_src, jnp.float32))
    feats = jax.jit(lambda a: image_features(model, params, a))
    fe = np.asarray(feats(jnp.asarray(x_edit, jnp.float32)), np.float64)
    fs = np.asarray(feats(jnp.asarray(x_src, jnp.float32)), np.float64)
    np.testing.assert_allclose(np.asarray(l32), _np_directional(fe, fs, np.asarray(tdir, np.float64)), atol=1e-5)

    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        td64 = jnp.asarray(tdir, jnp.float64)
        xs = jnp.asarray(x_src, jnp.float64)

        def f(x):
            return clip_directional_loss(model, p64, x, xs, td64, asyrp_log=True).sum()

        x0 = jnp.asarray(x_edit, jnp.float64)
        g = jax.jit(jax.grad(f))(x0)
        f = jax.jit(f)
        assert g.dtype == jnp.float64 and np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0
        v = jnp.asarray(rng.normal(size=x_edit.shape))
        eps = 1e-4
        fd = (f(x0 + eps * v) - f(x0 - eps * v)) / (2 * eps)
        ad = jnp.vdot(g, v)
        assert abs(float(fd - ad)) <= 1e-6 * max(1.0, abs(float(ad))), (float(fd), float(ad))

    # float32 gradient is finite too (the path used in training)
    g32 = jax.jit(jax.grad(lambda x: clip_directional_loss(model, params, x, jnp.asarray(x_src, jnp.float32), tdir,
                                                           asyrp_log=True).sum()))(jnp.asarray(x_edit, jnp.float32))
    assert np.isfinite(np.asarray(g32)).all()


def test_bad_inputs(tiny):
    model, params, tok = tiny
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match=r"NHWC .*looks NCHW"):
        clip_preprocess(jnp.zeros((1, 3, 32, 32)), 32)
    with pytest.raises(ValueError, match="NHWC"):
        clip_preprocess(jnp.zeros((32, 32, 3)), 32)
    with pytest.raises(ValueError, match=r"NHWC \[batch, height, width, 3\]"):
        clip_preprocess(jnp.zeros((1, 32, 32, 4)), 32)
    with pytest.raises(ValueError, match=r"must be in \[-1, 1\]"):
        clip_preprocess(jnp.full((1, 32, 32, 3), 255.0), 32)
    with pytest.raises(ValueError, match=r"must be in \[-1, 1\]"):
        clip_directional_loss(model, params, x + 2.0, x, jnp.ones(16) / 4)
    with pytest.raises(ValueError, match="NaN"):
        clip_preprocess(jnp.full((1, 32, 32, 3), jnp.nan), 32)
    with pytest.warns(UserWarning, match="slightly exceed"):
        clip_preprocess(jnp.full((1, 32, 32, 3), 1.2), 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clip_preprocess(jnp.full((1, 32, 32, 3), 1.0), 32)
    with pytest.raises(ValueError, match="same H, W, C"):
        clip_directional_loss(model, params, x, jnp.zeros((1, 30, 32, 3)), jnp.ones(16) / 4)
    with pytest.raises(ValueError, match="resize method"):
        clip_preprocess(x, 32, method="lanczos")
    for src, tgt in [("", "smiling face"), ("face", "   "), (None, "face")]:
        with pytest.raises(ValueError, match="non-empty string"):
            text_direction(model, params, tok, src, tgt)
    with pytest.raises(ValueError, match="identical"):
        text_direction(model, params, tok, "face", "face")
    with pytest.raises(ValueError, match="placeholder"):
        text_direction(model, params, tok, "face", "old face", templates=["a photo"])
    with pytest.raises(ValueError, match="hidden_act='foo' is not supported"):
        CLIPConfig.from_dict({"text_config": {"hidden_act": "foo"}})
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads"):
        CLIPConfig.from_dict({"vision_config": {"hidden_size": 30, "num_attention_heads": 4}})
    with pytest.raises(ValueError, match="only square int sizes"):
        CLIPConfig.from_dict({"vision_config": {"image_size": [224, 192]}})
    with pytest.raises(ValueError, match="eos_token_id"):
        CLIPConfig.from_dict({"text_config": {"eos_token_id": [49407, 2]}})
    # range check is skipped under tracing: jit works
    f = jax.jit(lambda y: image_features(model, params, y))
    assert f(x).shape == (1, 16)
