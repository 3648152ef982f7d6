"""Weights of the wrong kind are rejected at load, naming the tensor (issue #18, item 6): integer weights used to
load as int32 (a sample job then returned rc 0 with pixel std 159) and NaN weights failed much later."""
import os

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxhspace.checkpoints import load_unet
from jaxhspace.checkpoints.unet import save_unet_converted
from jaxhspace.errors import JaxhspaceError
from tests.test_convert_scheduler import TINY
from tests.unet_fixtures import make_torch_unet

KEY = "down_blocks.0.resnets.0.conv1.weight"
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("unet"))
    make_torch_unet(TINY).save_pretrained(path)
    return path


def _edited_copy(folder, dst, edit):
    os.makedirs(dst)
    with open(os.path.join(folder, "config.json")) as f, open(os.path.join(dst, "config.json"), "w") as g:
        g.write(f.read())
    sd = load_file(os.path.join(folder, WEIGHTS))
    sd[KEY] = edit(sd[KEY])
    save_file(sd, os.path.join(dst, WEIGHTS))
    return dst


@pytest.mark.parametrize("name, edit, message", [
    ("int32", lambda w: (w * 1000).astype(np.int32), "dtype int32, not floating point"),
    ("nan", lambda w: np.where(np.arange(w.size).reshape(w.shape) < 3, np.nan, w).astype(w.dtype),
     "3 of .* values are NaN/Inf"),
    ("inf", lambda w: np.full_like(w, np.inf), "576 of 576 values are NaN/Inf"),
])
def test_bad_weights_are_rejected_naming_the_tensor(folder, tmp_path, name, edit, message):
    bad = _edited_copy(folder, str(tmp_path / name), edit)
    with pytest.raises(JaxhspaceError, match=rf"{KEY}: {message}"):
        load_unet(bad)


def test_converted_folder_with_nan_is_rejected(folder, tmp_path):
    model, params = load_unet(folder)
    params = jax.tree_util.tree_map(np.asarray, params)
    params["down_blocks_0"]["resnets_0"]["conv1"]["kernel"] = np.full_like(
        params["down_blocks_0"]["resnets_0"]["conv1"]["kernel"], np.nan)
    dst = str(tmp_path / "converted")
    save_unet_converted(dst, model, params)
    with pytest.raises(JaxhspaceError, match=r"down_blocks_0/resnets_0/conv1/kernel: .* NaN/Inf"):
        load_unet(dst)


def test_healthy_weights_still_load(folder):
    model, params = load_unet(folder)
    assert all(np.issubdtype(np.asarray(x).dtype, np.floating) for x in jax.tree_util.tree_leaves(params))
