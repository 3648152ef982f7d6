"""guided-diffusion ``UNetModel`` (ADM / iDDPM / P2): converter + GuidedUNetModel vs an independent torch reference.

The reference (tests/guided_diffusion_reference.py) is a re-implementation of openai/guided-diffusion's unet.py in
the original NCHW key format; its perturbed random state dict goes through our converter and ``load_unet``.
Measured max |ours - torch| over two runs (float32, highest matmul precision, outputs of magnitude ~3, h ~7.5):
full output <= 1.0e-5 / 8.2e-6 / 5.9e-6 and h <= 1.4e-5 / 1.3e-5 / 1.0e-5 for the tiny / class_cond / new-order
configs; REG below is the regression bound.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from checkpoints_convert import guided_diffusion as convert_cli
from guided_diffusion_reference import create_model
from jaxhspace.checkpoints import load_unet
from jaxhspace.checkpoints.guided_diffusion import PRESETS, convert_guided_diffusion, count_params, preset_config
from jaxhspace.diffusion.ddim import ddim_invert
from jaxhspace.diffusion.schedule import alpha_bar, schedule_from_config
from jaxhspace.directions.haas import haas_operator
from jaxhspace.models.functional import decode_fn, encode_fn, eps_delta_fn, eps_fn
from jaxhspace.models.guided_unet import GuidedUNetConfig, GuidedUNetModel
from unet_fixtures import check_parity

TOL = 1e-4  # the bound
REG = 5e-5  # regression bound: measured <= 1.4e-5 for h (|h| ~7.5), <= 1.0e-5 for outputs; TOL is the contract

# scale-shift norm, ResBlock up/down, 4-head attention (num_head_channels 16) at resolutions 16 and 8, learned sigma
TINY = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2,2", attention_resolutions="16,8",
            num_head_channels=16, resblock_updown=True, use_scale_shift_norm=True, learn_sigma=True)
# class-conditional, conv resampling, plain emb addition, num_heads 2 down / 4 up
TINY_CLASS = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2,2", attention_resolutions="16,8",
                  num_heads=2, num_heads_upsample=4, class_cond=True, num_classes=10)
# QKVAttention (split q/k/v before heads)
TINY_NEW = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="16",
                num_head_channels=16, use_new_attention_order=True, use_scale_shift_norm=True, learn_sigma=True)
CONFIGS = {"tiny": TINY, "class_cond": TINY_CLASS, "new_order": TINY_NEW}


def _torch_model(cfg, seed=0):
    torch.manual_seed(seed)
    ref = create_model(**cfg).eval()
    with torch.no_grad():  # the official init zeroes out.2, out_layers.3 and proj_out: perturb every tensor
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return ref


def _inputs(cfg, b=2, seed=0):
    rng = np.random.default_rng(seed)
    s = cfg["image_size"]
    x = rng.standard_normal((b, s, s, 3)).astype(np.float32)
    t = np.array([10, 700][:b])
    y = np.array([3, 7][:b]) if cfg.get("class_cond") else None
    return x, t, y


def _torch_run(ref, x, t, y, delta_h=None):
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2))))  # noqa: E731
    with torch.no_grad():
        out, h = ref(nchw(x), torch.from_numpy(t), None if y is None else torch.from_numpy(y),
                     delta_h=None if delta_h is None else nchw(delta_h), return_h=True)
    return out.permute(0, 2, 3, 1).numpy(), h.permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module", params=list(CONFIGS))
def converted(request, tmp_path_factory):
    cfg = CONFIGS[request.param]
    ref = _torch_model(cfg)
    d = tmp_path_factory.mktemp(f"gd_{request.param}")
    src = str(d / "model.pt")
    torch.save(ref.state_dict(), src)
    summary = convert_guided_diffusion(src, str(d / "conv"), arch=cfg)
    model, params = load_unet(str(d / "conv"))
    return request.param, cfg, ref, model, params, summary, d


def test_full_output_eps_and_h_match_reference(converted):
    name, cfg, ref, model, params, summary, _ = converted
    x, t, y = _inputs(cfg)
    out_ref, h_ref = _torch_run(ref, x, t, y)
    kw = {} if y is None else {"y": jnp.asarray(y)}
    out = np.asarray(model.apply({"params": params}, x, t, **kw))
    eps = np.asarray(eps_fn(model, params, **kw)(x, t))
    h = np.asarray(encode_fn(model, params, **kw)(x, t).h)
    c_out = 6 if cfg.get("learn_sigma") else 3
    assert out.shape == out_ref.shape == (2, 32, 32, c_out)
    assert eps.shape == (2, 32, 32, 3) and model.eps_channels == 3
    check_parity(f"{name} full output", out, out_ref, TOL, REG)
    check_parity(f"{name} eps", eps, out_ref[..., :3], TOL, REG)
    check_parity(f"{name} h", h, h_ref, TOL, REG)
    assert np.abs(out_ref).max() > 0.5 and np.abs(h_ref).max() > 0.5  # not a trivially small comparison
    assert summary["params"] == sum(p.numel() for p in ref.parameters())


def test_delta_h_matches_reference_with_dh_added_to_middle_block_output(converted):
    name, cfg, ref, model, params, _, _ = converted
    x, t, y = _inputs(cfg)
    kw = {} if y is None else {"y": jnp.asarray(y)}
    hshape = model.hspace_shape(32, 32)
    dh = np.random.default_rng(1).standard_normal((2, *hshape)).astype(np.float32)
    out_ref, _ = _torch_run(ref, x, t, y, delta_h=dh)
    eps = np.asarray(eps_delta_fn(model, params, **kw)(x, t, jnp.asarray(dh)))
    full = np.asarray(model.apply({"params": params}, x, t, delta_h=dh, **kw))
    b = encode_fn(model, params, **kw)(x, t)
    dec = np.asarray(decode_fn(model, params)(b.h + dh, b.skips, b.temb))  # temb carries the class embedding
    check_parity(f"{name} eps with delta_h", eps, out_ref[..., :3], TOL, REG)
    check_parity(f"{name} full output with delta_h", full, out_ref, TOL, REG)
    check_parity(f"{name} decode(h + dh)", dec, out_ref[..., :3], TOL, REG)
    assert np.abs(out_ref - _torch_run(ref, x, t, y)[0]).max() > 1e-2  # the edit changes the output


# one learned-sigma config suffices (the Jacobian helpers take unconditional models)
@pytest.mark.parametrize("converted", ["new_order"], indirect=True)
def test_samplers_and_jacobians_use_the_eps_channels(converted, tmp_path):
    name, cfg, ref, model, params, _, d = converted
    x, t, _ = _inputs(cfg, b=1)
    schedule = schedule_from_config(json.load(open(os.path.join(d, "conv", "scheduler_config.json"))))
    # one DDIM inversion step 0 -> 500 against the same step with the reference's first 3 channels
    x1 = np.asarray(ddim_invert(eps_fn(model, params), jnp.asarray(x), np.array([0, 500]), schedule))
    e_ref = _torch_run(ref, x, np.array([0]), None)[0][..., :3]
    a0, a1 = float(alpha_bar(schedule, 0)), float(alpha_bar(schedule, 500))
    x1_ref = np.sqrt(a1) * (x - np.sqrt(1 - a0) * e_ref) / np.sqrt(a0) + np.sqrt(1 - a1) * e_ref
    check_parity("DDIM inversion step 0 -> 500", x1, x1_ref, TOL, REG)
    # Haas' J = ∂ε/∂h maps into the 3 ε channels; one JVP against torch.func.jvp of the reference's ε
    op = haas_operator(model, params, x[0], 500)
    assert op.out_shape == (32, 32, 3)
    v = np.random.default_rng(2).standard_normal(op.in_shape).astype(np.float32)
    xt, tt = torch.from_numpy(x).permute(0, 3, 1, 2), torch.tensor([500])
    f = lambda dh: ref(xt, tt, delta_h=dh)[:, :3]  # noqa: E731
    h0 = torch.zeros((1, op.in_shape[2], *op.in_shape[:2]))
    _, jv = torch.func.jvp(f, (h0,), (torch.from_numpy(v).permute(2, 0, 1)[None],))
    ours = np.asarray(op.matvec(jnp.asarray(v)))
    assert np.abs(ours - jv[0].permute(1, 2, 0).detach().numpy()).max() < 1e-3 * max(1.0, np.abs(ours).max())


def test_converted_folder_contents_and_cli(tmp_path):
    ref = _torch_model(TINY_NEW, seed=3)
    src = str(tmp_path / "m.pt")
    torch.save(ref.state_dict(), src)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({**TINY_NEW, "noise_schedule": "linear"}))  # diffusion keys: ignored
    with pytest.warns(UserWarning, match="ignoring diffusion keys"):
        convert_cli.main([src, str(tmp_path / "out"), "--arch-json", str(arch)])
    cfg = json.load(open(tmp_path / "out" / "config.json"))
    assert cfg["_class_name"] == "GuidedUNetModel" and cfg["attention_resolutions"] == "16"
    assert cfg["channel_mult"] == "1,2" and cfg["use_new_attention_order"] is True
    sched = json.load(open(tmp_path / "out" / "scheduler_config.json"))
    assert sched["beta_schedule"] == "linear" and sched["num_train_timesteps"] == 1000
    model, _ = load_unet(str(tmp_path / "out"))
    assert isinstance(model, GuidedUNetModel) and model.config == GuidedUNetConfig.from_dict(TINY_NEW)
    with pytest.raises(SystemExit, match="already exists"):
        convert_cli.main([src, str(tmp_path / "out"), "--arch-json", str(arch)])
    with pytest.raises(SystemExit):  # --preset and --arch-json are mutually exclusive
        convert_cli.main([src, str(tmp_path / "o2"), "--arch-json", str(arch), "--preset", "ffhq"])


def test_config_resolves_create_model_formats():
    c = GuidedUNetConfig.from_dict(PRESETS["afhq_dog"])
    assert c.channel_mult_tuple == (1, 1, 2, 2, 4, 4) and c.attention_ds == (16,)
    assert c.out_channels == 6 and c.eps_channels == 3 and c.time_embed_dim == 512
    assert GuidedUNetModel(c).hspace_shape(256, 256) == (8, 8, 512)
    assert c.sample_size == 256 and c.block_out_channels == (128, 128, 256, 256, 512, 512)
    i = preset_config("imagenet256_uncond")
    assert i.attention_ds == (8, 16, 32) and GuidedUNetModel(i).hspace_shape(256, 256) == (8, 8, 1024)
    assert GuidedUNetConfig(64, 32, 1, channel_mult=[1, 2], attention_resolutions=[16, 8]).to_dict()[
        "attention_resolutions"] == "16,8"


# ---------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("gd_bad")
    sd = _torch_model(TINY, seed=5).state_dict()
    path = str(d / "tiny.pt")
    torch.save(sd, path)
    return d, path, sd


def test_truncated_file_is_a_clear_error(tiny_file):
    d, path, _ = tiny_file
    data = open(path, "rb").read()
    bad = str(d / "truncated.pt")
    open(bad, "wb").write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        convert_guided_diffusion(bad, str(d / "x1"), arch=TINY)
    assert not os.path.exists(d / "x1")


def test_preset_not_matching_the_file_lists_keys_and_hints(tiny_file):
    d, path, _ = tiny_file
    with pytest.raises(ValueError) as e:
        convert_guided_diffusion(path, str(d / "x2"), preset="afhq_dog")
    msg = str(e.value)
    assert "missing keys" in msg and "shape mismatches" in msg and "input_blocks.0.0.weight" in msg
    assert "the file's first conv has 32 channels" in msg and "6 input_blocks" in msg
    assert not os.path.exists(d / "x2")
    with pytest.raises(ValueError, match=r"class-conditional \(label_emb.weight present\)|unconditional but"):
        convert_guided_diffusion(path, str(d / "x3"), arch={**TINY, "class_cond": True, "num_classes": 10})


def test_missing_unexpected_and_misshaped_keys_are_listed(tiny_file):
    d, _, sd = tiny_file
    sd = dict(sd)
    del sd["middle_block.1.qkv.bias"]
    sd["extra.weight"] = torch.zeros(3)
    sd["out.2.weight"] = torch.zeros(3, 32, 3, 3)
    bad = str(d / "edited.pt")
    torch.save(sd, bad)
    with pytest.raises(ValueError) as e:
        convert_guided_diffusion(bad, str(d / "x4"), arch=TINY)
    msg = str(e.value)
    assert "missing keys (1): middle_block.1.qkv.bias" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "out.2.weight: checkpoint (3, 32, 3, 3)" in msg and "learn_sigma=False, config expects 6" in msg


def test_bad_configs_and_arguments(tiny_file):
    d, path, _ = tiny_file
    with pytest.raises(ValueError, match="unknown guided-diffusion create_model keys"):
        GuidedUNetConfig.from_dict({**TINY, "num_chanels": 32})
    with pytest.raises(ValueError, match="required keys"):
        GuidedUNetConfig.from_dict({"image_size": 32})
    with pytest.raises(ValueError, match="channel_mult"):
        GuidedUNetConfig(image_size=48, num_channels=32, num_res_blocks=1)  # no size default for 48
    with pytest.raises(ValueError, match="attention_resolutions"):
        GuidedUNetConfig(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                         attention_resolutions="7")
    with pytest.raises(ValueError, match="num_head_channels"):
        GuidedUNetConfig(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", num_head_channels=24)
    with pytest.raises(ValueError, match="unknown preset"):
        convert_guided_diffusion(path, str(d / "x5"), preset="celeba_hq")
    with pytest.raises(ValueError, match="exactly one of preset"):
        convert_guided_diffusion(path, str(d / "x6"), preset="ffhq", arch=TINY)


def test_labels_required_iff_class_conditional():
    x = jnp.zeros((2, 32, 32, 3))
    cond = GuidedUNetModel(GuidedUNetConfig.from_dict(TINY_CLASS))
    with pytest.raises(ValueError, match="class-conditional .* pass labels y"):
        jax.eval_shape(cond.init, jax.random.PRNGKey(0), x, jnp.zeros((2,)))
    with pytest.raises(ValueError, match="integer class labels"):
        jax.eval_shape(cond.init, jax.random.PRNGKey(0), x, jnp.zeros((2,)), jnp.zeros((2,)))
    uncond = GuidedUNetModel(GuidedUNetConfig.from_dict(TINY))
    with pytest.raises(ValueError, match="unconditional"):
        jax.eval_shape(uncond.init, jax.random.PRNGKey(0), x, jnp.zeros((2,)), jnp.zeros((2,), jnp.int32))
    with pytest.raises(ValueError, match="NCHW"):
        jax.eval_shape(uncond.init, jax.random.PRNGKey(0), jnp.zeros((2, 3, 32, 32)), jnp.zeros((2,)))


# ---------------------------------------------------------------------------------------------- full presets
@pytest.mark.slow
@pytest.mark.parametrize("preset,expected", [("afhq_dog", None), ("imagenet256_uncond", 552_814_086)])
def test_full_presets_have_the_official_parameter_counts(preset, expected):
    """Ours from shapes only (jax.eval_shape); the reference built on torch's meta device (no memory)."""
    cfg = {k: v for k, v in PRESETS[preset].items() if not k.startswith("_")}
    with torch.device("meta"):
        ref = create_model(**cfg)
    n_ref = sum(p.numel() for p in ref.parameters())
    n_ours = count_params(GuidedUNetModel(preset_config(preset)))
    print(preset, n_ours, n_ref)
    assert n_ours == n_ref
    if expected is not None:
        assert n_ours == expected
