"""Official checkpoints as ``config.model_path`` (jaxhspace.checkpoints.auto_convert, wrapped around every job by
``get_task``) and the per-dataset config sets (configs/{afhq_dog,ffhq,metfaces,imagenet256}).

A tiny Ho et al. ``.ckpt`` is written by the independent torch re-implementation tests/ho_ddpm_reference.py; the job
runs on the folder converted into its workdir and its reconstruction equals the one on a folder converted by the
command-line converter; the second run reuses the conversion; a guided-diffusion ``.pt`` of an unknown architecture
gives the converter command to run."""
import importlib
import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

import ho_ddpm_reference as ho
from checkpoints_convert.ddpm_ckpt import main as convert_main
from jaxhspace.checkpoints import auto_convert, ddpm_ckpt
from jaxhspace.checkpoints.common import read_state_dict
from jaxhspace.tasks import get_task

# one attention level (8x8), widths 32 / 64, one res block: a small official-format DDPM at 16 px
TINY = dict(ch=32, out_ch=3, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0, in_channels=3,
            resamp_with_conv=True, image_size=16)
DATASETS = ("afhq_dog", "ffhq", "metfaces", "imagenet256")
JOBS = ("asyrp_train", "asyrp_edit", "pullback")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    torch.save(ho.build(TINY, seed=3).state_dict(), str(root / "tiny_celeba.ckpt"))
    (root / "arch.json").write_text(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}))
    (root / "faces").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / "faces" / f"f{i}.png")
    return root


def _invert_config(files, **kw):
    c = importlib.import_module("configs.celebahq256.invert_reconstruct").get_config()
    c.model_path, c.image_paths, c.n_steps_list = str(files / "tiny_celeba.ckpt"), (str(files / "faces"),), (4,)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


@pytest.mark.parametrize("ds", DATASETS)
@pytest.mark.parametrize("job", JOBS)
def test_dataset_configs_load_and_override_the_celebahq256_base(ds, job):
    mod = importlib.import_module(f"configs.{ds}.{job}")
    c, base = mod.get_config(), importlib.import_module(f"configs.celebahq256.{job}").get_config()
    assert set(base.keys()) <= set(c.keys()) and c.task == base.task == job
    for k in base.keys():  # same types: --config.<field> overrides behave the same
        assert type(c[k]) is type(base[k]), (ds, job, k)
    assert c.model_format == "auto" and c.model_preset in ("afhq_dog", "ffhq", "metfaces_p2", "imagenet256_uncond")
    assert f"python -m jaxhspace.main --config configs/{ds}/{job}.py" in mod.__doc__
    assert ".py:" in mod.__doc__ or ".sh:" in mod.__doc__  # file:line citations


def test_dataset_values_follow_the_official_files():
    dog = importlib.import_module("configs.afhq_dog.asyrp_train").get_config()
    met = importlib.import_module("configs.metfaces.asyrp_train").get_config()
    ffhq = importlib.import_module("configs.ffhq.asyrp_train").get_config()
    inet = importlib.import_module("configs.imagenet256.asyrp_train").get_config()
    # t_edit: utils/t_edit_dic.py afhq 444 (LPIPS 0.3); t_boost: utils/{afhq,metface}_LPIPS_distance_x.tsv at 1.2
    assert (dog.t_edit, dog.t_boost, met.t_edit, met.t_boost) == (444, 167, 320, 180)
    assert (ffhq.t_edit, ffhq.t_boost, inet.t_edit, inet.t_boost) == (500, 200, 500, 200)  # no tsv: the scripts' values
    assert (dog.src_text, dog.tgt_text) == ("Dog", "Happy Dog")
    assert (met.src_text, met.tgt_text) == ("painting of a person", "painting of a Smiling person")
    for c in (dog, met, ffhq, inet):
        assert (c.lr, c.lr_step_size, c.lr_gamma, c.n_inv, c.n_train) == (0.5, 20, 0.9, 40, 40)
        assert c.editor_variant == "adm"
    edit = importlib.import_module("configs.afhq_dog.asyrp_edit").get_config()
    assert (edit.t_edit, edit.t_boost, edit.n_test) == (444, 167, 40)


def test_celebahq256_configs_have_the_model_format_fields():
    for job in ("asyrp_edit", "asyrp_train", "haas", "invert_reconstruct", "pca", "pullback", "sample"):
        c = importlib.import_module(f"configs.celebahq256.{job}").get_config()
        assert (c.model_format, c.model_preset, c.model_arch_json) == ("auto", "", ""), job


