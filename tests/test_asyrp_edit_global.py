"""Issue #19 item 2: the asyrp_edit job's global Δh is averaged over a SEPARATE set of images (official: the first K
training images, Asyrp_official diffusion_latent.py:779-829), not over the faces being edited, and the metrics say
which set was used."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import configs.asyrp_edit as edit_cfg
from jaxhspace.data import synthfaces
from jaxhspace.editing import asyrp_edit as ae
from jaxhspace.editing.editor_io import save_editor
from jaxhspace.models.editor import DeltaBlock, EditorConfig
from jaxhspace.tasks import get_task
from jaxhspace.world import load_model
from tests.unet_fixtures import make_torch_unet

UNET = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=[16, 32], layers_per_block=1,
            down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"],
            norm_num_groups=8, norm_eps=1e-6, attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False,
            freq_shift=1)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("global_dh")
    make_torch_unet(UNET, seed=0).save_pretrained(str(root / "unet"))
    ed = DeltaBlock(EditorConfig(channels=32, temb_dim=64, num_groups=8))
    p = ed.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 32)), jnp.zeros((1, 64)))["params"]
    p = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(1), a.shape), p)
    save_editor(str(root / "editor"), ed, p, meta={"n_train_step": 4, "t_edit": 500, "t_boost": 0})
    return {"unet": str(root / "unet"), "editor": str(root / "editor"), "root": root}


def _config(paths, **kw):
    c = edit_cfg.get_config()
    c.model_path, c.editor_paths = paths["unet"], (paths["editor"],)
    c.n_inv, c.n_test, c.num_images, c.scales, c.upscale, c.global_dh_images = 4, 4, 2, (1.0,), 1, 2
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_global_dh_is_averaged_over_a_separate_set(paths, tmp_path):
    """The saved global Δh is the mean over SynthFaces of ``global_dh_seed`` (the training faces), not over the edited
    faces (``data_seed``); ``global_dh_set="edited"`` gives the old in-sample mean; the report names the set."""
    m = get_task("asyrp_edit")(_config(paths), str(tmp_path / "a"))
    assert "seed 0" in m["global_dh_averaged_over"] and "not the edited" in m["global_dh_averaged_over"]
    g_job = ae.load_delta_h(os.path.join(tmp_path / "a", "global_dh_0.npz"))[0]
    unet, params, schedule, _ = load_model(paths["unet"], 0)
    from jaxhspace.editing.editor_io import load_editor

    editor, eparams, _ = load_editor(paths["editor"])
    src = ae.EditorDelta(eparams, editor)

    def mean_over(seed):
        x = ae.invert(unet, params, schedule, jnp.asarray(synthfaces.generate(seed, 2, size=32)[0]), 4)
        dhs, _ = ae.collect_delta_h(unet, params, schedule, src, x, 4, 500, n_train_step=4)
        return np.asarray(dhs).mean((0, 1))

    train, edited = mean_over(0), mean_over(12345)
    assert np.abs(train - edited).max() > 1e-3 * np.abs(train).max()
    np.testing.assert_allclose(g_job, train, rtol=1e-5, atol=1e-6)

    m2 = get_task("asyrp_edit")(_config(paths, global_dh_set="edited"), str(tmp_path / "b"))
    assert "in-sample" in m2["global_dh_averaged_over"]
    np.testing.assert_allclose(ae.load_delta_h(os.path.join(tmp_path / "b", "global_dh_0.npz"))[0], edited,
                               rtol=1e-5, atol=1e-6)


def test_global_dh_set_errors_are_early(paths, tmp_path):
    with pytest.raises(ValueError, match="global_dh_seed"):
        get_task("asyrp_edit")(_config(paths, global_dh_seed=12345), str(tmp_path / "c"))
    with pytest.raises(ValueError, match="global_dh_set"):
        get_task("asyrp_edit")(_config(paths, global_dh_set="train"), str(tmp_path / "d"))


def test_multi_attribute_t_from_the_highest_text_cosine(paths, tmp_path):
    """Issue #19 item 6: with t_edit / t_boost = -1 and several editors, the times come from the editor with the
    highest cos(src, tgt) (official diffusion_latent.py:630-655), not from the first editor."""
    from jaxhspace.editing.editor_io import load_editor

    ed, p, _ = load_editor(paths["editor"])
    for name, cos, t_edit in (("low", 0.5, 666), ("high", 0.9, 333)):
        save_editor(str(tmp_path / name), ed, p, meta={"n_train_step": 4, "t_edit": t_edit, "t_boost": 0,
                                                      "cos_src_tgt": cos})
    c = _config(paths, editor_paths=(str(tmp_path / "low"), str(tmp_path / "high")), global_dh_images=0,
                num_images=1)
    m = get_task("asyrp_edit")(c, str(tmp_path / "job"))
    assert m["t_edit"] == 333 and m["t_from_editor"] == 1
