"""The real-checkpoint configs (configs/celebahq256/*.py): every small config's field is there (so the job code
runs them), the placeholders are rejected with errors naming the field, and the plumbing works end to end on a
user's diffusers folder: a tiny random UNet saved with save_pretrained at 16x16 (not a SynthFaces size, like a
256x256 model) plus user images in a folder, run through ``get_task(name)(config, workdir)``."""
import importlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from jaxhspace.data.images import expand_image_paths
from jaxhspace.tasks import get_task
from tests.unet_fixtures import make_torch_unet, spy as _spy

JOBS = ("asyrp_train", "asyrp_edit", "pullback", "haas", "pca", "sample", "invert_reconstruct")
# no attention in the down/up blocks (faster compiles); the mid block, whose output is h, keeps its attention
TINY = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=[16, 32], layers_per_block=1,
            down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"],
            norm_num_groups=8, norm_eps=1e-6, attention_head_dim=None, downsample_padding=0,
            flip_sin_to_cos=False, freq_shift=1, act_fn="silu")


def _configs(job):
    real = importlib.import_module(f"configs.celebahq256.{job}")
    small = importlib.import_module(f"configs.{job}")
    return real, real.get_config(), small.get_config()


@pytest.mark.parametrize("job", JOBS)
def test_real_config_documents_its_command_and_placeholders(job):
    # (a real config is its small config plus overrides: test_job_skeleton.test_variants_are_their_base_plus_overrides)
    mod, real, small = _configs(job)
    assert real.task == small.task == job
    assert f"python -m jaxhspace.main --config configs/celebahq256/{job}.py" in mod.__doc__
    assert "--config.model_path=" in mod.__doc__
    assert real.model_path.startswith("/path/to/") and not os.path.exists(real.model_path)
    if "image_paths" in real and job != "sample":
        assert real.image_paths == () and "--config.image_paths=" in mod.__doc__
    assert real.get("upscale", 1) == 1


def test_official_defaults():
    _, a, _ = _configs("asyrp_train")
    assert (a.t_edit, a.t_boost, a.n_inv, a.n_train) == (500, 200, 40, 40)
    assert (a.lr, a.lambda_clip, a.lambda_l1) == (0.5, 1.0, 3.0)
    assert a.templates == "imagenet" and a.l1_use_cos and a.optimizer == "sgd" and a.momentum == 0.0
    assert "--config.clip_path=" in importlib.import_module("configs.celebahq256.asyrp_train").__doc__
    _, p, _ = _configs("pullback")
    assert (p.edit_t, p.t_boost, p.n_steps, p.gamma, p.lam, p.n_edit_steps, p.k) == (600, 200, 100, 0.1, 1.0, 16, 2)
    _, h, _ = _configs("haas")
    assert (h.k, h.n_steps, h.t_edit, h.symmetric) == (3, 10, 0, True)
    _, c, _ = _configs("pca")
    assert (c.pca_source, c.num_pca_samples, c.n_steps, c.k, c.scales) == ("samples", 500, 10, 25, (-5.0, 5.0))


def test_placeholders_are_rejected_naming_the_field(tmp_path):
    _, c, _ = _configs("sample")
    with pytest.raises(ValueError, match="model_path"):
        get_task("sample")(c, str(tmp_path / "s"))
    _, c, _ = _configs("asyrp_train")
    with pytest.raises(ValueError, match="clip_path"):
        get_task("asyrp_train")(c, str(tmp_path / "a"))
    c.clip_path = str(tmp_path)  # an existing folder: now the model path is the problem
    with pytest.raises(ValueError, match="model_path"):
        get_task("asyrp_train")(c, str(tmp_path / "a"))


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """A diffusers UNet folder (save_pretrained of a random tiny UNet2DModel) and a folder of two face images."""
    root = tmp_path_factory.mktemp("user")
    make_torch_unet(TINY, seed=0).save_pretrained(str(root / "unet"))
    (root / "faces").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / "faces" / f"face{i}.png")
    (root / "faces" / "notes.txt").write_text("not an image")
    (root / "empty").mkdir()
    return {"unet": str(root / "unet"), "faces": str(root / "faces"), "root": root}


def _torch_unet(user_files):
    """The fixture's UNet, loaded by diffusers from its folder (the independent reference)."""
    from diffusers import UNet2DModel

    return UNet2DModel.from_pretrained(user_files["unet"]).eval()