def test_ckpt_converts_into_the_workdir_and_is_reused(files, tmp_path):
    wd = str(tmp_path / "wd")
    t0 = time.time()
    m1 = get_task("invert_reconstruct")(_invert_config(files, model_arch_json=str(files / "arch.json")), wd)
    t1 = time.time()
    rec = m1["model_converted_from"]
    assert rec["reused"] is False and rec["format"] == "ddpm_ckpt" and rec["source"] == str(files / "tiny_celeba.ckpt")
    folder = rec["folder"]
    assert os.path.dirname(folder) == os.path.join(wd, "converted") and m1["model"] == folder
    marker = json.load(open(os.path.join(folder, auto_convert.MARKER)))
    assert marker["size"] == os.path.getsize(files / "tiny_celeba.ckpt") and marker["arch"]["ch"] == 32
    assert not [f for f in os.listdir(os.path.dirname(folder)) if f.startswith(".")]  # no staging left
    assert m1["table"][0]["n"] == 4 and np.isfinite(m1["table"][0]["mse"])
    # the same folder as the command-line converter writes (weights bit-identical, same UNet config)
    manual = str(tmp_path / "manual")
    convert_main([str(files / "tiny_celeba.ckpt"), manual, "--arch-json", str(files / "arch.json")])
    a, b = (read_state_dict(os.path.join(d, "diffusion_pytorch_model.safetensors")) for d in (folder, manual))
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    ca, cb = (json.load(open(os.path.join(d, "config.json"))) for d in (folder, manual))
    assert {k: v for k, v in ca.items() if k != "_jaxhspace_source"} == {k: v for k, v in cb.items()
                                                                          if k != "_jaxhspace_source"}
    # second run: the converted folder is reused (same mtime, no new conversion)
    mtime = os.path.getmtime(os.path.join(folder, "config.json"))
    m2 = get_task("invert_reconstruct")(_invert_config(files, model_arch_json=str(files / "arch.json")), wd)
    assert m2["model_converted_from"]["reused"] is True and m2["model_converted_from"]["folder"] == folder
    assert os.path.getmtime(os.path.join(folder, "config.json")) == mtime
    print(f"\n[auto-convert] first run {t1 - t0:.1f} s, second {time.time() - t1:.1f} s", end="")


def test_preset_is_inferred_from_the_shapes_and_a_changed_source_reconverts(files, tmp_path, monkeypatch):
    monkeypatch.setattr(ddpm_ckpt, "PRESETS", {"celeba_hq": dict(ddpm_ckpt.PRESETS["celeba_hq"]),
                                               "tiny_a": dict(TINY), "tiny_b": dict(TINY),
                                               "tiny_other": dict(TINY, num_res_blocks=2)})
    src = str(tmp_path / "model.ckpt")
    torch.save(ho.build(TINY, seed=4).state_dict(), src)
    shapes = auto_convert.read_shapes(src)
    assert auto_convert.detect_format(shapes) == "ddpm_ckpt"
    assert auto_convert.matching_presets("ddpm_ckpt", shapes) == ["tiny_a", "tiny_b"]
    c = _invert_config(files, model_path=src)
    path, rec = auto_convert.resolve_model_path(c, str(tmp_path / "wd"))
    assert rec["preset"] == "tiny_a" and not rec["reused"]
    assert auto_convert.resolve_model_path(c, str(tmp_path / "wd"))[1]["reused"]
    torch.save(ho.build(TINY, seed=5).state_dict(), src)  # new weights at the same path
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    path2, rec2 = auto_convert.resolve_model_path(c, str(tmp_path / "wd"))
    assert path2 == path and not rec2["reused"]
    w = read_state_dict(os.path.join(path2, "diffusion_pytorch_model.safetensors"))["conv_in.weight"]
    np.testing.assert_array_equal(w, ho.build(TINY, seed=5).state_dict()["conv_in.weight"].numpy())
    # a preset that does not fit the file: the converter's list of mismatches
    c.model_preset = "tiny_other"
    with pytest.raises(ValueError, match=r"missing keys \(\d+\): down\.0\.block\.1\.conv1\.bias"):
        auto_convert.resolve_model_path(c, str(tmp_path / "wd2"))


