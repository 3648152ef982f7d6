"""Asyrp DeltaBlock: PyTorch-default init, conversion of official-format checkpoints, parity with a torch mirror
of the official module, save/load round trip, clear errors for mismatched checkpoints."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from checkpoints_convert.asyrp_editor import convert, main as convert_main
from jaxhspace.editing.editor_io import (
    editor_params_to_state_dict, load_editor, read_official_checkpoint, save_editor, state_dict_to_editor_params)
from jaxhspace.models.editor import DeltaBlock, EditorConfig, init_editor
from unet_fixtures import check_parity

C, TEMB = 64, 96
TOL, REGRESSION = 1e-4, 5e-6  # contract; regression bound ~8x the measured 6.0e-7 (printed)


class TorchDeltaBlock(torch.nn.Module):
    """Mirror of the official DDPM DeltaBlock (Asyrp_official models/ddpm/diffusion.py:228-263)."""

    def __init__(self, in_channels, temb_channels=512):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
        self.temb_proj = torch.nn.Linear(temb_channels, in_channels)
        self.norm2 = torch.nn.GroupNorm(num_groups=32, num_channels=in_channels, eps=1e-6, affine=True)
        self.dropout = torch.nn.Dropout(0.0)
        self.conv2 = torch.nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x, temb):
        h = self.conv1(x)
        h = h + self.temb_proj(torch.nn.functional.silu(temb))[:, :, None, None]
        h = self.norm2(h)
        h = torch.nn.functional.silu(h)
        h = self.dropout(h)
        return self.conv2(h)


def _torch_block(seed=0):
    torch.manual_seed(seed)
    m = TorchDeltaBlock(C, TEMB)
    with torch.no_grad():
        m.norm2.weight.add_(0.3 * torch.randn_like(m.norm2.weight))  # GN affine away from (1, 0)
        m.norm2.bias.add_(0.3 * torch.randn_like(m.norm2.bias))
    return m.eval()


def _official_pth(path, m):
    """Save like the official code: {'0': state_dict, 'optimizer': SGD state, 'scheduler': StepLR state}."""
    opt = torch.optim.SGD(m.parameters(), lr=0.5, momentum=0, weight_decay=0)
    sch = torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.9)
    torch.save({"0": m.state_dict(), "optimizer": opt.state_dict(), "scheduler": sch.state_dict()}, path)


def _inputs(seed=1, b=2, hw=8):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(b, hw, hw, C)).astype(np.float32), rng.normal(size=(b, TEMB)).astype(np.float32))


def _torch_dh(m, h, temb):
    with torch.no_grad():
        out = m(torch.from_numpy(h.transpose(0, 3, 1, 2).copy()), torch.from_numpy(temb))
    return out.numpy().transpose(0, 2, 3, 1)


def test_pytorch_default_init_nothing_zero():
    editor = DeltaBlock(EditorConfig(channels=C, temb_dim=TEMB))
    p = init_editor(editor, jax.random.PRNGKey(0))
    for name, fan_in in (("conv1", C), ("conv2", C), ("temb_proj", TEMB)):
        for leaf in ("kernel", "bias"):
            w = np.asarray(p[name][leaf])
            bound = 1 / np.sqrt(fan_in)
            assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound, (name, leaf)
            if w.size > 1000:  # U(±b) has std b/√3
                assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound
    assert p["conv1"]["kernel"].shape == (1, 1, C, C) and p["temb_proj"]["kernel"].shape == (TEMB, C)
    np.testing.assert_array_equal(np.asarray(p["norm2"]["scale"]), 1.0)
    np.testing.assert_array_equal(np.asarray(p["norm2"]["bias"]), 0.0)
    h, temb = _inputs()
    dh = np.asarray(editor.apply({"params": p}, jnp.asarray(h), jnp.asarray(temb)))
    assert dh.shape == h.shape and np.abs(dh).mean() > 1e-2  # not zero-initialised: Δh ≠ 0 at init
    # same init statistics as torch's defaults
    tw = TorchDeltaBlock(C, TEMB).conv1.weight.detach().numpy()
    assert abs(tw.std() - np.asarray(p["conv1"]["kernel"]).std()) < 0.05 / np.sqrt(C)


def test_convert_official_checkpoint_matches_torch(tmp_path):
    m = _torch_block()
    src = str(tmp_path / "human_face_smiling_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth")
    _official_pth(src, m)
    dst = str(tmp_path / "converted")
    convert_main([src, dst])  # the CLI entry point (argparse), in-process
    editor, params, meta = load_editor(dst)
    assert editor.config == EditorConfig(channels=C, temb_dim=TEMB, num_groups=32, eps=1e-6)
    assert meta["n_train_step"] == 40 and meta["n_inv_step"] == 40 and meta["lr"] == 0.5
    assert meta["step_size"] == 20 and abs(meta["gamma"] - 0.9) < 1e-12
    h, temb = _inputs()
    ours = np.asarray(jax.jit(lambda p, a, b: editor.apply({"params": p}, a, b))(params, h, temb))
    ref = _torch_dh(m, h, temb)
    print(f"\n|Δh| max {np.abs(ref).max():.2f}", end="")
    check_parity("DeltaBlock converted vs torch", ours, ref, TOL, REGRESSION)
    # the .pth loads directly too, with identical params
    e2, p2, _ = load_editor(src)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(p2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # our weights file is a torch-layout state dict with the official names: loads into the torch module
    from safetensors.torch import load_file

    m2 = TorchDeltaBlock(C, TEMB)
    m2.load_state_dict(load_file(os.path.join(dst, "editor.safetensors")))
    np.testing.assert_array_equal(_torch_dh(m2.eval(), h, temb), ref)


def test_save_load_roundtrip_exact(tmp_path):
    editor = DeltaBlock(EditorConfig(channels=C, temb_dim=TEMB))
    p = init_editor(editor, jax.random.PRNGKey(3))
    path = save_editor(str(tmp_path / "ed"), editor, p, meta={"n_train_step": 40, "src_text": "face"})
    e2, p2, meta = load_editor(path)
    assert e2.config == editor.config and meta == {"n_train_step": 40, "src_text": "face"}
    for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(p2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="already exists"):
        save_editor(path, editor, p)
    assert [f for f in os.listdir(tmp_path) if "tmp" in f] == []


def test_mismatched_checkpoints_raise_clear_errors(tmp_path):
    editor = DeltaBlock(EditorConfig(channels=C, temb_dim=TEMB))
    sd = {k: v.numpy() for k, v in _torch_block().state_dict().items()}
    bad = dict(sd)
    del bad["conv2.bias"]
    bad["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"(?s)missing keys.*conv2\.bias.*unexpected keys.*extra\.weight"):
        state_dict_to_editor_params(editor, bad)
    wrong = dict(sd, **{"temb_proj.weight": np.zeros((C, TEMB + 1), np.float32)})
    with pytest.raises(ValueError, match=r"shape mismatches.*temb_proj\.weight"):
        state_dict_to_editor_params(editor, wrong)
    adm = {"in_layers.0.weight": np.ones(C, np.float32), "in_layers.2.weight": np.zeros((C, C, 1, 1), np.float32)}
    with pytest.raises(ValueError, match="not supported"):
        state_dict_to_editor_params(editor, adm)
    # official-format file with a missing key / the wrong layer index
    m = _torch_block()
    sd_t = m.state_dict()
    del sd_t["norm2.bias"]
    src = str(tmp_path / "broken.pth")
    torch.save({"0": sd_t, "optimizer": {}, "scheduler": {}}, src)
    with pytest.raises(ValueError, match=r"missing keys.*norm2\.bias"):
        convert(src, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")
    with pytest.raises(ValueError, match="no editor layer '1'.*available layers: \\['0'\\]"):
        read_official_checkpoint(src, layer=1)
    with pytest.raises(ValueError, match="not an Asyrp editor|not found"):
        load_editor(str(tmp_path))
    # round trip of the torch-layout export
    p = state_dict_to_editor_params(editor, sd)
    back = editor_params_to_state_dict(p)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])
