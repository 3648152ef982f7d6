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
from tests.unet_fixtures import make_torch_unet, spy as _spy

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


def _numpy_delta_block(p, h, temb, groups):
    """Official Asyrp DeltaBlock (DDPM variant; Asyrp_official models/ddpm/diffusion.py): conv1 (1x1) -> +
    temb_proj(silu(temb)) -> GroupNorm(groups, eps 1e-6) -> silu -> conv2 (1x1), in float64 numpy. h [B,h,w,C]."""
    f = {k: {n: np.asarray(a, np.float64) for n, a in v.items()} for k, v in p.items()}
    silu = lambda z: z / (1 + np.exp(-z))  # noqa: E731
    x = h @ f["conv1"]["kernel"][0, 0] + f["conv1"]["bias"]
    x = x + (silu(temb) @ f["temb_proj"]["kernel"] + f["temb_proj"]["bias"])[:, None, None, :]
    b, hh, ww, c = x.shape
    g = x.reshape(b, hh * ww, groups, c // groups)
    g = (g - g.mean(axis=(1, 3), keepdims=True)) / np.sqrt(g.var(axis=(1, 3), keepdims=True) + 1e-6)
    x = silu(g.reshape(x.shape) * f["norm2"]["scale"] + f["norm2"]["bias"])
    return x @ f["conv2"]["kernel"][0, 0] + f["conv2"]["bias"]


def _torch_asyrp(unet, editor_params, groups, x, ts, t_edit, coeff, alphas):
    """The official Asyrp reverse process (η = 0 on these steps), float64 torch + the numpy DeltaBlock: at t >= t_edit
    x ← √ᾱ_prev·P_t(ε(x | h + coeff·Δh)) + √(1 − ᾱ_prev)·ε(x) with Δh = DeltaBlock(h, temb) of the unedited h
    (Asyrp eq. 7 / diffusion_latent.py), below t_edit plain DDIM; the last step to ᾱ = 1. x [N,H,W,C]."""
    import torch

    unet = unet.double()
    xt = torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x, np.float64), (0, 3, 1, 2))))
    for i, t in enumerate(ts):
        tt = torch.full((xt.shape[0],), int(t))
        with torch.no_grad():
            got = {}
            hk = unet.mid_block.register_forward_hook(lambda mod, a, o: got.setdefault("h", o))
            eps = unet(xt, tt).sample
            hk.remove()
            eps_edit = eps
            if t >= t_edit:
                temb = unet.time_embedding(unet.time_proj(tt).double()).numpy()
                dh = _numpy_delta_block(editor_params, got["h"].numpy().transpose(0, 2, 3, 1), temb, groups)
                add = torch.from_numpy(np.ascontiguousarray(coeff * dh.transpose(0, 3, 1, 2)))
                hk = unet.mid_block.register_forward_hook(lambda mod, a, o: o + add)
                eps_edit = unet(xt, tt).sample
                hk.remove()
        a_t, a_p = alphas[int(t)], (alphas[int(ts[i + 1])] if i + 1 < len(ts) else 1.0)
        xt = np.sqrt(a_p) * (xt - np.sqrt(1 - a_t) * eps_edit) / np.sqrt(a_t) + np.sqrt(1 - a_p) * eps
    unet.float()
    return xt.numpy().transpose(0, 2, 3, 1)


def test_edit_job_writes_grids(paths, run_a, monkeypatch):
    import jaxhspace.data.images as images_mod
    import jaxhspace.editing.asyrp_edit as ae

    calls = {}
    _spy(monkeypatch, ae, "invert", calls)
    _spy(monkeypatch, images_mod, "make_grid", calls)
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
    # values (issue #19): the grid's s = -1 / s = 1 columns against the official asymmetric reverse process
    # recomputed in float64 torch from the job's inverted x_T, with the editor's Δh from a numpy DeltaBlock and the
    # official coefficient n_train/n_test·s = 4/4·s (grid 999, 666 edited; 333, 0 plain; t_boost 200: the only
    # step below it, 0 -> -1, has σ = 0); the reported mean |edit - recon| recomputed from the grid
    from diffusers import DDIMScheduler
    from diffusers import UNet2DModel as TorchUNet

    grid = np.asarray(calls["make_grid"][-1][0][0])                      # [N, (input, recon, s=-1, s=1), H, W, C]
    x_lat = np.asarray(calls["invert"][0][2])
    _, eparams, meta = load_editor(os.path.join(wd_a, "editor"))
    unet = TorchUNet.from_pretrained(paths["unet"]).eval()
    alphas = DDIMScheduler().alphas_cumprod.double().numpy()
    ts = [999, 666, 333, 0]
    for j, s in ((1, None), (2, -1.0), (3, 1.0)):
        ref = _torch_asyrp(unet, eparams, 8, x_lat, ts, 500, 0.0 if s is None else meta["n_train_step"] / 4 * s,
                           alphas)
        err = np.abs(grid[:, j] - ref).max() / np.abs(ref).max()
        print(f"\n[asyrp edit job, column {j}] relative max error vs torch official {err:.1e}", end="")
        assert err < 1e-4, (j, err)
        if s is not None:
            assert np.abs(ref - grid[:, 1]).max() > 1e-3 * np.abs(ref).max(), "the edit must change the image"
            change = np.mean(np.abs(grid[:, j] - grid[:, 1]))
            np.testing.assert_allclose(cols[j - 1]["mean_abs_change_vs_recon"], change, rtol=1e-5)
