"""Issue #18, remaining items: domain checks at the sampler / editing entry points (timesteps outside
[0, num_train_timesteps), NaN / inf in x_T / x0, images in 0..255 instead of [-1, 1]) raised before any model call
and skipped under jit; 16-bit PNGs; ``python -m jaxhspace.main`` with a missing / broken config file (one line,
exit 2); a full disk during an export (nothing half-written, a clear message); wrong ``delta`` types of
``asyrp_edit``; ``decode`` with mismatched skips; the editor job never deleting what jaxhspace did not write.

References are independent of the code under test: closed forms (x / 65535 * 2 - 1 for a hand-written 16-bit PNG,
Pillow's high byte for 16-bit RGB), the shapes that ``encode`` itself returns, byte comparisons of files, and
call counters proving that no model evaluation happened before the error.
"""
import errno
import os
import re
import struct
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhspace.errors import JaxhspaceError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
class CountingEps:
    """``eps_fn`` that counts its (trace-time) calls; ε = 0.1 x."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        return 0.1 * x


@pytest.fixture(scope="module")
def schedule():
    from jaxhspace.diffusion.schedule import make_schedule

    return make_schedule()


@pytest.fixture(scope="module")
def tiny_unet():
    from jaxhspace.models.unet import UNet2DModel, UNetConfig

    cfg = UNetConfig(sample_size=8, block_out_channels=(8, 16), layers_per_block=1,
                     down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                     norm_num_groups=4, attention_head_dim=None)
    m = UNet2DModel(cfg)
    # shapes only (no XLA compile): every check under test fails before the model computes anything
    shapes = jax.eval_shape(m.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,), jnp.int32))
    p = jax.tree_util.tree_map(lambda s: jnp.full(s.shape, 0.01, s.dtype), shapes["params"])
    return m, p


def _images(b=2, size=8, seed=0):
    return jax.random.uniform(jax.random.PRNGKey(seed), (b, size, size, 3), minval=-1.0, maxval=1.0)


# ----------------------------------------------------------------------------------------------
# 1. sampler / inversion entry checks
# ----------------------------------------------------------------------------------------------
TIMESTEP_CASES = [
    ("sample t=1000", "sample", [1000, 500]),
    ("sample t=1e6", "sample", [1e6, 10]),
    ("sample t=-1", "sample", [500, -1]),
    ("sample t=nan", "sample", [float("nan"), 3.0]),
    ("invert t=1000", "invert", [0, 1000]),
    ("invert t=inf", "invert", [0, float("inf")]),
]


@pytest.mark.parametrize("kind, ts", [c[1:] for c in TIMESTEP_CASES], ids=[c[0] for c in TIMESTEP_CASES])
def test_timesteps_out_of_domain(schedule, kind, ts):
    from jaxhspace.diffusion.ddim import ddim_invert, ddim_sample

    f = CountingEps()
    with pytest.raises(JaxhspaceError, match=r"timesteps must be integers in \[0, 1000\).*num_train_timesteps = 1000"):
        (ddim_sample if kind == "sample" else ddim_invert)(f, _images(), ts, schedule)
    assert f.calls == 0  # refused before any model evaluation


@pytest.mark.parametrize("kind, bad", [("sample", np.nan), ("sample", np.inf), ("invert", -np.inf)])
def test_nonfinite_inputs(schedule, kind, bad):
    from jaxhspace.diffusion.ddim import ddim_invert, ddim_sample

    x = _images().at[1, 2, 3, 0].set(bad)
    f = CountingEps()
    name = "x_T" if kind == "sample" else "x0"
    with pytest.raises(JaxhspaceError, match=rf"{name} contains NaN or inf \(1 of 384 values\)"):
        if kind == "sample":
            ddim_sample(f, x, [500, 200], schedule)
        else:
            ddim_invert(f, x, [0, 500], schedule)
    assert f.calls == 0


def test_images_in_0_255(schedule, tiny_unet):
    from jaxhspace.diffusion.ddim import ddim_invert
    from jaxhspace.editing import asyrp_edit as ae

    x255 = jnp.round((_images() + 1.0) * 127.5)
    f = CountingEps()
    with pytest.raises(JaxhspaceError,
                       match=r"x0 has values in \[.*\]: it looks like 0\.\.255 pixel values.*x / 127\.5 - 1"):
        ddim_invert(f, x255, [0, 500], schedule)
    assert f.calls == 0
    m, p = tiny_unet
    with pytest.raises(JaxhspaceError, match=r"x0 has values .* 0\.\.255"):
        ae.asyrp_edit(m, p, schedule, x255, n_inv=3, n_test=3)
    # [-1, 1] images and latents (zero-mean, larger than 1) pass the same check
    for ok in (_images(), 4.0 * jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))):
        out = ddim_invert(f, ok, [0, 500], schedule)
        np.testing.assert_allclose(np.asarray(out), np.asarray(ok) * _invert_gain(schedule, 0, 500), rtol=1e-5)


@pytest.mark.parametrize("kind, pipeline", [("ddpm", None), ("ve", None), ("ddpm", "latent")],
                         ids=["pixel", "ve", "latent"])
def test_world_to_x_rejects_0_255_and_nan(kind, pipeline):
    """Every world (pixel, VE, latent: the VAE is never reached) checks the images before mapping them to x."""
    from jaxhspace.tasks.inputs import World

    w = World(None, None, None, "", 8, pipeline=object() if pipeline else None, kind=kind)
    with pytest.raises(JaxhspaceError, match=r"images has values in \[0, 255\]: it looks like 0\.\.255"):
        w.to_x(np.concatenate([np.zeros((1, 8, 8, 3)), np.full((1, 8, 8, 3), 255.0)]))
    bad = np.array(_images(1))
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(JaxhspaceError, match=r"images contains NaN or inf \(1 of 192 values\)"):
        w.to_x(bad)


def _invert_gain(schedule, t, t_next):
    """Closed form of one inversion step with ε = 0.1 x: x' = (√ā'(1 - 0.1√(1-ā)) / √ā + 0.1√(1-ā')) x."""
    a, an = (float(schedule.alphas_cumprod[k]) for k in (t, t_next))
    return np.sqrt(an) * (1 - 0.1 * np.sqrt(1 - a)) / np.sqrt(a) + 0.1 * np.sqrt(1 - an)


def test_checks_are_host_side_and_skipped_under_jit(schedule):
    """Inside a caller's jit the input is traced: no check, no device->host transfer, same result."""
    from jaxhspace.diffusion.ddim import ddim_sample

    f = CountingEps()
    x = jax.device_put(_images())
    ref = ddim_sample(f, x, [700, 300], schedule)
    run = jax.jit(lambda x: ddim_sample(f, x, [700, 300], schedule))
    with jax.transfer_guard_device_to_host("disallow"):
        out = run(x)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
    # a concrete x closed over inside a caller's jit is checked once, while tracing
    closed = jax.jit(lambda s: s * ddim_sample(f, x, [700, 300], schedule))
    np.testing.assert_array_equal(np.asarray(closed(1.0)), np.asarray(ref))
    bad = x.at[0, 0, 0, 0].set(np.nan)
    with pytest.raises(JaxhspaceError, match=r"x_T contains NaN or inf"):
        jax.jit(lambda s: s * ddim_sample(f, bad, [700, 300], schedule))(1.0)


# ----------------------------------------------------------------------------------------------
# 2. asyrp_edit delta types
# ----------------------------------------------------------------------------------------------
DELTA_CASES = [
    ("tuple", lambda e, p: (e, p),
     r"delta is a tuple of 2 items, not a Δh source.*EditorDelta\(params=params, module"),
    ("list", lambda e, p: [p], r"delta is a list of 1 items"),
    ("array", lambda e, p: np.zeros((2, 2, 16), np.float32), r"delta is an array of shape \(2, 2, 16\).*ConstantDelta"),
    ("function", lambda e, p: (lambda h, temb, t: h), r"delta of type function has non-array leaves \(function\)"),
    ("string", lambda e, p: "smile", r"delta of type str is not a Δh source"),
]


@pytest.mark.parametrize("make, pattern", [c[1:] for c in DELTA_CASES], ids=[c[0] for c in DELTA_CASES])
def test_asyrp_edit_wrong_delta_type(schedule, tiny_unet, monkeypatch, make, pattern):
    from jaxhspace.editing import asyrp_edit as ae
    from jaxhspace.models.editor import DeltaBlock, EditorConfig, init_editor

    m, p = tiny_unet
    editor = DeltaBlock(EditorConfig(channels=16, temb_dim=m.config.time_embed_dim, num_groups=4))
    eparams = init_editor(editor, jax.random.PRNGKey(0))

    def no_inversion(*a, **k):
        raise AssertionError("the images were inverted before the delta was checked")

    monkeypatch.setattr(ae, "invert", no_inversion)
    with pytest.raises(JaxhspaceError, match=pattern):
        ae.asyrp_edit(m, p, schedule, _images(), delta=make(editor, eparams), n_inv=3, n_test=3)
    with pytest.raises(JaxhspaceError, match=pattern):
        ae.collect_delta_h(m, p, schedule, make(editor, eparams), _images(), n_test=3)


@pytest.mark.parametrize("kw", [dict(t_edit=1e6), dict(t_edit=-1), dict(t_boost=float("nan")), dict(t_edit="500")],
                         ids=["t_edit=1e6", "t_edit=-1", "t_boost=nan", "t_edit='500'"])
def test_asyrp_edit_times_out_of_domain(schedule, tiny_unet, monkeypatch, kw):
    from jaxhspace.editing import asyrp_edit as ae

    m, p = tiny_unet
    monkeypatch.setattr(ae, "invert", lambda *a, **k: (_ for _ in ()).throw(AssertionError("inverted")))
    name = next(iter(kw))
    with pytest.raises(JaxhspaceError, match=rf"{name} must be a timestep in \[0, 1000\]"):
        ae.asyrp_edit(m, p, schedule, _images(), n_inv=3, n_test=3, **kw)


# ----------------------------------------------------------------------------------------------
# 3. decode with mismatched skips
# ----------------------------------------------------------------------------------------------
def test_decode_mismatched_skips(tiny_unet):
    """Shapes via ``jax.eval_shape`` (trace only): the expected shapes are what ``encode`` itself returns."""
    m, p = tiny_unet

    def enc(b, hh, ww):
        x = jax.ShapeDtypeStruct((b, hh, ww, 3), jnp.float32)
        return jax.eval_shape(lambda x: m.apply({"params": p}, x, jnp.full((b,), 10, jnp.int32), method=m.encode), x)

    def dec(h, skips, temb):
        return jax.eval_shape(lambda h, s, t: m.apply({"params": p}, h, s, t, method=m.decode), h, skips, temb)

    h8, s8, t8 = enc(1, 8, 8)
    h16, s16, t16 = enc(2, 16, 8)  # non-square, batch 2: the check must accept encode's own output
    assert dec(h16, s16, t16).shape == (2, 16, 8, 3)
    assert dec(h8, s8, t8).shape == (1, 8, 8, 3)
    bad = (s8[0], s16[1]) + tuple(s8[2:])  # skips[1] from the other image size / batch
    with pytest.raises(ValueError, match=rf"skips\[1\]: expected {tuple(s8[1].shape)}, got {tuple(s16[1].shape)}"
                       .replace("(", r"\(").replace(")", r"\)")):
        dec(h8, bad, t8)
    with pytest.raises(ValueError, match=r"skip shapes do not match h of shape \(2, 8, 4, 16\) \(an image of 16x8\): "
                                         r"skips\[0\]: expected \(2, 16, 8, 8\), got \(1, 8, 8, 8\)"):
        dec(h16, s8, t16)
    with pytest.raises(ValueError, match=r"decode: temb must be \[B, time_embed_dim\] = \(2, 32\)"):
        dec(h16, s16, jax.ShapeDtypeStruct((2, 8), jnp.float32))


# ----------------------------------------------------------------------------------------------
# 4. 16-bit PNGs
# ----------------------------------------------------------------------------------------------
def _write_png16(path, arr):
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB): uint16 [H,W] grey or [H,W,3] RGB."""
    arr = np.asarray(arr, np.uint16)
    ctype = 0 if arr.ndim == 2 else 2
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16bit_png(tmp_path):
    from PIL import Image

    from jaxhspace.data.images import load_images

    rs = np.random.RandomState(0)
    grey = (rs.rand(8, 8) * 65535).astype(np.uint16)
    rgb = (rs.rand(8, 8, 3) * 65535).astype(np.uint16)
    _write_png16(tmp_path / "grey16.png", grey)
    _write_png16(tmp_path / "rgb16.png", rgb)
    x = load_images([str(tmp_path / "grey16.png"), str(tmp_path / "rgb16.png")], 8)
    ref_grey = grey.astype(np.float64) / 65535.0 * 2.0 - 1.0
    np.testing.assert_allclose(x[0], np.repeat(ref_grey[..., None], 3, -1), atol=1e-6)
    np.testing.assert_allclose(x[1], (rgb >> 8).astype(np.float64) / 127.5 - 1.0, atol=1e-6)
    # 8-bit grey v and 16-bit grey 257 v read the same
    v = rs.randint(0, 256, (8, 8)).astype(np.uint8)
    Image.fromarray(v).save(tmp_path / "grey8.png")
    _write_png16(tmp_path / "grey16b.png", v.astype(np.uint16) * 257)
    a, b = load_images([str(tmp_path / "grey8.png"), str(tmp_path / "grey16b.png")], 4)  # resized too
    np.testing.assert_allclose(a, b, atol=1.0 / 127.5)
    Image.fromarray(rs.rand(8, 8).astype(np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(JaxhspaceError, match=r"float\.tiff holds 32-bit floats"):
        load_images([str(tmp_path / "float.tiff")], 8)


# ----------------------------------------------------------------------------------------------
# 5. the command line: a missing or broken config file
# ----------------------------------------------------------------------------------------------
def test_main_config_file_errors(tmp_path):
    (tmp_path / "syntax.py").write_text("def get_config(:\n")
    (tmp_path / "noget.py").write_text("x = 1\n")
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    cases = [(["--config", "nonexistent.py"], r"--config 'nonexistent.py' is neither a config file"),
             (["--config", str(tmp_path / "syntax.py")], r"syntax\.py, line 1: syntax error"),
             (["--config", str(tmp_path / "noget.py")], r"defines no get_config\(\)"),
             (["--config", os.path.join(REPO, "configs", "sample.py"), "--config.num_sample=3"],
              r"unknown config field in --config\.num_sample: 'num_sample' Did you mean \"num_samples\"")]
    for args, pattern in cases:
        r = subprocess.run([sys.executable, "-m", "jaxhspace.main", *args, "--workdir", str(tmp_path / "wd")],
                           cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (args, r.stderr[-3000:])
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("jaxhspace: error: "), (args, r.stderr[-3000:])
        assert re.search(pattern, lines[0]), (pattern, lines[0][:300])
    assert not (tmp_path / "wd").exists()


# ----------------------------------------------------------------------------------------------
# 6. a full disk during an export
# ----------------------------------------------------------------------------------------------
def _enospc_after_partial_write(path, *a, **k):
    with open(path, "wb") as f:
        f.write(b"\x00" * 1000)  # half-written, then the disk is full
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _snapshot(folder):
    return {os.path.relpath(os.path.join(r, f), folder): open(os.path.join(r, f), "rb").read()
            for r, _, fs in os.walk(folder) for f in fs}


def test_full_disk_editor_export(tmp_path, monkeypatch):
    from jaxhspace.editing import editor_io
    from jaxhspace.models.editor import DeltaBlock, EditorConfig, init_editor

    editor = DeltaBlock(EditorConfig(channels=16, temb_dim=32, num_groups=4))
    p = init_editor(editor, jax.random.PRNGKey(0))
    old = editor_io.save_editor(str(tmp_path / "ed"), editor, p, meta={"n_train_step": 4})
    before = _snapshot(old)
    monkeypatch.setattr(editor_io, "save_state_dict_safetensors", _enospc_after_partial_write)
    for dst in ("ed", "new"):
        with pytest.raises(JaxhspaceError, match=rf"no space left on the device while writing .*{dst} .*nothing was "
                                                 r"written there.*Free some space"):
            editor_io.save_editor(str(tmp_path / dst), editor, jax.tree_util.tree_map(lambda a: a + 1, p),
                                  overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["ed"]  # no temporaries, no half-written "new"
    assert _snapshot(old) == before  # the earlier export is intact and still loads
    monkeypatch.undo()
    _, p2, _ = editor_io.load_editor(old)
    for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(p2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_full_disk_atomic_directory_and_png(tmp_path, monkeypatch):
    from PIL import Image

    from jaxhspace.checkpoints.common import atomic_directory
    from jaxhspace.data.images import save_png

    with pytest.raises(JaxhspaceError, match=r"no space left on the device while writing .*conv"):
        with atomic_directory(str(tmp_path / "conv")) as tmp:
            _enospc_after_partial_write(os.path.join(tmp, "weights.safetensors"))
    assert os.listdir(tmp_path) == []

    def full_save(self, fp, *a, **k):
        _enospc_after_partial_write(fp)

    monkeypatch.setattr(Image.Image, "save", full_save)
    with pytest.raises(JaxhspaceError, match=r"no space left on the device while writing .*grid\.png"):
        save_png(str(tmp_path / "grid.png"), np.zeros((4, 4, 3), np.uint8))
    assert os.listdir(tmp_path) == []
    # other OSErrors keep their type (unexpected, with a traceback)
    with pytest.raises(PermissionError):
        with atomic_directory(str(tmp_path / "conv")):
            raise PermissionError(errno.EACCES, "denied")


# ----------------------------------------------------------------------------------------------
# 7. the editor job never deletes what jaxhspace did not write
# ----------------------------------------------------------------------------------------------
def test_save_editor_overwrite_only_replaces_own_folders(tmp_path):
    from jaxhspace.editing.editor_io import WEIGHTS, load_editor, save_editor
    from jaxhspace.models.editor import DeltaBlock, EditorConfig, init_editor
    from jaxhspace.training.safety import EXPORT_MARKER

    editor = DeltaBlock(EditorConfig(channels=16, temb_dim=32, num_groups=4))
    p = init_editor(editor, jax.random.PRNGKey(0))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(JaxhspaceError, match=r"cannot save the editor to .*mine: it exists and holds what jaxhspace "
                                             r"did not write"):
        save_editor(str(mine), editor, p, overwrite=True)
    assert (mine / "notes.txt").read_text() == "my notes"

    ours = save_editor(str(tmp_path / "ours"), editor, p)
    assert sorted(os.listdir(ours)) == sorted([EXPORT_MARKER, "config.json", WEIGHTS])
    (tmp_path / "ours" / "extra.txt").write_text("user file")
    with pytest.raises(JaxhspaceError, match=r"extra\.txt"):
        save_editor(ours, editor, p, overwrite=True)
    assert (tmp_path / "ours" / "extra.txt").read_text() == "user file"
    os.remove(tmp_path / "ours" / "extra.txt")
    p2 = jax.tree_util.tree_map(lambda a: a + 1, p)
    save_editor(ours, editor, p2, overwrite=True)  # its own export: replaced
    np.testing.assert_array_equal(np.asarray(jax.tree_util.tree_leaves(load_editor(ours)[1])[0]),
                                  np.asarray(jax.tree_util.tree_leaves(p2)[0]))
    os.remove(os.path.join(ours, EXPORT_MARKER))  # an editor folder from before markers: replaceable as well
    save_editor(ours, editor, p, overwrite=True)
    # the marker's checksum guards the weights
    with open(os.path.join(ours, WEIGHTS), "r+b") as f:
        f.seek(-4, 2)
        last = f.read(4)
        f.seek(-4, 2)
        f.write(bytes(b ^ 0xFF for b in last))
    with pytest.raises(JaxhspaceError, match=r"editor\.safetensors does not match the SHA-256"):
        load_editor(ours)


def test_editor_job_refuses_foreign_editor_folder_before_training(tmp_path, monkeypatch):
    import importlib

    from jaxhspace.tasks import get_task

    job = importlib.import_module("jaxhspace.tasks.asyrp_train_job")

    def no_training(config, workdir):
        raise AssertionError("training started")

    monkeypatch.setattr(job, "train_asyrp", no_training)
    config = importlib.import_module("configs.asyrp_train").get_config()
    wd = tmp_path / "wd"
    (wd / "editor").mkdir(parents=True)
    (wd / "editor" / "results.csv").write_text("1,2,3")
    with pytest.raises(JaxhspaceError, match=r"cannot save the editor to .*wd/editor.*use another --workdir"):
        get_task("asyrp_train")(config, str(wd))
    assert (wd / "editor" / "results.csv").read_text() == "1,2,3"
    os.remove(wd / "editor" / "results.csv")  # an empty (or jaxhspace-written) editor folder goes on to training
    with pytest.raises(AssertionError, match="training started"):
        get_task("asyrp_train")(config, str(wd))
