"""The shipped SynthFaces CLIP (assets/clip_synthfaces): loads with our loader and with transformers (same
features, same token ids), zero-shot smile accuracy; the trainer: tokenizer round trip, caption
consistency targets, and exact resume (2 + 2 steps == 4 steps)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.clip_synthfaces import get_config
from jaxhspace.checkpoints.clip import load_clip, load_clip_tokenizer
from jaxhspace.data import synthfaces as sf
from jaxhspace.tasks import clip_train_job as clip_train
from jaxhspace.training import clip_synthfaces as cs
from jaxhspace.training.checkpointing import Checkpointer

ASSET = os.path.join(os.path.dirname(__file__), "..", "assets", "clip_synthfaces")
HELD_OUT_SEED = 20240917  # not a training seed (training batches use (seed, step) tuples)
PROMPTS = ["a smiling face", "a frowning face with glasses", "a face with red hair",
           "a photo of a Smiling face with blue hair, big eyes and glasses on a gray background."]

needs_asset = pytest.mark.skipif(not os.path.isfile(os.path.join(ASSET, "model.safetensors")),
                                 reason="assets/clip_synthfaces not trained yet")


@pytest.fixture(scope="module")
def shipped():
    model, params = load_clip(ASSET)
    return model, params, load_clip_tokenizer(ASSET)


@needs_asset
def test_shipped_zero_shot_smile(shipped):
    model, params, tok = shipped
    tc = model.config.text_config
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (tc.bos_token_id, tc.eos_token_id,
                                                                      tc.pad_token_id)
    assert tc.vocab_size == len(tok.get_vocab())
    images, factors = sf.generate(HELD_OUT_SEED, 512)
    acc = cs.zero_shot_accuracy(model, params, tok, images, factors)
    print({k: v for k, v in acc.items() if not k.endswith("_n")})
    assert acc["smile_binary_n"] > 200 and acc["smile_binary"] >= 0.8
    assert os.path.getsize(os.path.join(ASSET, "model.safetensors")) < 10e6


@needs_asset
def test_shipped_transformers_parity(shipped):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model, params, _ = shipped
    tmodel = transformers.CLIPModel.from_pretrained(ASSET, local_files_only=True).eval()
    ttok = transformers.CLIPTokenizer.from_pretrained(ASSET, local_files_only=True)
    L = model.config.text_config.max_position_embeddings
    enc = ttok(PROMPTS, padding="max_length", max_length=L, truncation=True, return_tensors="np")
    ours = load_clip_tokenizer(ASSET)(PROMPTS, padding="max_length", max_length=L, truncation=True,
                                      return_tensors="np")
    np.testing.assert_array_equal(enc["input_ids"], ours["input_ids"])
    assert ttok.decode(enc["input_ids"][0], skip_special_tokens=True) == "a smiling face"
    assert len(ttok("glasses")["input_ids"]) == 3  # <bos> glasses</w> <eos>: caption words are single tokens
    images, _ = sf.generate(HELD_OUT_SEED, 8)
    from jaxhspace.losses.clip_preprocess import clip_preprocess
    pix = np.array(clip_preprocess(jnp.asarray(images), model.config.vision_config.image_size))  # writable
    with torch.no_grad():
        tt = tmodel.get_text_features(input_ids=torch.as_tensor(enc["input_ids"], dtype=torch.long),
                                      attention_mask=torch.as_tensor(enc["attention_mask"]))
        ti = tmodel.get_image_features(pixel_values=torch.as_tensor(pix.transpose(0, 3, 1, 2)))
    tt, ti = getattr(tt, "pooler_output", tt).numpy(), getattr(ti, "pooler_output", ti).numpy()
    jt = model.apply({"params": params}, jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]),
                     method=model.get_text_features)
    ji = model.apply({"params": params}, jnp.asarray(pix), method=model.get_image_features)
    assert np.abs(tt).max() > 0.1 and np.abs(ti).max() > 0.1
    assert np.abs(np.asarray(jt) - tt).max() <= 1e-4
    assert np.abs(np.asarray(ji) - ti).max() <= 1e-4


def test_twin_captions_and_targets():
    base = sf.sample_factors(0, 16)
    twins, changed = cs.twin_factors(np.random.default_rng(1), base)
    f = {k: np.concatenate([base[k], twins[k]]) for k in base}
    attrs = cs.image_attributes(f)
    diff = attrs[:16] != attrs[16:]
    assert np.all(diff[np.arange(16), changed]) and diff.sum() == 16  # exactly the changed attribute moved
    texts, mentioned = cs.augmented_captions(np.random.default_rng(0), f, twin_changed=changed)
    assert len(texts) == 32 and mentioned.shape == (32, 5)
    t = cs.consistency(mentioned, attrs)
    np.testing.assert_array_equal(np.diag(t), 1.0)  # each face's own caption is a positive
    eyes_from_medium = (changed == 2) & (attrs[:16, 2] == 1)  # "medium eyes" cannot be said
    assert np.all(t[np.arange(16), np.arange(16) + 16][~eyes_from_medium] == 0)  # ... its twin's is not
    loss = cs.clip_loss(jnp.asarray(10.0 * (t - 0.5)), jnp.asarray(t))
    assert np.isfinite(float(loss))


def tiny_config():
    c = get_config()
    c.clip.context_length = 24
    c.clip.projection_dim = 8
    c.clip.text.update(hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)
    c.clip.vision.update(hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                         patch_size=16)
    c.batch_size = 8
    c.total_steps = 4
    c.warmup_steps = 2
    c.checkpoint_every = 100
    c.log_every = 1
    c.eval_every = 0
    c.export_dir = ""
    return c


def _restore(workdir, template):
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), every=1)
    state = ckpt.restore_or(template)
    ckpt.close()
    return state


def test_train_resume_is_exact(tmp_path):
    c = tiny_config()
    full = clip_train.run(c, str(tmp_path / "full"))
    assert full["steps_done"] == 4 and np.isfinite(full["final_loss"])
    c.stop_at_step = 2
    first = clip_train.run(c, str(tmp_path / "split"))
    assert first["steps_done"] == 2 and first["stopped_early"]
    c.stop_at_step = 0
    second = clip_train.run(c, str(tmp_path / "split"))
    assert second["steps_done"] == 4
    assert c.log_every == 1  # so final_loss covers the first run's steps too (read back from the log)
    assert second["final_loss"] == pytest.approx(full["final_loss"])
    _, _, _, fresh, _ = clip_train.setup(c, str(tmp_path / "tok"))
    a, b = _restore(str(tmp_path / "full"), fresh), _restore(str(tmp_path / "split"), fresh)
    assert int(a.step) == int(b.step) == 4
    for x, y in zip(jax.tree.leaves((a.params, a.opt_state)), jax.tree.leaves((b.params, b.opt_state))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert any(not np.array_equal(np.asarray(x), np.asarray(y))  # the run really changed the params
               for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(fresh.params)))
