"""Jobs and tools no test ran before (issue #19, "never exercised at all"), each checked against an independent
computation:

- the ``invert_reconstruct`` job (its README row: 8 test faces, n = 10 / 20) against a PyTorch DDIM written from the
  formula on the diffusers UNet;
- the sample job's probe metrics (``tasks.sample_job.probe_sample_scores``, behind the README's headline numbers)
  against the probe CNN re-implemented in PyTorch from its safetensors file plus NumPy (validity rules, the data's
  feature Gaussian and its 99% threshold, the Fréchet distance through an eigendecomposition instead of ``sqrtm``);
- ``training.clip_synthfaces.evaluate`` / ``direction_alignment`` against transformers' ``CLIPModel``;
- ``benchmarks/pullback_reprojection.py`` at tiny size (its reconstruction column against the PyTorch DDIM, its probe
  rows against the PyTorch probe on its own grid);
- the probe's training CLI ``python -m jaxhspace.data.probe`` (what it writes and prints, its held-out metrics
  recomputed from the weights it wrote).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from jaxhspace.data import synthfaces as sf
from jaxhspace.data.synthfaces import FACTORS
from jaxhspace.world import DEFAULT_CLIP, DEFAULT_DDPM, DEFAULT_PROBE, SAMPLER_DDPM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------
# Independent references
# ----------------------------------------------------------------------------------------------
def asyrp_grid(n: int) -> np.ndarray:
    """The official Asyrp grid (diffusion_latent.py:955-957), ascending: int(s + 1e-6) of linspace(0, 1, n)·999."""
    return np.array([int(s + 1e-6) for s in np.linspace(0, 1, n) * 999], np.int64)


def linear_alphas_cumprod(folder: str) -> np.ndarray:
    """ᾱ [T] (float64) of the linear β schedule in ``folder/scheduler_config.json`` (the shipped DDPMs': 1e-4..0.02)."""
    with open(os.path.join(folder, "scheduler_config.json")) as fh:
        c = json.load(fh)
    assert c["beta_schedule"] == "linear" and c["prediction_type"] == "epsilon", c
    return np.cumprod(1.0 - np.linspace(c["beta_start"], c["beta_end"], c["num_train_timesteps"], dtype=np.float64))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """PyTorch on one thread: on a busy 2-core machine its second thread spin-waits (13x the CPU time measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def torch_unets():
    from diffusers import UNet2DModel

    cache = {}

    def get(path):
        if path not in cache:
            cache[path] = UNet2DModel.from_pretrained(path).eval()
        return cache[path]

    return get


def torch_eps(unet, x_nhwc: np.ndarray, t: int) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(x_nhwc, np.float32).transpose(0, 3, 1, 2)))
    with torch.no_grad():
        e = unet(x, torch.full((len(x),), int(t), dtype=torch.long)).sample
    return e.numpy().transpose(0, 2, 3, 1).astype(np.float64)


def torch_ddim_invert(unet, x0: np.ndarray, grid: np.ndarray, ac: np.ndarray) -> np.ndarray:
    """DDIM inversion (DDIM eq. 12 run forward, η = 0), Asyrp's convention: the first ε at t = grid[0] on the clean
    image, x_{k+1} = √ᾱ_{k+1}·(x − √(1−ᾱ_k)ε)/√ᾱ_k + √(1−ᾱ_{k+1})·ε."""
    x = np.asarray(x0, np.float64)
    for t, tn in zip(grid[:-1], grid[1:]):
        e = torch_eps(unet, x, t)
        p = (x - np.sqrt(1 - ac[t]) * e) / np.sqrt(ac[t])
        x = np.sqrt(ac[tn]) * p + np.sqrt(1 - ac[tn]) * e
    return x


def torch_ddim_sample(unet, x: np.ndarray, grid_desc: np.ndarray, ac: np.ndarray, eta: float = 0.0, noise=None,
                      clip: bool = False) -> np.ndarray:
    """DDIM from x at grid_desc[0] down to ᾱ = 1 (DDIM eq. 12): x_prev = √ᾱ_p·P + √(1−ᾱ_p−σ²)·ε + σz with
    σ = η√((1−ᾱ_p)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_p); ``clip``: P clipped to [-1, 1] and ε re-derived from it (Ho et al.'s
    clip_denoised, diffusers' clip_sample with use_clipped_model_output). noise[i]: z of step i."""
    x = np.asarray(x, np.float64)
    prev = list(grid_desc[1:]) + [-1]
    for i, (t, tp) in enumerate(zip(grid_desc, prev)):
        a, ap = ac[t], (ac[tp] if tp >= 0 else 1.0)
        e = torch_eps(unet, x, t)
        p = (x - np.sqrt(1 - a) * e) / np.sqrt(a)
        if clip:
            p = np.clip(p, -1.0, 1.0)
            e = (x - np.sqrt(a) * p) / np.sqrt(1 - a)
        sigma = eta * np.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
        x = np.sqrt(ap) * p + np.sqrt(max(1 - ap - sigma ** 2, 0.0)) * e
        if sigma > 0:
            x = x + sigma * np.asarray(noise[i], np.float64)
    return x


def to_uint8(x) -> np.ndarray:
    """[-1, 1] -> 0..255 as images are displayed (rounded in float32, like the saved grids)."""
    return np.clip(np.round((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grid_tiles(png: str, rows: int, cols: int, size: int, upscale: int, pad: int = 2) -> np.ndarray:
    """Tiles [rows, cols, size, size, 3] (uint8) read back from a saved grid (white pad, nearest upscale)."""
    g = np.asarray(Image.open(png).convert("RGB"))
    s = size * upscale
    assert g.shape == (rows * (s + pad) + pad, cols * (s + pad) + pad, 3), g.shape
    return np.stack([np.stack([g[pad + i * (s + pad):pad + i * (s + pad) + s:upscale,
                                 pad + j * (s + pad):pad + j * (s + pad) + s:upscale] for j in range(cols)])
                     for i in range(rows)])


class TorchProbe:
    """The attribute probe (``jaxhspace.data.probe.ProbeCNN``) re-implemented in PyTorch from its safetensors file:
    3x3 convs with Flax/TF "SAME" padding (stride 2 on an even size: 0 before, 1 after), GELU in its tanh form (Flax's
    default), NHWC flatten into the dense feature layer, one linear head per factor; 64-px inputs 2x2-averaged."""

    def __init__(self, folder: str):
        from safetensors.numpy import load_file

        self.w = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in
                  load_file(os.path.join(folder, "probe.safetensors")).items()}
        with open(os.path.join(folder, "config.json")) as fh:
            self.strides = json.load(fh)["model"]["strides"]

    def __call__(self, images):
        """(heads {factor: float64 [N] or [N, K] logits}, features float64 [N, D]) of images [N, 32|64, 32|64, 3]."""
        x = np.asarray(images, np.float32)
        if x.shape[1] == 64:
            x = x.reshape(-1, 32, 2, 32, 2, 3).mean(axis=(2, 4))
        heads, feats = [], []
        for c in range(0, len(x), 512):
            h, f = self._forward(torch.from_numpy(np.ascontiguousarray(x[c:c + 512].transpose(0, 3, 1, 2))))
            heads.append(h)
            feats.append(f)
        return {k: np.concatenate([h[k] for h in heads]) for k in heads[0]}, np.concatenate(feats)

    def _forward(self, x):
        with torch.no_grad():
            for i, s in enumerate(self.strides):
                size = x.shape[-1]
                pad = max((-(-size // s) - 1) * s + 3 - size, 0)
                x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
                x = F.conv2d(x, self.w[f"conv_{i}/kernel"].permute(3, 2, 0, 1), self.w[f"conv_{i}/bias"], stride=s)
                x = F.gelu(x, approximate="tanh")
            feats = F.gelu(x.permute(0, 2, 3, 1).reshape(len(x), -1) @ self.w["dense/kernel"] + self.w["dense/bias"],
                           approximate="tanh")
            heads = {k: (feats @ self.w[f"head_{k}/kernel"] + self.w[f"head_{k}/bias"]).numpy().astype(np.float64)
                     for k in FACTORS}
        return {k: (v if FACTORS[k].kind == "categorical" else v[:, 0]) for k, v in heads.items()}, \
            feats.numpy().astype(np.float64)


def ref_scores(heads) -> dict:
    """Probe reads from logits: continuous value in the factor's units, binary P(1), categorical probabilities."""
    out = {}
    for k, f in FACTORS.items():
        h = heads[k]
        if f.kind == "continuous":
            out[k] = (h + 1.0) / 2.0 * (f.high - f.low) + f.low
        elif f.kind == "binary":
            out[k] = 1.0 / (1.0 + np.exp(-h))
        else:
            e = np.exp(h - h.max(-1, keepdims=True))
            out[k] = e / e.sum(-1, keepdims=True)
    return out


def ref_valid(scores) -> np.ndarray:
    """'Every factor read in range' (README): continuous within its range widened by 10%, binary and categorical
    reads confident (max probability >= 0.75)."""
    ok = np.ones(len(scores["smile"]), bool)
    for k, f in FACTORS.items():
        v = scores[k]
        if f.kind == "continuous":
            span = f.high - f.low
            ok &= (v >= f.low - 0.1 * span) & (v <= f.high + 0.1 * span)
        elif f.kind == "binary":
            ok &= np.maximum(v, 1.0 - v) >= 0.75
        else:
            ok &= v.max(-1) >= 0.75
    return ok


def ref_frechet(a, b) -> float:
    """|μa − μb|² + tr Sa + tr Sb − 2 tr (Sa Sb)^½, the last trace as Σ √λ(Sa^½ Sb Sa^½) (eigh, no sqrtm)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, q = np.linalg.eigh(sa)
    ra = (q * np.sqrt(np.clip(w, 0, None))) @ q.T
    lam = np.linalg.eigvalsh(ra @ sb @ ra)
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(sa) + np.trace(sb)
                 - 2.0 * np.sum(np.sqrt(np.clip(lam, 0, None))))


@pytest.fixture(scope="module")
def ref_probe():
    """The PyTorch probe and the data's feature Gaussian built from it: mean and covariance (+1e-4·I) of 4096
    SynthFaces faces (seed 777), threshold = the 0.99 quantile of the squared Mahalanobis distances of 1024 others
    (seed 778): ``probe.in_distribution``'s documented definition."""
    net = TorchProbe(DEFAULT_PROBE)
    fit = net(sf.generate(777, 4096)[0])[1]
    mean = fit.mean(0)
    prec = np.linalg.inv(np.cov(fit, rowvar=False) + 1e-4 * np.eye(fit.shape[1]))

    def dist(f):
        d = f - mean
        return np.einsum("nd,de,ne->n", d, prec, d)

    threshold = np.quantile(dist(net(sf.generate(778, 1024)[0])[1]), 0.99)
    return net, (lambda f: dist(f) <= threshold)


def ref_probe_sample_scores(ref_probe, x0, data_seed) -> dict:
    """Independent twin of ``tasks.sample_job.probe_sample_scores`` (its docstring: shares of valid / typical / both,
    Fréchet distance to N data faces of ``data_seed`` and data-vs-data (seed + 1) at the same N, data's shares)."""
    net, typical_fn = ref_probe
    heads, feats = net(x0)
    valid, typical = ref_valid(ref_scores(heads)), typical_fn(feats)
    n = len(x0)
    out = {"probe_valid_face_fraction": float(np.mean(valid)),
           "probe_in_distribution_fraction": float(np.mean(typical)),
           "probe_valid_and_in_distribution_fraction": float(np.mean(valid & typical))}
    data_a = sf.generate(data_seed, n, size=x0.shape[1])[0]
    data_b = sf.generate(data_seed + 1, n, size=x0.shape[1])[0]
    ha, fa = net(data_a)
    out["probe_frechet_distance"] = ref_frechet(feats, fa)
    out["probe_frechet_distance_data_vs_data"] = ref_frechet(net(data_b)[1], fa)
    out["probe_valid_face_fraction_data"] = float(np.mean(ref_valid(ref_scores(ha))))
    out["probe_in_distribution_fraction_data"] = float(np.mean(typical_fn(fa)))
    return out


def assert_probe_scores_match(got: dict, ref: dict):
    assert set(got) == set(ref), sorted(set(got) ^ set(ref))
    for k, v in ref.items():
        if "frechet" in k:
            assert got[k] == pytest.approx(v, rel=1e-4), (k, got[k], v)
        else:
            assert got[k] == v, (k, got[k], v)


# ----------------------------------------------------------------------------------------------
# Sample job: probe metrics
# ----------------------------------------------------------------------------------------------
def test_probe_sample_scores_against_torch_probe_and_numpy(ref_probe):
    """Faces, colour-cast faces and noise, so that neither share is 0 or 1 and 'typical' differs from 'valid'."""
    from jaxhspace.tasks.sample_job import probe_sample_scores

    rng = np.random.default_rng(0)
    faces = sf.generate(4242, 14)[0]
    cast = np.clip(0.45 * sf.generate(4243, 10)[0] + np.array([0.55, -0.35, 0.25], np.float32), -1, 1)
    noise = np.clip(rng.normal(0.0, 0.6, (8, 32, 32, 3)), -1, 1).astype(np.float32)
    x0 = np.concatenate([faces, cast, noise])
    got = probe_sample_scores(x0, data_seed=31)
    ref = ref_probe_sample_scores(ref_probe, x0, 31)
    print("\n", {k: round(v, 4) for k, v in got.items()})
    assert_probe_scores_match(got, ref)
    assert 0 < ref["probe_valid_face_fraction"] < 1 and 0 < ref["probe_in_distribution_fraction"] < 1
    assert ref["probe_valid_and_in_distribution_fraction"] < ref["probe_valid_face_fraction"]
    assert ref["probe_frechet_distance"] > 1.5 * ref["probe_frechet_distance_data_vs_data"]


def test_sample_job_probe_metrics_headline_setting(ref_probe, torch_unets, tmp_path):
    """The sample job in the README's headline setting (sampler DDPM, x0 clipped, η = 1) at 16 samples / 8 steps:
    its samples equal a PyTorch DDIM on the diffusers UNet with the job's x_T and per-step noise (up to the PNG's
    8 bits), and every probe metric it reports equals the independent recomputation on those samples."""
    from configs.sample import get_config
    from jaxhspace.tasks import get_task

    c = get_config()
    c.num_samples, c.n_steps, c.clip_sample, c.eta, c.grid_cols, c.upscale = 16, 8, True, 1.0, 8, 1
    m = get_task("sample")(c, str(tmp_path))
    # the job's random draws: x_T from the first half of PRNGKey(seed), step i's z from fold_in(second half, i)
    key_x, key_eta = jax.random.split(jax.random.PRNGKey(c.seed))
    x_T = np.asarray(jax.random.normal(key_x, (16, 32, 32, 3)))
    z = [np.asarray(jax.random.normal(jax.random.fold_in(key_eta, i), (16, 32, 32, 3))) for i in range(8)]
    x0 = torch_ddim_sample(torch_unets(SAMPLER_DDPM), x_T, asyrp_grid(8)[::-1], linear_alphas_cumprod(SAMPLER_DDPM),
                           eta=1.0, noise=z, clip=True)
    tiles = grid_tiles(m["grid"], 2, 8, 32, 1).reshape(16, 32, 32, 3).astype(int)
    assert np.mean(np.abs(tiles - to_uint8(x0)) <= 1) > 0.999 and np.abs(tiles - to_uint8(x0)).max() <= 2
    ref = ref_probe_sample_scores(ref_probe, x0.astype(np.float32), c.get("data_seed", 12345))
    print("\n", {k: round(v, 4) for k, v in m.items() if k.startswith("probe")})
    assert_probe_scores_match({k: v for k, v in m.items() if k.startswith("probe")}, ref)
    assert ref["probe_valid_face_fraction"] > 0.5  # the sampler makes faces (README: 92% at 50 steps, 512 samples)
    assert m["pixel_mean"] == pytest.approx(x0.mean(), abs=1e-4) and m["pixel_std"] == pytest.approx(x0.std(), 1e-4)
    assert m["out_of_range_fraction"] == 0.0 and m["clip_sample"] is True and m["eta"] == 1.0
    with open(tmp_path / "metrics.json") as fh:
        assert {k: v for k, v in json.load(fh).items() if k.startswith("probe")} == pytest.approx(
            {k: v for k, v in m.items() if k.startswith("probe")}, rel=1e-12)


# ----------------------------------------------------------------------------------------------
# invert_reconstruct job
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ns, readme", [((10, 20), (7.7e-2, 2.9e-2)),
                                        pytest.param((50, 100), (2.3e-3, 3.9e-4), marks=pytest.mark.slow)])
def test_invert_reconstruct_job_readme_row(ns, readme, torch_unets, tmp_path):
    """The README row "DDIM inversion + reconstruction MSE (8 test faces, Asyrp grid)" for the editing DDPM
    (n = 10 / 20 / 50 / 100: 7.7e-2 / 2.9e-2 / 2.3e-3 / 3.9e-4), the job against a PyTorch DDIM inversion +
    reconstruction of the same faces: MSE, max |error|, the latent's std and the grid's columns (input, then one
    reconstruction per n)."""
    from configs.invert_reconstruct import get_config
    from jaxhspace.tasks import get_task

    c = get_config()
    c.n_steps_list, c.upscale = ns, 1
    assert (c.model_path, c.num_images, c.data_seed, c.spacing) == ("", 8, 12345, "asyrp")  # the README's setting
    m = get_task("invert_reconstruct")(c, str(tmp_path))
    x0 = sf.generate(12345, 8, size=32)[0]
    unet, ac = torch_unets(DEFAULT_DDPM), linear_alphas_cumprod(DEFAULT_DDPM)
    recs = []
    for row, n, value in zip(m["table"], ns, readme):
        grid = asyrp_grid(n)
        lat = torch_ddim_invert(unet, x0, grid, ac)
        rec = torch_ddim_sample(unet, lat, grid[::-1], ac)
        recs.append(rec)
        err = rec - x0.astype(np.float64)
        print(f"\n n={n}: job mse {row['mse']:.6g} (torch {np.mean(err ** 2):.6g}), max_abs {row['max_abs']:.5g} "
              f"(torch {np.abs(err).max():.5g}), latent_std {row['latent_std']:.6g} (torch {lat.std():.6g})", end="")
        assert row["n"] == n
        assert row["mse"] == pytest.approx(np.mean(err ** 2), rel=1e-3)
        assert row["max_abs"] == pytest.approx(np.abs(err).max(), abs=1e-3)
        assert row["latent_std"] == pytest.approx(lat.std(), rel=1e-4)
        assert abs(row["mse"] - value) <= 0.5 * 10.0 ** (np.floor(np.log10(value)) - 1)  # README: 2 significant digits
    assert m["table"][1]["mse"] < 0.5 * m["table"][0]["mse"]  # the DDIM paper's trend
    tiles = grid_tiles(m["grid"], 8, 3, 32, 1).astype(int)
    assert np.array_equal(tiles[:, 0], to_uint8(x0))
    for j, rec in enumerate(recs, start=1):
        assert np.mean(np.abs(tiles[:, j] - to_uint8(rec)) <= 1) > 0.999
    assert m["task"] == "invert_reconstruct" and m["spacing"] == "asyrp" and m["precision"] == "highest"


# ----------------------------------------------------------------------------------------------
# clip_synthfaces.evaluate / direction_alignment
# ----------------------------------------------------------------------------------------------
class TorchCLIP:
    """transformers' CLIPModel and CLIPTokenizer on the shipped SynthFaces CLIP folder; images preprocessed as
    Asyrp / StyleGAN-NADA do ((x + 1)/2, bicubic resize to the tower's size, CLIP mean/std)."""

    def __init__(self, folder):
        from transformers import CLIPModel, CLIPTokenizer
        from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

        self.model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
        self.tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        self.mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)

    @staticmethod
    def _unit(a):
        return a / np.linalg.norm(a, axis=-1, keepdims=True)

    def images(self, x):
        """Unit image features [N, P] (float64) of images [N, H, W, 3] in [-1, 1]."""
        s = self.model.config.vision_config.image_size
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))
        t = F.interpolate((t + 1) / 2, size=(s, s), mode="bicubic", align_corners=False)
        with torch.no_grad():
            out = self.model.get_image_features(pixel_values=(t - self.mean) / self.std)
        return self._unit(getattr(out, "pooler_output", out).numpy().astype(np.float64))

    def texts(self, texts):
        """Unit text features [N, P] (float64), tokens padded to the model's context length."""
        enc = self.tok(list(texts), padding="max_length", truncation=True, return_tensors="pt",
                       max_length=self.model.config.text_config.max_position_embeddings)
        with torch.no_grad():
            out = self.model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        return self._unit(getattr(out, "pooler_output", out).numpy().astype(np.float64))

    def text_direction(self, src, tgt, templates):
        """StyleGAN-NADA's ΔT: the normalised mean over templates of unit(E(tgt)) − unit(E(src))."""
        templates = templates or ["{}"]
        d = (self.texts([t.format(tgt) for t in templates]) - self.texts([t.format(src) for t in templates])).mean(0)
        return d / np.linalg.norm(d)


def test_clip_evaluate_and_direction_alignment_against_transformers():
    """``evaluate`` (zero-shot accuracy with raw prompts and with the ImageNet template ensemble, and the edit / text
    direction cosines) on 48 held-out faces, each number recomputed with transformers' CLIPModel; and
    ``direction_alignment`` with a custom edit and raw prompts."""
    from jaxhspace.checkpoints.clip import load_clip, load_clip_tokenizer
    from jaxhspace.losses.clip_directional import IMAGENET_TEMPLATES
    from jaxhspace.training import clip_synthfaces as cs

    model, params = load_clip(DEFAULT_CLIP)
    tok = load_clip_tokenizer(DEFAULT_CLIP)
    seed, n = 20240917, 48
    got = cs.evaluate(model, params, tok, seed, n)
    ref_clip = TorchCLIP(DEFAULT_CLIP)
    images, factors = sf.generate(seed, n)
    img = ref_clip.images(images)
    # the zero-shot tasks from the factors as the docstring states them (labels -1 = left out)
    s, e = factors["smile"], factors["eye_size"]
    smile3 = np.where(s > sf.SMILE_THRESHOLD, 2, np.where(s < -sf.SMILE_THRESHOLD, 0, 1))
    eyes3 = np.where(e > sf.BIG_EYES, 2, np.where(e < sf.SMALL_EYES, 0, 1))
    tasks = {
        "smile_3way": (["a frowning face", "a neutral face", "a smiling face"], smile3),
        "smile_binary": (["a frowning face", "a smiling face"], np.where(np.abs(s) > 0.4, (s > 0).astype(int), -1)),
        "hair_color": ([f"a face with {c} hair" for c in sf.HAIR_COLORS], factors["hair_color"]),
        "glasses": (["a face with no glasses", "a face with glasses"], factors["glasses"]),
        "background": ([f"a face on a {c} background" for c in sf.BACKGROUNDS], factors["background"]),
        "eyes_binary": (["a face with small eyes", "a face with big eyes"], np.where(eyes3 == 1, -1, eyes3 // 2)),
    }
    for key, templates in (("zero_shot", None), ("zero_shot_templates", IMAGENET_TEMPLATES)):
        ref = {}
        for task, (prompts, labels) in tasks.items():
            if templates is None:
                txt = ref_clip.texts(prompts)
            else:  # CLIP's prompt ensembling: the mean of unit features over templates, renormalised
                txt = ref_clip._unit(np.stack([ref_clip.texts([t.format(p[2:]) for t in templates]).mean(0)
                                               for p in prompts]))
            keep = np.asarray(labels) >= 0
            ref[task] = float(np.mean(np.argmax(img @ txt.T, 1)[keep] == np.asarray(labels)[keep]))
            ref[f"{task}_n"] = int(keep.sum())
        print(f"\n{key}: {ref}", end="")
        assert got[key] == ref
    edits = {"smile": ("smile", -0.8, 0.8, "frowning face", "smiling face"),
             "neutral_to_smiling": ("smile", 0.0, 0.8, "face", "smiling face"),
             "red_hair": ("hair_color", 0, 3, "face with black hair", "face with red hair"),
             "glasses": ("glasses", 0, 1, "face", "face with glasses")}  # the documented default edits

    def alignment(edits, templates):
        out = {}
        for name, (k, a, b, src, tgt) in edits.items():
            ia = ref_clip.images(sf.render(dict(factors, **{k: np.full_like(factors[k], a)})))
            ib = ref_clip.images(sf.render(dict(factors, **{k: np.full_like(factors[k], b)})))
            out[name] = float(np.mean(ref_clip._unit(ib - ia) @ ref_clip.text_direction(src, tgt, templates)))
        return out

    ref_dir = alignment(edits, IMAGENET_TEMPLATES)
    print(f"\ndirection_cosine: {got['direction_cosine']} (transformers {ref_dir})")
    assert got["direction_cosine"] == pytest.approx(ref_dir, abs=1e-5)
    assert min(ref_dir.values()) > 0.3  # the shipped CLIP sees the edits in the text's direction
    custom = {"purple_bg": ("background", 0, 2, "face on a gray background", "face on a purple background")}
    got_c = cs.direction_alignment(model, params, tok, factors, custom, templates=None)
    assert got_c == pytest.approx(alignment(custom, None), abs=1e-5)


# ----------------------------------------------------------------------------------------------
# benchmarks/pullback_reprojection.py
# ----------------------------------------------------------------------------------------------
def ref_factor_changes(net, before, after) -> dict:
    """Mean probe change per factor (probe.edit_effect's normalisation): continuous |Δ|/range, binary |ΔP(1)|,
    categorical total variation ½Σ|Δp|."""
    sb, sa = ref_scores(net(before)[0]), ref_scores(net(after)[0])
    out = {}
    for k, f in FACTORS.items():
        if f.kind == "continuous":
            out[k] = float(np.mean(np.abs(sa[k] - sb[k]))) / (f.high - f.low)
        elif f.kind == "binary":
            out[k] = float(np.mean(np.abs(sa[k] - sb[k])))
        else:
            out[k] = float(np.mean(0.5 * np.abs(sa[k] - sb[k]).sum(-1)))
    return out


@pytest.mark.slow  # ≈35 s CPU: every pullback SVD call re-linearises and re-compiles the UNet (two calls here)
def test_pullback_reprojection_benchmark_tiny(torch_unets, ref_probe, tmp_path, capsys):
    """One face, one direction, k = 2, one edit step, no boosting: the JSON's structure, the edit time (the Asyrp grid
    point nearest 600), the grid's input and reconstruction columns against SynthFaces and a PyTorch DDIM inversion to
    edit_t and back, and the probe rows against the PyTorch probe on the grid's own (8-bit) columns."""
    from benchmarks import pullback_reprojection

    out = str(tmp_path / "pr.json")
    pullback_reprojection.main(["--num-images", "1", "--dirs", "0", "--k", "2", "--n-steps", "10", "--edit-t", "600",
                                "--n-edit-steps", "1", "--t-boost", "0", "--svd-tol", "1e-2", "--out", out])
    printed = capsys.readouterr().out
    with open(out) as fh:
        res = json.load(fh)
    assert set(res) == {"model", "edit_t", "k", "gamma", "lam", "n_edit_steps", "num_images", "dirs", "rows", "wall_s",
                        "svd_products", "grid", "columns"}
    grid = asyrp_grid(10)
    i_t = int(np.argmin(np.abs(grid - 600)))
    assert res["edit_t"] == grid[i_t] == 555 and (res["k"], res["n_edit_steps"], res["dirs"]) == (2, 1, [0])
    assert res["columns"] == ["input", "reconstruction", "v0 fixed", "v0 reprojected"]
    assert res["grid"] == os.path.splitext(out)[0] + ".png"
    assert all(isinstance(v, int) and v > 0 for v in res["svd_products"].values())
    tiles = grid_tiles(res["grid"], 1, 4, 32, 3)[0].astype(int)
    x0 = sf.generate(12345, 1, size=32)[0]
    assert np.array_equal(tiles[0], to_uint8(x0)[0])
    unet, ac = torch_unets(DEFAULT_DDPM), linear_alphas_cumprod(DEFAULT_DDPM)
    rec = torch_ddim_sample(unet, torch_ddim_invert(unet, x0, grid[:i_t + 1], ac), grid[:i_t + 1][::-1], ac)
    d = np.abs(tiles[1] - to_uint8(rec)[0])
    assert d.max() <= 2 and np.mean(d <= 1) > 0.999
    net = ref_probe[0]
    shown = tiles.astype(np.float32) / 127.5 - 1.0  # what the grid shows, clipped to [-1, 1] like the scores
    assert [(r["direction"], r["method"]) for r in res["rows"]] == [(0, "fixed"), (0, "reprojected")]
    for r, col in zip(res["rows"], (2, 3)):
        ref = ref_factor_changes(net, shown[1:2], shown[col:col + 1])
        print(f"\n{r['method']}: {r['changes']}\n   from the grid: {ref}", end="")
        assert r["changes"] == pytest.approx(ref, abs=0.01)  # measured: 3e-3 (the grid's 8-bit rounding)
        assert r["dominant"] == max(r["changes"], key=r["changes"].get)
        assert r["dominant_change"] == r["changes"][r["dominant"]]
        assert r["max_leakage"] == max(v for k, v in r["changes"].items() if k != r["dominant"])
    # fixed: no turn by definition; re-projected with one step: the only re-projection happens at x_t itself, where
    # the direction already lies in the top-k tangent space (same point, same SVD key)
    assert res["rows"][0]["turn_deg_mean"] == 0.0 and 0.0 <= res["rows"][1]["turn_deg_mean"] < 0.5
    assert f"| v0 | fixed | {res['rows'][0]['dominant']} | {res['rows'][0]['dominant_change']:.3f} |" in printed


# ----------------------------------------------------------------------------------------------
# python -m jaxhspace.data.probe
# ----------------------------------------------------------------------------------------------
def test_probe_training_cli(tmp_path):
    """Three training steps through the CLI in a fresh process: the folder it writes (weights + config.json with the
    model, metrics, command and factor table), the metrics it prints, and its held-out 'clean' metrics recomputed from
    the written weights with the PyTorch probe (R² = 1 − SS_res/SS_tot, accuracies at p = 0.5 / argmax) on the
    documented held-out set (seed (seed + 1, 2**31 − 1), 2048 faces)."""
    out = tmp_path / "probe"
    args = ["--out", str(out), "--steps", "3", "--batch", "8", "--lr", "0.002", "--seed", "5"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "jaxhspace.data.probe", *args], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    assert sorted(os.listdir(out)) == ["config.json", "probe.safetensors"]
    with open(out / "config.json") as fh:
        cfg = json.load(fh)
    assert cfg["metrics"] == printed
    assert cfg["model"] == {"channels": [32, 32, 64, 64, 64], "strides": [1, 2, 1, 2, 2], "dense": 128}
    assert cfg["command"] == "python -m jaxhspace.data.probe " + " ".join(args)
    assert cfg["factors"] == {k: {"kind": f.kind, "low": f.low, "high": f.high, "classes": list(f.classes)}
                              for k, f in FACTORS.items()}
    assert {k: printed[k] for k in ("steps", "batch_size", "lr", "seed", "eval_n")} == {
        "steps": 3, "batch_size": 8, "lr": 0.002, "seed": 5, "eval_n": 2048}
    assert set(printed["clean"]) == set(printed["augmented"]) == set(FACTORS)
    images, factors = sf.generate((6, 2**31 - 1), 2048)
    pred = ref_scores(TorchProbe(str(out))(images)[0])
    for k, f in FACTORS.items():
        y = np.asarray(factors[k])
        if f.kind == "continuous":
            ref = 1.0 - np.sum((pred[k] - y) ** 2) / np.sum((y - y.mean()) ** 2)
            assert printed["clean"][k] == pytest.approx(ref, rel=1e-4, abs=1e-4), k
        else:
            hit = (pred[k] > 0.5) == (y == 1) if f.kind == "binary" else pred[k].argmax(-1) == y
            assert abs(printed["clean"][k] - np.mean(hit)) <= 2 / 2048, k  # a read at p ≈ 0.5 may flip
    # it trained: the written weights are not the initialisation of its seed
    from jaxhspace.data.probe import ProbeCNN, load_probe

    init = ProbeCNN().init(jax.random.split(jax.random.PRNGKey(5))[1], np.zeros((1, 32, 32, 3), np.float32))["params"]
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), load_probe(str(out))[1], init)
    assert max(jax.tree.leaves(moved)) > 1e-4