def test_unknown_guided_architecture_names_the_converter(tmp_path):
    import guided_diffusion_reference as gd

    ref = gd.create_model(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                          attention_resolutions="16", num_head_channels=16, learn_sigma=True)
    src = str(tmp_path / "my_model.pt")
    torch.save(ref.state_dict(), src)
    c = importlib.import_module("configs.afhq_dog.pullback").get_config()
    c.model_path, c.model_preset = src, ""
    t0 = time.time()
    with pytest.raises(ValueError) as e:
        get_task("pullback")(c, str(tmp_path / "wd"))
    msg = str(e.value)
    assert "guided_diffusion checkpoint whose architecture matches no preset" in msg
    assert f"python -m checkpoints_convert.guided_diffusion {src} DST (--preset " in msg and "--arch-json" in msg
    assert time.time() - t0 < 30 and not os.path.exists(tmp_path / "wd" / "converted")
    # a preset given for it: the converter's own key / shape listing
    c.model_preset = "afhq_dog"
    with pytest.raises(ValueError, match="does not match|missing keys|shape mismatches"):
        get_task("pullback")(c, str(tmp_path / "wd"))


def test_bad_files_and_formats(tmp_path, files):
    junk = tmp_path / "junk.pt"
    torch.save({"foo.weight": torch.zeros(2)}, str(junk))
    c = _invert_config(files, model_path=str(junk))
    with pytest.raises(ValueError, match="cannot tell the checkpoint format.*checkpoints_convert.ddpm_ckpt"):
        get_task("invert_reconstruct")(c, str(tmp_path / "wd"))
    trunc = tmp_path / "trunc.ckpt"
    trunc.write_bytes((files / "tiny_celeba.ckpt").read_bytes()[:5000])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        get_task("invert_reconstruct")(_invert_config(files, model_path=str(trunc)), str(tmp_path / "wd"))
    with pytest.raises(ValueError, match="model_format"):
        get_task("invert_reconstruct")(_invert_config(files, model_format="onnx"), str(tmp_path / "wd"))
    with pytest.raises(ValueError, match="expects a folder"):
        get_task("invert_reconstruct")(_invert_config(files, model_format="diffusers"), str(tmp_path / "wd"))
    from jaxhspace.world import load_model  # outside get_task: the converter command
    with pytest.raises(ValueError, match="is a checkpoint file.*checkpoints_convert.ddpm_ckpt"):
        load_model(str(files / "tiny_celeba.ckpt"))
    # a folder of someone else's in the way is never replaced
    c = _invert_config(files, model_arch_json=str(files / "arch.json"))
    path, _ = auto_convert.resolve_model_path(c, str(tmp_path / "wd3"))
    os.remove(os.path.join(path, auto_convert.MARKER))
    with pytest.raises(ValueError, match="not written by jaxhspace"):
        auto_convert.resolve_model_path(c, str(tmp_path / "wd3"))
    assert os.path.isfile(os.path.join(path, "config.json"))


@pytest.mark.slow  # a pullback compile on a GuidedUNetModel: ~25 s idle, >60 s on a shared CPU
def test_afhq_dog_pullback_config_runs_on_a_guided_pt(files, tmp_path, monkeypatch):
    """A guided-diffusion .pt (learned sigma, scale-shift norm, resblock up/down) whose shapes match a preset: the
    preset is inferred (the file name picks among same-architecture presets) and the pullback job runs on ε."""
    import guided_diffusion_reference as gd
    from jaxhspace.checkpoints import guided_diffusion

    arch = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
                num_head_channels=16, learn_sigma=True, use_scale_shift_norm=True, resblock_updown=True)
    full = dict(guided_diffusion.PRESETS["afhq_dog"], **arch)
    monkeypatch.setattr(guided_diffusion, "PRESETS", {
        "afhq_dog": dict(full), "ffhq": dict(full),
        "imagenet256_uncond": guided_diffusion.PRESETS["imagenet256_uncond"]})
    torch.manual_seed(0)
    ref = gd.create_model(**arch)
    src = str(tmp_path / "ffhq_10m.pt")
    torch.save(ref.state_dict(), src)
    c = importlib.import_module("configs.afhq_dog.pullback").get_config()
    c.model_path, c.model_preset, c.image_paths = src, "", (str(files / "faces"),)
    c.n_steps, c.svd_max_iters, c.n_edit_steps, c.k, c.n_dirs = 4, 2, 1, 1, 1
    m = get_task("pullback")(c, str(tmp_path / "wd"))
    assert m["model_converted_from"]["preset"] == "ffhq" and m["model_converted_from"]["format"] == "guided_diffusion"
    assert len(m["singular_values"]) == 2 and all(np.isfinite(s[0]) and s[0] > 0 for s in m["singular_values"])
