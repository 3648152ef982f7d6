"""Asyrp editor training on a tiny random UNet + tiny random CLIP (both saved to disk and loaded from config paths):
official grid / schedule, loss decrease on a fixed batch, bit-exact resume after an interruption, the edit job."""
import json
import os
import re

import jax
import numpy as np
import pytest

import configs.asyrp_edit as edit_cfg
import configs.asyrp_train as train_cfg
from jaxhspace.checkpoints.clip import write_byte_level_clip_vocab
from jaxhspace.editing.asyrp_train import epoch_order, lr_schedule, training_grid
from jaxhspace.editing.editor_io import load_editor
from jaxhspace.losses.clip_directional import IMAGENET_TEMPLATES
from jaxhspace.tasks import get_task
from tests.unet_fixtures import make_torch_unet

# no attention in the down/up blocks (faster compiles); the mid block, whose output is h, keeps its attention
UNET = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=[16, 32], layers_per_block=1,
            down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"],
            norm_num_groups=8, norm_eps=1e-6, attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False,
            freq_shift=1)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Random-init diffusers UNet and transformers CLIP (torch init is fast; no Flax init to compile), saved with
    save_pretrained, plus a byte-level CLIP tokenizer: loaded by the trainer through config.model_path / clip_path."""
    import torch
    import transformers

    root = tmp_path_factory.mktemp("asyrp_models")
    make_torch_unet(UNET, seed=0).save_pretrained(str(root / "unet"))
    words = sorted({w for t in IMAGENET_TEMPLATES for w in re.findall(r"[a-z]+", t)} | {"smiling", "face"})
    (root / "clip").mkdir()
    vocab = write_byte_level_clip_vocab(str(root / "clip"), words)
    text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                max_position_embeddings=24, projection_dim=16, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                pad_token_id=vocab - 1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=32,
                  patch_size=8, projection_dim=16)
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    transformers.CLIPModel(cfg).eval().save_pretrained(str(root / "clip"))
    return {"unet": str(root / "unet"), "clip": str(root / "clip"), "root": root}


def _config(paths, **kw):
    c = train_cfg.get_config()
    c.model_path, c.clip_path = paths["unet"], paths["clip"]
    # 1 SynthFaces image, grid asyrp_timesteps(4) = [0, 333, 666, 999] -> trained t >= 500: 999, 666 (2 steps per
    # batch); 3 epochs; StepLR every 2 epochs with gamma 0.5; official SGD with momentum 0, but lr 0.003: on a random
    # UNet P_t at t=999 amplifies Δh by 1/√ᾱ ≈ 158, and the released lr 0.5 overshoots.
    c.n_inv, c.n_train, c.n_train_img, c.n_epochs, c.lr = 4, 4, 1, 3, 0.003
    c.lr_step_size, c.lr_gamma, c.editor_num_groups, c.checkpoint_every = 2, 0.5, 8, 2
    for k, v in kw.items():
        setattr(c, k, v)
    return c


@pytest.fixture(scope="module")
def run_a(paths):
    wd = str(paths["root"] / "run_a")
    return wd, get_task("asyrp_train")(_config(paths), wd)


def test_official_grid_schedule_and_order():
    ts, tps = training_grid(40, 500)
    assert ts.tolist()[0] == 999 and ts.tolist()[-1] == 512 and ts.size == 20
    assert tps.tolist() == ts.tolist()[1:] + [-1]  # official seq_train_next: the last step goes to -1
    sched = lr_schedule(0.5, steps_per_epoch=7, step_size=20, gamma=0.9)  # released CelebA: StepLR(20, 0.9)
    assert [float(sched(s)) for s in (0, 139, 140, 279, 280)] == pytest.approx([0.5, 0.5, 0.45, 0.45, 0.405])
    np.testing.assert_array_equal(epoch_order(0, 3, 5, False), np.arange(5))
    np.testing.assert_array_equal(epoch_order(0, 3, 50, True), epoch_order(0, 3, 50, True))
    assert not np.array_equal(epoch_order(0, 3, 50, True), epoch_order(0, 4, 50, True))


def test_training_decreases_loss_on_fixed_batch(run_a):
    wd, m = run_a
    assert m["train_timesteps"] == [999, 666] and m["steps_done"] == m["total_steps"] == 6 and m["cos_src_tgt"] > 0
    loss, clip, l1 = (np.asarray(m[k]) for k in ("loss", "clip", "l1"))
    # steps 0, 2, 4 all start from the same inverted latent at t = 999: the same (fixed) batch, successive params
    print(f"\n[asyrp train, fixed batch @ t=999] loss {loss[0]:.4f} -> {loss[2]:.4f} -> {loss[4]:.4f} "
          f"(clip {clip[0]:.4f} -> {clip[4]:.4f}, l1 {l1[0]:.4f} -> {l1[4]:.4f})", end="")
    assert np.all(np.isfinite(loss)) and loss[4] < loss[2] < loss[0]
    log = [json.loads(line) for line in open(os.path.join(wd, "train_log.jsonl"))]
    assert [r["lr"] for r in log] == pytest.approx([0.003] * 4 + [0.0015] * 2)  # StepLR per epoch
    assert [r["t"] for r in log] == [999, 666] * 3
    editor, params, meta = load_editor(os.path.join(wd, "editor"))
    assert meta["n_train_step"] == 4 and meta["t_edit"] == 500 and editor.config.channels == 32


def test_interrupted_and_resumed_run_is_bit_identical(paths, run_a):
    wd_a, m_a = run_a
    wd = str(paths["root"] / "run_b")
    m1 = get_task("asyrp_train")(_config(paths, max_steps=3), wd)  # stops mid-batch (after t=999 of epoch 1)
    assert m1["stopped_early"] and m1["steps_done"] == 3 and "editor" not in m1
    m2 = get_task("asyrp_train")(_config(paths), wd)  # same command again: resumes from the orbax checkpoint
    assert m2["steps_done"] == 6 and not m2["stopped_early"]
    _, pa, _ = load_editor(os.path.join(wd_a, "editor"))
    _, pb, _ = load_editor(os.path.join(wd, "editor"))
    leaves_a, leaves_b = jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)
    assert len(leaves_a) == len(leaves_b) == 8
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(leaves_a, leaves_b))
    assert m2["loss"] == m_a["loss"] and m2["l1"] == m_a["l1"]  # all 6 per-step losses, bit for bit


def test_edit_job_writes_grids(paths, run_a):
    wd_a, _ = run_a
    c = edit_cfg.get_config()
    c.model_path, c.editor_paths = paths["unet"], (os.path.join(wd_a, "editor"),)
    c.n_inv, c.n_test, c.num_images, c.scales, c.upscale = 4, 4, 2, (-1.0, 1.0), 1
    c.global_dh_images = 0  # the global-Δh path costs two more compiles; its pieces are tested in test_asyrp_edit.py
    wd = str(paths["root"] / "edit")
    m = get_task("asyrp_edit")(c, wd)
    assert m["t_edit"] == 500 and m["t_boost"] == 200 and set(m["grids"]) == {"edit_0"}
    assert all(os.path.isfile(p) for p in m["grids"].values())
    cols = m["columns"]["edit_0"]
    assert [c["column"] for c in cols[:3]] == ["recon", "s=-1", "s=1"] and cols[0]["mean_abs_change_vs_recon"] == 0
    assert cols[1]["mean_abs_change_vs_recon"] > 0 and os.path.isfile(os.path.join(wd, "metrics.json"))
