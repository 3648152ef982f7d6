"""Checksums of what jaxhspace writes (issue #18, item 8): bytes flipped inside a safetensors tensor of an export,
or inside a converted folder's orbax params, used to load silently (eps off by up to 2.9); now the load fails naming
the file."""
import os

import pytest

from checkpoints_convert import diffusers_unet
from jaxhspace.checkpoints import load_unet
from jaxhspace.checkpoints.unet import save_unet_diffusers
from jaxhspace.errors import JaxhspaceError
from jaxhspace.training.safety import EXPORT_MARKER, export_folder
from tests.test_load_validation import folder  # noqa: F401  (module fixture: a tiny diffusers UNet folder)


def _flip_last_bytes(path, n=4):
    with open(path, "r+b") as f:
        f.seek(-n, os.SEEK_END)
        data = f.read(n)
        f.seek(-n, os.SEEK_END)
        f.write(bytes(b ^ 0x55 for b in data))


def test_export_with_flipped_tensor_bytes_is_rejected(folder, tmp_path):  # noqa: F811
    model, params = load_unet(folder)
    dst = export_folder(str(tmp_path / "export"), lambda p: save_unet_diffusers(p, model, params), job="test")
    load_unet(dst)  # intact: loads
    weights = os.path.join(dst, "diffusion_pytorch_model.safetensors")
    _flip_last_bytes(weights)  # inside the last tensor's data: safetensors itself cannot notice
    with pytest.raises(JaxhspaceError, match=r"diffusion_pytorch_model\.safetensors does not match the SHA-256"):
        load_unet(dst)


def test_converted_folder_with_flipped_param_bytes_is_rejected(folder, tmp_path):  # noqa: F811
    dst = str(tmp_path / "converted")
    diffusers_unet.convert(folder, dst)
    assert os.path.isfile(os.path.join(dst, EXPORT_MARKER))
    load_unet(dst)
    data = max((os.path.join(r, f) for r, _, fs in os.walk(os.path.join(dst, "params")) for f in fs),
               key=os.path.getsize)
    _flip_last_bytes(data)
    with pytest.raises(JaxhspaceError, match=r"does not match the SHA-256"):
        load_unet(dst)