def _torch_ddim(unet, x, ts, dh=None):
    """Plain DDIM (η = 0, symmetric) in float64 torch from x [N,H,W,C] (NHWC numpy) over the descending ``ts``, the
    last step to ᾱ = 1; ``dh``: per step an [h,w,C] array added to the mid-block output (h) or None. Returns NHWC."""
    import torch
    from diffusers import DDIMScheduler

    alphas = DDIMScheduler().alphas_cumprod.double().numpy()       # linear β 1e-4..0.02, T = 1000 (the default)
    unet = unet.double()
    xt = torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x, np.float64), (0, 3, 1, 2))))
    for i, t in enumerate(ts):
        add = None if dh is None or dh[i] is None else torch.from_numpy(np.transpose(dh[i], (2, 0, 1))[None]).double()
        hk = unet.mid_block.register_forward_hook(lambda mod, a, o: o if add is None else o + add)
        with torch.no_grad():
            eps = unet(xt, torch.full((xt.shape[0],), int(t))).sample
        hk.remove()
        a_t, a_p = alphas[int(t)], (alphas[int(ts[i + 1])] if i + 1 < len(ts) else 1.0)
        x0 = (xt - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        xt = np.sqrt(a_p) * x0 + np.sqrt(1 - a_p) * eps
    unet.float()
    return xt.numpy().transpose(0, 2, 3, 1)


def test_image_folders_expand(user_files):
    files = expand_image_paths([user_files["faces"]])
    assert [os.path.basename(f) for f in files] == ["face0.png", "face1.png"]
    with pytest.raises(ValueError, match="no image files"):
        expand_image_paths([str(user_files["root"] / "empty")])


def test_missing_images_for_a_non_synthfaces_size_name_image_paths(user_files, tmp_path):
    _, c, _ = _configs("pullback")
    c.model_path = user_files["unet"]
    with pytest.raises(ValueError, match="image_paths"):
        get_task("pullback")(c, str(tmp_path))


def test_sample_job_runs_on_a_user_folder(user_files):
    _, c, _ = _configs("sample")
    c.model_path, c.num_samples, c.grid_cols, c.n_steps = user_files["unet"], 2, 2, 3
    wd = str(user_files["root"] / "sample")
    m = get_task("sample")(c, wd)
    assert m["model"] == user_files["unet"] and m["num_samples"] == 2 and np.isfinite(m["pixel_std"])
    assert os.path.isfile(os.path.join(wd, "samples.png")) and "probe_valid_face_fraction" not in m
    assert json.load(open(os.path.join(wd, "metrics.json")))["n_steps"] == 3
    # values (issue #19): the job's x_T (PRNGKey(seed) split, first half) through a float64 torch DDIM on the asyrp
    # grid 999, 499, 0 (-> ᾱ = 1), η = 0, no clipping; metrics and the PNG tiles against it
    import jax

    x_T = np.asarray(jax.random.normal(jax.random.split(jax.random.PRNGKey(c.seed))[0], (2, 16, 16, 3)))
    ref = _torch_ddim(_torch_unet(user_files), x_T, [999, 499, 0])
    np.testing.assert_allclose([m["pixel_mean"], m["pixel_std"]], [ref.mean(), ref.std()], rtol=1e-4)
    near_edge = np.mean(np.abs(np.abs(ref) - 1.0) < 1e-3)
    assert abs(m["out_of_range_fraction"] - np.mean(np.abs(ref) > 1.0)) <= near_edge
    png = np.asarray(Image.open(os.path.join(wd, "samples.png")).convert("RGB")).astype(int)
    tiles = [png[2:18, 2 + 18 * j:18 + 18 * j] for j in range(2)]    # pad 2, 16 px tiles, one row of 2
    want = np.clip(np.round((ref + 1.0) * 127.5), 0, 255)
    assert np.abs(np.stack(tiles) - want).max() <= 1


def test_pullback_job_runs_on_a_user_folder(user_files):
    _, c, _ = _configs("pullback")
    c.model_path, c.image_paths = user_files["unet"], (user_files["faces"],)
    c.n_steps, c.svd_max_iters, c.n_edit_steps = 5, 3, 2
    wd = str(user_files["root"] / "pullback")
    m = get_task("pullback")(c, wd)
    # the official float grid (park_grid="official"): n = 5 -> 999, 749.25, 499.5, ...; edit_t 600 -> 499.5
    assert m["edit_t"] == 499.5 and m["k"] == 2 and len(m["singular_values"]) == 2  # 2 images from the folder
    assert m["columns"] == ["input", "reconstruction", "v0-", "v0+", "v1-", "v1+"]
    assert m["edit_scores"] == [] and os.path.isfile(m["grid"])  # no probe at 16 px


def test_pca_job_on_model_samples_with_a_supervised_pair(user_files, monkeypatch):
    import jaxhspace.data.images as images_mod
    import jaxhspace.tasks.pca_job as job

    calls = {}
    for name in ("pca_data_h", "inverted_h", "invert"):
        _spy(monkeypatch, job, name, calls)
    _spy(monkeypatch, images_mod, "make_grid", calls)
    _, c, _ = _configs("pca")
    faces = sorted(expand_image_paths([user_files["faces"]]))
    c.model_path, c.image_paths = user_files["unet"], (user_files["faces"],)
    c.num_pca_samples, c.pca_batch_size, c.n_steps, c.k, c.n_dirs, c.scales = 5, 3, 3, 2, 1, (-1.0, 1.0)
    c.supervised_pos_paths, c.supervised_neg_paths = (faces[0],), (faces[1],)
    wd = str(user_files["root"] / "pca")
    m = get_task("pca")(c, wd)
    assert m["pca_source"] == "samples" and m["num_pca_samples"] == 5 and m["timesteps"] == [0, 499, 999]
    assert m["supervised"] == {"factor": "", "n_pos": 1, "n_neg": 1}
    assert m["columns"] == ["input", "reconstruction", "PC0 x-1", "PC0 x1", "supervised x-1", "supervised x1"]
    assert np.all(np.asarray(m["pc_std"]) > 0) and os.path.isfile(m["grid"])
    # values (issue #19): a numpy PCA of the h the job collected, per t, against its std and explained variance;
    # the grid columns against float64 torch DDIM (symmetric, η = 0, Δh at every step) from the job's inverted
    # x_T with Δh_t = scale·std_t(0)·u_t(0) (signs aligned over t to t = 999; the global sign of a PC is arbitrary,
    # so "x1" and "x-1" must match opposite signs) and Δh_t = scale·(mean h_t(pos) − mean h_t(neg)) (sign fixed)
    H = np.asarray(calls["pca_data_h"][0][2][0], np.float64)             # [S, N, h, w, C], S over t = 0, 499, 999
    hp, hn = (np.asarray(r[2], np.float64) for r in calls["inverted_h"][-2:])
    stds, comps, ratios = [], [], []
    for s in range(H.shape[0]):
        X = H[s].reshape(H.shape[1], -1)
        _, sv, vt = np.linalg.svd(X - X.mean(0), full_matrices=False)
        stds.append(sv[:2] / np.sqrt(len(X) - 1))
        comps.append(vt[:2])
        ratios.append(sv[:2] ** 2 / np.sum(sv ** 2))
    np.testing.assert_allclose(m["pc_std"], stds, rtol=1e-4)
    np.testing.assert_allclose(m["explained_variance_ratio"], ratios, rtol=1e-4, atol=1e-7)
    comps = [u * np.sign(u @ comps[-1].T).diagonal()[:, None] for u in comps]  # align to t = 999
    hw = H.shape[2:]
    pc0 = [(stds[s][0] * comps[s][0]).reshape(hw) for s in range(3)]
    sup = [(hp[s].mean(0) - hn[s].mean(0)).reshape(hw) for s in range(3)]
    x_lat = np.asarray(calls["invert"][0][2])
    grid = np.asarray(calls["make_grid"][-1][0][0])                      # [N, columns, H, W, C]
    unet = _torch_unet(user_files)

    def edit(table, scale):                                              # torch walks 999, 499, 0: rows 2, 1, 0
        return _torch_ddim(unet, x_lat, [999, 499, 0], [scale * table[s] for s in (2, 1, 0)])

    def err(col, ref):
        return np.abs(grid[:, m["columns"].index(col)] - ref).max() / np.abs(ref).max()

    assert err("reconstruction", _torch_ddim(unet, x_lat, [999, 499, 0])) < 1e-4
    plus, minus = edit(pc0, 1.0), edit(pc0, -1.0)
    sup_plus, sup_minus = edit(sup, 1.0), edit(sup, -1.0)
    errs = [min(max(err("PC0 x1", plus), err("PC0 x-1", minus)), max(err("PC0 x1", minus), err("PC0 x-1", plus))),
            err("supervised x1", sup_plus), err("supervised x-1", sup_minus)]
    print(f"\n[pca job] PC0 / supervised x1 / supervised x-1 vs torch: relative max errors {errs}", end="")
    assert max(errs) < 1e-4
    for a, b in ((plus, minus), (sup_plus, sup_minus)):
        assert np.abs(a - b).max() > 1e-2 * np.abs(a).max(), "the sign of the scale must change the image"


def test_pullback_job_edit_signs_and_boosted_sampling_values(user_files, monkeypatch):
    """Issue #19: the pullback job's grid against an independent float64 torch recomputation from its x_t and
    directions (recorded by spies): the official x-space guidance x ← x + γ[ε(x + λv, t) − ε(x, t)] with v = −v_0 for
    column "v0-" and +v_0 for "v0+", then the official float-grid DDIM (YHCustomScheduler.step, Diffusion-Pullback
    @859c012 src/utils/utils.py:1197-1235) with η = 1 from the step nearest t_boost on and η = 0 above it. n = 5:
    grid 999, 749.25, 499.5, 249.75 (-> 0); edit_t 750 -> 749.25; t_boost 400 -> η = 1 from 499.5: one deterministic
    step, then two noisy ones (step j of the continuation draws z from fold_in(PRNGKey(seed), j))."""
    import jax
    import torch
    from diffusers import DDIMScheduler

    import jaxhspace.tasks.pullback_job as job

    import jaxhspace.data.images as images_mod

    calls = {}
    for name in ("park_invert", "pullback"):
        _spy(monkeypatch, job, name, calls)
    _spy(monkeypatch, images_mod, "make_grid", calls)                  # what every save_grid writes
    _, c, _ = _configs("pullback")
    c.model_path, c.image_paths = user_files["unet"], (user_files["faces"],)
    c.n_steps, c.svd_max_iters, c.n_edit_steps, c.n_dirs, c.edit_t, c.t_boost = 5, 3, 2, 1, 750, 400
    m = get_task("pullback")(c, str(user_files["root"] / "pullback_values"))
    assert m["edit_t"] == 749.25 and m["columns"] == ["input", "reconstruction", "v0-", "v0+"]
    x_t = np.asarray(calls["park_invert"][0][2][0])                      # [N, H, W, C] at t = 749.25
    v0 = np.stack([np.asarray(r[2].v[0]) for r in calls["pullback"]])     # [N, H, W, C] top direction per image
    grid = np.asarray(calls["make_grid"][-1][0][0])                      # [N, columns, H, W, C]
    n = x_t.shape[0]

    unet = _torch_unet(user_files).double()
    alphas = DDIMScheduler().alphas_cumprod.double().numpy()

    def eps(x, t):
        with torch.no_grad():
            return unet(x, torch.full((x.shape[0],), float(t), dtype=torch.float64)).sample

    def nchw(a):
        return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(a, np.float64), (0, 3, 1, 2))))

    key = jax.random.PRNGKey(c.seed)
    ts, tns, etas = [749.25, 499.5, 249.75], [499.5, 249.75, 0.0], [0.0, 1.0, 1.0]
    finals = []
    for sign in (-1.0, 1.0):                                          # combos (0, -1), (0, +1): batch order [c*N + i]
        x, v = nchw(x_t), nchw(sign * v0)
        for _ in range(c.n_edit_steps):
            x = x + c.gamma * (eps(x + c.lam * v, 749.25) - eps(x, 749.25))
        finals.append(x)
    x = torch.cat(finals)                                             # [2N, C, H, W]
    for j, (t, tn, eta) in enumerate(zip(ts, tns, etas)):
        at, an = alphas[int(t)], alphas[int(tn)]                      # extract(): ᾱ at t.long()
        e = eps(x, t)
        p = (x - e * np.sqrt(1 - at)) / np.sqrt(at)
        if eta == 0:
            x = np.sqrt(an) * p + np.sqrt(1 - an) * e
        else:
            z = nchw(jax.random.normal(jax.random.fold_in(key, j), (2 * n,) + x_t.shape[1:]))
            sig = np.sqrt((1 - at / an) * (1 - an) / (1 - at))
            x = np.sqrt(an) * p + np.sqrt(1 - an - eta * sig ** 2) * e + eta * sig * z
    ref = x.numpy().transpose(0, 2, 3, 1).reshape(2, n, *x_t.shape[1:])
    for col, k in (("v0-", 0), ("v0+", 1)):
        got = grid[:, m["columns"].index(col)]
        err = np.abs(got - ref[k]).max() / np.abs(ref[k]).max()
        print(f"\n[pullback job, {col}] relative max error vs torch official {err:.1e}", end="")
        assert err < 1e-4, f"{col}: relative max error {err:.1e} against the torch official recomputation"
    assert np.abs(ref[0] - ref[1]).max() > 1e-2 * np.abs(ref[0]).max(), "the two signs must give different edits"
    unet.float()
