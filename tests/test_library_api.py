"""Library API of issue #17 (items 3 and 4): the Asyrp trainer's explicit settings (``AsyrpTrainSettings.validate``
names the bad field, before any model loads), the ``DeltaSource`` protocol of the Asyrp Δh sources, and
``models.functional.eps_pair`` (one encode, ε and ε̃) against diffusers' UNet2DModel with Δh added to the mid-block
output by a forward hook (the official Asyrp edit, kwonminki/Asyrp_official@a6c82dc:models/ddpm/diffusion.py:544-559).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import configs.asyrp_train as train_cfg
from jaxhspace.editing import asyrp_edit as ae
from jaxhspace.editing.asyrp_train import AsyrpTrainSettings
from jaxhspace.errors import JaxhspaceError
from jaxhspace.models.editor import DeltaBlock, EditorConfig, init_editor
from jaxhspace.tasks.asyrp_train_job import settings_from_config

HS = (8, 8, 32)  # h-space of the tiny UNet below at 16 x 16

# ----------------------------------------------------------------------------------------------
# AsyrpTrainSettings
# ----------------------------------------------------------------------------------------------
BAD_SETTINGS = [
    ("lr", 0.0, r"AsyrpTrainSettings\.lr must be > 0"),
    ("lr", float("nan"), r"AsyrpTrainSettings\.lr must be a finite float"),
    ("optimizer", "adamw", r"AsyrpTrainSettings\.optimizer must be one of \('sgd', 'adam'\), got 'adamw'"),
    ("n_inv", 0, r"AsyrpTrainSettings\.n_inv must be >= 1"),
    ("batch_size", 2.0, r"AsyrpTrainSettings\.batch_size must be an int, got 2\.0"),
    ("l1_use_cos", "yes", r"AsyrpTrainSettings\.l1_use_cos must be a bool"),
    ("t_edit", -5, r"AsyrpTrainSettings\.t_edit must be a timestep >= 0 or -1"),
    ("templates", "nada", r"AsyrpTrainSettings\.templates must be one of"),
    ("editor_variant", "ncsnpp", r"AsyrpTrainSettings\.editor_variant must be one of \('ddpm', 'adm'\)"),
    ("lambda_l1", -1.0, r"AsyrpTrainSettings\.lambda_l1 must be >= 0"),
]


def test_settings_defaults_are_the_official_config():
    assert settings_from_config(train_cfg.get_config()) == AsyrpTrainSettings().validate()
    s = AsyrpTrainSettings()
    assert (s.t_edit, s.t_boost, s.n_inv, s.n_train, s.lr, s.lambda_clip, s.lambda_l1) == (500, 200, 40, 40, 0.5, 1.0,
                                                                                            3.0)
    c = train_cfg.get_config()
    c.lambda_l1 = 5  # an int for a float field becomes a float
    assert settings_from_config(c).lambda_l1 == 5.0 and isinstance(settings_from_config(c).lambda_l1, float)


@pytest.mark.parametrize("field, value, pattern", BAD_SETTINGS, ids=[f"{b[0]}={b[1]!r}" for b in BAD_SETTINGS])
def test_settings_validate_names_the_bad_field(field, value, pattern):
    with pytest.raises(JaxhspaceError, match=pattern):
        AsyrpTrainSettings(**{field: value}).validate()


def test_settings_impossible_combinations():
    with pytest.raises(JaxhspaceError, match=r"AsyrpTrainSettings\.lpips_path is empty but t_select_metric='lpips'"):
        AsyrpTrainSettings(t_edit=-1, t_select_metric="lpips").validate()
    AsyrpTrainSettings(t_select_metric="lpips").validate()  # fixed t_edit / t_boost: LPIPS is never used
    with pytest.raises(JaxhspaceError, match="automatic t_boost .* cannot fire with t_select_metric='msl2'"):
        AsyrpTrainSettings(t_boost=-1).validate()


def test_job_refuses_a_bad_setting_before_loading(tmp_path):
    """The job builds the settings from its config and validates them before any model or image loads (the model
    and CLIP paths do not exist)."""
    from jaxhspace.tasks import get_task

    c = train_cfg.get_config()
    c.model_path, c.clip_path, c.optimizer = "/nonexistent/unet", "/nonexistent/clip", "adamw"
    with pytest.raises(JaxhspaceError, match=r"AsyrpTrainSettings\.optimizer must be one of"):
        get_task("asyrp_train")(c, str(tmp_path / "wd"))


# ----------------------------------------------------------------------------------------------
# DeltaSource
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sources():
    rng = np.random.default_rng(0)
    editor = DeltaBlock(EditorConfig(channels=32, temb_dim=64))
    eparams = init_editor(editor, jax.random.PRNGKey(0))
    d = rng.normal(size=HS).astype(np.float32)
    table = rng.normal(size=(3,) + HS).astype(np.float32)
    out = {"editor": ae.EditorDelta(eparams, editor), "constant": ae.ConstantDelta(jnp.asarray(d)),
           "table": ae.TableDelta(jnp.asarray(table), (999, 666, 333))}
    out["combined"] = ae.CombinedDelta((out["constant"], out["table"]), jnp.asarray([1.0, -2.0]))
    return out


@pytest.mark.parametrize("name", ["editor", "constant", "table", "combined"])
def test_each_source_satisfies_the_protocol(sources, name):
    src = sources[name]
    assert isinstance(src, ae.DeltaSource)
    src.validate(HS, temb_dim=64)
    h = jnp.asarray(np.random.default_rng(1).normal(size=(2,) + HS).astype(np.float32))
    temb = jnp.ones((2, 64), jnp.float32)
    dh = np.asarray(src(h, temb, jnp.array([666, 500])))
    assert dh.shape == (2,) + HS
    c, t = np.asarray(sources["constant"].delta_h), np.asarray(sources["table"].table)
    want = {"constant": np.stack([c, c]), "table": np.stack([t[1], np.zeros(HS, np.float32)]),  # 500: not a row
            "combined": (1.0 * np.stack([c, c]) - 2.0 * np.stack([t[1], np.zeros(HS)])) / math.sqrt(2)}.get(name)
    if want is not None:
        np.testing.assert_allclose(dh, want, rtol=1e-6, atol=1e-6)
    assert src.timesteps == {"table": (999, 666, 333), "combined": (999, 666, 333)}.get(name)


def test_plain_callable_is_not_a_delta_source():
    assert not isinstance(lambda h, temb, t: h, ae.DeltaSource)


WRONG_SHAPES = [
    ("constant", lambda s: ae.ConstantDelta(jnp.zeros((4, 4, 32))),
     r"\[h, w, C\] = \[8, 8, 32\].*got shape \(4, 4, 32\)"),
    ("table", lambda s: ae.TableDelta(jnp.zeros((3, 8, 8, 16)), (999, 666, 333)),
     r"\[S=3, 8, 8, 32\].*got shape \(3, 8, 8, 16\)"),
    ("editor", lambda s: ae.EditorDelta(s["editor"].params, DeltaBlock(EditorConfig(channels=16, temb_dim=64,
                                                                                       num_groups=8))),
     r"editor \(C=16, temb_dim=64\) does not fit the UNet \(h-space \(8, 8, 32\)"),
    ("combined", lambda s: ae.CombinedDelta((s["constant"], ae.ConstantDelta(jnp.zeros((8, 8, 3)))),
                                            jnp.ones(2)), r"\[8, 8, 32\].*got shape \(8, 8, 3\)"),
]


@pytest.mark.parametrize("make, pattern", [w[1:] for w in WRONG_SHAPES], ids=[w[0] for w in WRONG_SHAPES])
def test_wrong_h_shape_is_refused_naming_the_shapes(sources, make, pattern):
    with pytest.raises(JaxhspaceError, match=pattern):
        make(sources).validate(HS, temb_dim=64)


def test_combined_timesteps_are_the_common_rows(sources):
    other = ae.TableDelta(jnp.zeros((2,) + HS), (666, 100))
    assert ae.CombinedDelta((sources["table"], other, sources["editor"]), jnp.ones(3)).timesteps == (666,)
    assert ae.CombinedDelta((sources["constant"], sources["editor"]), jnp.ones(2)).timesteps is None


# ----------------------------------------------------------------------------------------------
# eps_pair vs diffusers
# ----------------------------------------------------------------------------------------------
TINY = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=[16, 32], layers_per_block=1,
            down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"],
            norm_num_groups=8, norm_eps=1e-6, attention_head_dim=None, downsample_padding=0,
            flip_sin_to_cos=False, freq_shift=1, act_fn="silu")
TOL = 5e-5


def test_eps_pair_matches_diffusers_with_hooked_delta(tmp_path, sources):
    from jaxhspace.checkpoints import load_unet
    from jaxhspace.models.functional import eps_pair
    from tests.unet_fixtures import make_torch_unet, torch_forward

    tm = make_torch_unet(TINY, seed=0)
    tm.save_pretrained(str(tmp_path))
    unet, params = load_unet(str(tmp_path))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
    t = np.array([900, 300])
    dh = rng.normal(size=HS).astype(np.float32)
    scale, edit = 0.7, np.array([True, False])

    f = jax.jit(lambda x, t, dh, edit: eps_pair(unet, params, x, t, dh, scale=scale, edit=edit,
                                                return_delta_h=True))
    eps, eps_edit, raw = (np.asarray(a) for a in f(x, t, dh, edit))
    eps_t, _ = torch_forward(tm, x, t)
    eps_e_t, _ = torch_forward(tm, x, t, np.stack([scale * dh, np.zeros(HS, np.float32)]))
    err = max(np.abs(eps - eps_t).max(), np.abs(eps_edit - eps_e_t).max())
    print(f"\n[eps_pair vs diffusers + hooked Δh] max |err| {err:.2e}", end="")
    assert err < TOL
    assert np.abs(eps_edit[0] - eps[0]).max() > 10 * TOL  # the edit moves ε̃ of the edited example ...
    np.testing.assert_array_equal(eps_edit[1], eps[1])  # ... and not the other one
    np.testing.assert_array_equal(raw, np.broadcast_to(dh, (2,) + HS))  # the raw, unscaled Δh
    # no example edits: the second decoder pass is skipped, ε̃ = ε exactly
    _, eps_none, _ = f(x, t, dh, np.array([False, False]))
    np.testing.assert_array_equal(np.asarray(eps_none), eps)
    # a callable Δh (an editor f(h, temb)) without scale or gate: ε̃ = dec(h + f(h, temb))
    src = sources["editor"]
    g = jax.jit(lambda x, t: eps_pair(unet, params, x, t, lambda h, temb: src(h, temb, t), return_delta_h=True))
    _, eps_ed, f_h = (np.asarray(a) for a in g(x, t))
    eps_ed_t, _ = torch_forward(tm, x, t, f_h)
    assert np.abs(eps_ed - eps_ed_t).max() < TOL


COND_TINY = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=[16, 32], layers_per_block=1,
                 down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                 up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=24, attention_head_dim=2,
                 norm_num_groups=8, norm_eps=1e-5, act_fn="silu", flip_sin_to_cos=True, freq_shift=0,
                 downsample_padding=1)


def test_eps_pair_passes_the_text_context_to_encode_and_decode(tmp_path):
    """The raw text-conditional UNet: ``encoder_hidden_states`` reaches the down path *and* the cross-attention up
    blocks of both decoder passes (diffusers UNet2DConditionModel, Δh added to its mid-block output by a hook)."""
    import torch
    from diffusers import UNet2DConditionModel as TorchUNet
    from diffusers.models.attention_processor import AttnProcessor

    from jaxhspace.checkpoints import load_unet
    from jaxhspace.models.functional import eps_pair

    torch.manual_seed(0)
    tm = TorchUNet(**COND_TINY)
    with torch.no_grad():
        for p in tm.parameters():
            p.add_(0.02 * torch.randn_like(p))
    tm.set_attn_processor(AttnProcessor())
    tm.eval().save_pretrained(str(tmp_path))
    unet, params = load_unet(str(tmp_path))
    rng = np.random.default_rng(3)
    z = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
    c = rng.normal(size=(2, 5, 24)).astype(np.float32)
    t = np.array([700, 100])
    dh = rng.normal(size=(2,) + unet.hspace_shape(8, 8)).astype(np.float32)

    def torch_eps(delta):
        def hook(_m, _i, out):
            return out if delta is None else out + torch.from_numpy(np.ascontiguousarray(delta.transpose(0, 3, 1, 2)))

        handle = tm.mid_block.register_forward_hook(hook)
        try:
            with torch.no_grad():
                out = tm(torch.from_numpy(z.transpose(0, 3, 1, 2).copy()), torch.from_numpy(t),
                         encoder_hidden_states=torch.from_numpy(c)).sample
        finally:
            handle.remove()
        return out.numpy().transpose(0, 2, 3, 1)

    eps, eps_edit = jax.jit(lambda z, t, c, dh: eps_pair(unet, params, z, t, dh, scale=2.0,
                                                         encoder_hidden_states=c))(z, t, c, dh)
    err = max(np.abs(np.asarray(eps) - torch_eps(None)).max(), np.abs(np.asarray(eps_edit) - torch_eps(2.0 * dh)).max())
    print(f"\n[eps_pair, text-conditional UNet vs diffusers] max |err| {err:.2e}", end="")
    assert err < 1e-4
