"""Train an Asyrp editor f_t (DeltaBlock) with the CLIP directional loss, as the official ``run_training``
(kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:129-410), resumably.

Per batch (images x0, inverted latents x_lat) the reversed training grid ``asyrp_timesteps(n_train)[::-1]`` is
walked from 999 down to the last grid point t ≥ t_edit. At each t, with x̂ (edited trajectory) and x̃ (reference):

1. asymmetric step (η = 0) from ``stop_gradient(x̂)`` with the current f: ε = dec(h), ε̃ = dec(h + f(h, temb)),
   P_t^edit = (x̂ − √(1−ᾱ_t) ε̃)/√ᾱ_t, x̂ ← √ᾱ_prev·P_t^edit + √(1−ᾱ_prev)·ε;
2. unedited DDIM step on x̃ (no gradient), giving P_t^ref;
3. loss = λ_CLIP·(−log((1 + cos(ΔI, ΔT))/2)) + λ_L1·cos(y_src, y_tgt)·mean|P_t^edit − P_t^ref|,
   ΔI from the *real* x0 to P_t^edit, ΔT = text_direction over the prompt templates;
4. ONE optimiser step (back-propagation through this one decoder step only).

So one optimiser step = one (batch, timestep) pair; ``steps_per_epoch = (N // batch_size) · K`` with K the number
of training grid points ≥ t_edit. The learning rate follows the official StepLR stepped once per *epoch*:
lr·gamma^⌊epoch/step_size⌋ (``optax.exponential_decay(staircase=True)`` over optimiser steps).

Exact resume: the whole train state (step, editor params, optimiser state, *and* the two in-flight trajectories
x̂, x̃) is checkpointed with orbax; the data order is a pure function of (seed, epoch) and training has no other
randomness, so an interrupted and resumed run is bit-identical to an uninterrupted one on CPU.

Differences from the official code: CLIP runs in float32 (the official ``clip.load`` on CUDA keeps fp16);
the CLIP image resize is torch's bicubic reproduced exactly by default (``clip_resize="jax"`` uses
``jax.image.resize``); per-example CLIP losses are averaged over the batch like the official ``.mean()``;
the inverted latents are cached in ``workdir/latents.npz``; the ID loss (off by default officially) is not
implemented. ``l1_use_cos=False`` drops the cos factor of the L1 term (official: on); with an untrained
CLIP, cos(src, tgt) can be ≤ 0, which turns the official L1 term into a reward for deviating (an error says so).

The trainer takes explicit arguments (:class:`AsyrpTrainSettings`, :class:`AsyrpModels`, the training images); the
``asyrp_train`` job (:mod:`jaxhspace.tasks.asyrp_train_job`) builds them from its config, loads the models and images,
and writes ``metrics.json``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
import typing
import warnings
from typing import Any, Mapping, NamedTuple, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhspace.diffusion.asyrp import asyrp_step
from jaxhspace.diffusion.ddim import ddim_step
from jaxhspace.diffusion.schedule import alpha_bar, asyrp_timesteps
from jaxhspace.losses.clip_directional import (
    IMAGENET_TEMPLATES, asyrp_clip_loss, asyrp_clip_loss_official_batch, encode_texts, image_features, l2_normalize,
    text_direction)
from jaxhspace.errors import JaxhspaceError
from jaxhspace.losses.perceptual import METRICS
from jaxhspace.models.editor import VARIANTS, DeltaBlock, EditorConfig, init_editor
from jaxhspace.models.functional import eps_fn, eps_pair
from jaxhspace.training.checkpointing import Checkpointer


@flax.struct.dataclass
class AsyrpTrainState:
    """``step`` (int32 scalar: optimiser steps done), ``params`` (editor), ``opt_state``, and the in-flight
    trajectories ``x_edit`` / ``x_ref`` ``[B, H, W, C]`` of the current batch (needed for an exact mid-batch resume)."""

    step: jax.Array
    params: Any
    opt_state: Any
    x_edit: jax.Array
    x_ref: jax.Array


# the choices of the string settings (the first is the official value)
CHOICES = {"templates": ("imagenet", "none"), "clip_resize": ("torch", "jax"),
           "clip_batch": ("per_example", "official"), "optimizer": ("sgd", "adam"), "t_select_metric": METRICS,
           "editor_variant": VARIANTS}
AT_LEAST_ONE = ("n_inv", "n_train", "n_epochs", "batch_size", "lr_step_size", "checkpoint_every", "editor_num_groups",
                "t_select_images", "t_select_steps")
NON_NEGATIVE = ("max_steps", "lambda_clip", "lambda_l1", "momentum")
POSITIVE = ("lr", "lr_gamma", "lpips_edit_th", "lpips_addnoise_th")


@dataclasses.dataclass(frozen=True)
class AsyrpTrainSettings:
    """Everything :func:`train_asyrp` needs besides the models and the images; defaults are the released runs'
    (kwonminki/Asyrp_official@a6c82dc:script_train.sh:10-38, …:README.md:96-101 and the released checkpoints'
    names, e.g. …:checkpoint/smiling_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth), as in ``configs/asyrp_train.py``.

    Attributes:
      src_text, tgt_text: the CLIP texts of the edit ("face" -> "smiling face").
      target_factor: optional SynthFaces factor the edit should move (stored in the editor's meta for scoring).
      templates: "imagenet" (ΔT averaged over the 79 StyleGAN-NADA templates, official) | "none" (raw strings).
      lambda_clip, lambda_l1: loss weights (official 1.0 / 3.0).
      l1_use_cos: weight the L1 term by cos(E_T(src), E_T(tgt)) (official).
      clip_resize: "torch" (exact torch bicubic, official) | "jax" (``jax.image.resize``).
      clip_batch: "per_example" | "official" (−log of the batch-mean directional loss, see :func:`make_loss_fn`).
      t_edit, t_boost: timesteps; -1 selects them from distance curves (:mod:`jaxhspace.editing.t_select`) with
        ``t_select_metric`` ("msl2" | "probe" | "lpips", which needs ``lpips_path``), ``t_select_images``,
        ``t_select_steps``, ``lpips_edit_th``, ``lpips_addnoise_th``, ``add_noise_from_xt``.
      n_inv, n_train: inversion / training grid sizes (released: 40 / 40).
      optimizer ("sgd" | "adam"), lr, momentum, lr_step_size (epochs), lr_gamma: SGD 0.5, StepLR(20, 0.9).
      n_epochs, batch_size, shuffle, seed: epochs over the images, batch, per-epoch shuffling, editor init / order.
      editor_num_groups, editor_variant: the DeltaBlock's GroupNorm groups (must divide the h channels) and kind
        ("ddpm" | "adm").
      checkpoint_every: optimiser steps between checkpoints; max_steps: > 0 stops there (rerun to resume).
    """

    src_text: str = "face"
    tgt_text: str = "smiling face"
    target_factor: str = ""
    templates: str = "imagenet"
    lambda_clip: float = 1.0
    lambda_l1: float = 3.0
    l1_use_cos: bool = True
    clip_resize: str = "torch"
    clip_batch: str = "per_example"
    t_edit: int = 500
    t_boost: int = 200
    t_select_metric: str = "msl2"
    lpips_path: str = ""
    t_select_images: int = 8
    t_select_steps: int = 100
    lpips_edit_th: float = 0.33
    lpips_addnoise_th: float = 1.2
    add_noise_from_xt: bool = True
    n_inv: int = 40
    n_train: int = 40
    optimizer: str = "sgd"
    lr: float = 0.5
    momentum: float = 0.0
    lr_step_size: int = 20
    lr_gamma: float = 0.9
    n_epochs: int = 1
    seed: int = 0
    batch_size: int = 1
    shuffle: bool = False
    editor_num_groups: int = 32
    editor_variant: str = "ddpm"
    checkpoint_every: int = 50
    max_steps: int = 0

    def validate(self) -> "AsyrpTrainSettings":
        """Check every field's type and range, the string choices (:data:`CHOICES`) and the combinations that
        cannot work (automatic t selection with LPIPS but no ``lpips_path``, :func:`check_t_select`); returns self.

        Raises:
          JaxhspaceError naming the field (``AsyrpTrainSettings.<field>``), its value and what is allowed.
        """
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            v, kind = getattr(self, f.name), hints[f.name]
            if kind is bool or kind is str:
                ok = isinstance(v, kind)
            elif kind is int:
                ok = isinstance(v, int) and not isinstance(v, bool)
            else:  # float: an int is fine, NaN / inf are not
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok:
                what = {bool: "a bool", str: "a str", int: "an int", float: "a finite float"}[kind]
                raise JaxhspaceError(f"AsyrpTrainSettings.{f.name} must be {what}, got {v!r} ({type(v).__name__})")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise JaxhspaceError(f"AsyrpTrainSettings.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise JaxhspaceError(f"AsyrpTrainSettings.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise JaxhspaceError(f"AsyrpTrainSettings.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in POSITIVE:
            if not getattr(self, name) > 0:
                raise JaxhspaceError(f"AsyrpTrainSettings.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("t_edit", "t_boost"):
            if getattr(self, name) < -1:
                raise JaxhspaceError(f"AsyrpTrainSettings.{name} must be a timestep >= 0 or -1 (select it from "
                                     f"distance curves), got {getattr(self, name)!r}")
        auto = self.t_edit < 0 or self.t_boost < 0
        if auto and self.t_select_metric == "lpips" and not self.lpips_path:
            raise JaxhspaceError("AsyrpTrainSettings.lpips_path is empty but t_select_metric='lpips' selects "
                                 f"t_edit={self.t_edit} / t_boost={self.t_boost} (-1 = automatic): set lpips_path to "
                                 "an LPIPS folder, or t_edit / t_boost explicitly (official 500 / 200)")
        check_t_select(self.t_boost, self.t_select_metric, self.lpips_addnoise_th, self.add_noise_from_xt)
        return self


class AsyrpModels(NamedTuple):
    """The frozen models of the training: the UNet, its params and noise schedule, the CLIP model, its params and
    tokenizer. A plain 6-tuple in this order works as well."""

    unet: Any
    unet_params: Any
    schedule: Any
    clip_model: Any
    clip_params: Any
    tokenizer: Any


# ----------------------------------------------------------------------------------------------
# Grid, schedule, optimiser
# ----------------------------------------------------------------------------------------------
def training_grid(n_train: int, t_edit: int, t0: int = 999) -> tuple[np.ndarray, np.ndarray]:
    """The official training timesteps: ``asyrp_timesteps(n_train)`` reversed, restricted to t ≥ t_edit, and the
    matching "next" timesteps (``[-1] + seq[:-1]`` in the official ascending order: the last step goes to −1,
    which does not affect the loss). Returns ``(t [K], t_prev [K])`` int64, descending."""
    seq = asyrp_timesteps(n_train, t0)
    seq = seq[seq >= t_edit]
    if seq.size == 0:
        raise ValueError(f"no training grid point >= t_edit={t_edit} for n_train={n_train}")
    nxt = np.concatenate([[-1], seq[:-1]])
    return seq[::-1].copy(), nxt[::-1].copy()


def lr_schedule(lr: float, steps_per_epoch: int, step_size: int, gamma: float) -> optax.Schedule:
    """StepLR(step_size epochs, gamma) stepped once per epoch, as a function of the optimiser step:
    lr·gamma^⌊(step // steps_per_epoch) / step_size⌋."""
    if step_size < 1 or steps_per_epoch < 1:
        raise ValueError(f"step_size ({step_size}) and steps_per_epoch ({steps_per_epoch}) must be >= 1")
    return optax.exponential_decay(lr, transition_steps=step_size * steps_per_epoch, decay_rate=gamma, staircase=True)


def make_optimizer(name: str, schedule: optax.Schedule, momentum: float = 0.0) -> optax.GradientTransformation:
    """``"sgd"`` (official: momentum 0, weight decay 0) or ``"adam"``."""
    if name == "sgd":
        return optax.sgd(schedule, momentum=momentum or None)
    if name == "adam":
        return optax.adam(schedule)
    raise ValueError(f"optimizer {name!r} not supported; use 'sgd' (official) or 'adam'")


# ----------------------------------------------------------------------------------------------
# Loss and the jitted step
# ----------------------------------------------------------------------------------------------
def make_loss_fn(unet, editor: DeltaBlock, clip_model, lambda_clip: float, lambda_l1: float,
                 clip_resize: str = "torch", clip_batch: str = "per_example"):
    """``loss(editor_params, frozen, x_edit, p_ref, feat_src, t, a_t, a_prev) -> (loss, aux)``.

    ``clip_batch``: "per_example" = mean_b of −log((1 + cos_b)/2) with each image's own x0 as source; "official" =
    Asyrp's −log of the batch-mean directional loss with the last image's x0 as every source
    (:func:`~jaxhspace.losses.clip_directional.asyrp_clip_loss_official_batch`). Equal at batch 1.

    Args (of the returned function):
      frozen: dict ``unet`` (UNet params), ``clip`` (CLIP params), ``text_dir`` [P], ``cos`` (the L1 weight factor:
        cos(y_src, y_tgt) of the raw texts, officially).
      x_edit: ``[B, H, W, C]`` current edited sample x̂_t (gradient is stopped).
      p_ref: ``[B, H, W, C]`` P_t of the unedited reference trajectory.
      feat_src: ``[B, P]`` CLIP image features of the real images x0.
      t: int32 scalar; a_t, a_prev: ᾱ_t, ᾱ_prev scalars.

    ``aux`` = dict(clip [scalar], l1 [scalar], x_next [B,H,W,C] (the next edited sample), p_edit [B,H,W,C]).
    """

    if clip_batch not in ("per_example", "official"):
        raise ValueError(f"clip_batch must be 'per_example' or 'official' (Asyrp's batch loss), got {clip_batch!r}")

    def loss_fn(eparams, frozen, x_edit, p_ref, feat_src, t, a_t, a_prev):
        up = frozen["unet"]
        x = jax.lax.stop_gradient(x_edit)
        tb = jnp.full((x.shape[0],), t, jnp.int32)
        # ε = dec(h), ε̃ = dec(h + f(h, temb)) from one encode (hs_coeff = (1, 1)); ε channels only
        eps, eps_edit = eps_pair(unet, up, x, tb, lambda h, temb: editor.apply({"params": eparams}, h, temb))
        x_next, p_edit = asyrp_step(x, eps, eps_edit, a_t, a_prev, 0.0, return_pred_x0=True)
        f_edit = image_features(clip_model, frozen["clip"], p_edit, method=clip_resize, validate=False)
        if clip_batch == "official":
            l_clip = asyrp_clip_loss_official_batch(f_edit, feat_src, frozen["text_dir"])
        else:
            l_clip = jnp.mean(asyrp_clip_loss(f_edit, feat_src, frozen["text_dir"]))
        l_l1 = jnp.mean(jnp.abs(p_edit - p_ref))
        loss = lambda_clip * l_clip + lambda_l1 * frozen["cos"] * l_l1
        return loss, {"clip": l_clip, "l1": l_l1, "x_next": x_next, "p_edit": p_edit}

    return loss_fn


@functools.lru_cache(maxsize=8)
def make_train_step(unet, editor: DeltaBlock, clip_model, optimizer_spec: tuple, lambda_clip: float,
                    lambda_l1: float, clip_resize: str = "torch", clip_batch: str = "per_example"):
    """Jitted ``step(state, frozen, x_lat, feat_src, t, t_prev, reset) -> (state, metrics)`` (state donated).

    Args:
      optimizer_spec: ``(name, lr, steps_per_epoch, lr_step_size, lr_gamma, momentum)`` (see
        :func:`optimizer_from_spec`). All arguments are hashable, and the result is cached, so repeated or
        resumed runs in one process reuse the compiled step.

    ``frozen`` = dict(unet=UNet params, clip=CLIP params, text_dir [P], cos scalar, schedule=Schedule): weights are
    arguments, not baked-in constants. ``reset`` (bool) restarts both trajectories from ``x_lat [B,H,W,C]`` (first
    timestep of a batch). The reference trajectory advances by one unedited DDIM step (η = 0), the edited one by the
    asymmetric step; then one optimiser update. metrics: loss, clip, l1 (float32 scalars).
    """
    loss_fn = make_loss_fn(unet, editor, clip_model, lambda_clip, lambda_l1, clip_resize, clip_batch)
    optimizer = optimizer_from_spec(optimizer_spec)

    def step(state: AsyrpTrainState, frozen, x_lat, feat_src, t, t_prev, reset):
        schedule = frozen["schedule"]
        a_t, a_prev = alpha_bar(schedule, t), alpha_bar(schedule, t_prev)
        x_e = jnp.where(reset, x_lat, state.x_edit)
        x_r = jnp.where(reset, x_lat, state.x_ref)
        tb = jnp.full((x_r.shape[0],), t, jnp.int32)
        eps_r = eps_fn(unet, frozen["unet"])(x_r, tb)
        x_r_next, p_ref = ddim_step(x_r, eps_r, a_t, a_prev, 0.0, return_pred_x0=True)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, frozen, x_e, p_ref, feat_src, t, a_t, a_prev)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = AsyrpTrainState(state.step + 1, params, opt_state, jax.lax.stop_gradient(aux["x_next"]), x_r_next)
        return new, {"loss": loss, "clip": aux["clip"], "l1": aux["l1"]}

    return jax.jit(step, donate_argnums=(0,))


def optimizer_from_spec(spec: tuple) -> optax.GradientTransformation:
    """``(name, lr, steps_per_epoch, lr_step_size, lr_gamma, momentum)`` -> :func:`make_optimizer` with the
    per-epoch StepLR :func:`lr_schedule`."""
    name, lr, spe, step_size, gamma, momentum = spec
    return make_optimizer(name, lr_schedule(float(lr), int(spe), int(step_size), float(gamma)), float(momentum))


# ----------------------------------------------------------------------------------------------
# Data order, texts, features, latents
# ----------------------------------------------------------------------------------------------
def epoch_order(seed: int, epoch: int, n: int, shuffle: bool) -> np.ndarray:
    """Image order of an epoch: ``arange(n)`` (official default: no shuffle) or a permutation keyed on (seed, epoch)."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def text_cosine(clip_model, clip_params, tokenizer, src: str, tgt: str) -> float:
    """cos(E_T(src), E_T(tgt)) of the raw strings (no templates), the official weight of the L1 term and of the
    t_edit threshold (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:1321-1329)."""
    f = l2_normalize(encode_texts(clip_model, clip_params, tokenizer, [src, tgt]))
    return float(jnp.sum(f[0] * f[1]))


@functools.lru_cache(maxsize=8)
def _image_features_fn(clip_model, method: str):
    """Jitted ``(clip_params, x [B,H,W,3] in [-1, 1]) -> [B, P]`` CLIP image features (cached per model)."""
    return jax.jit(lambda p, x: image_features(clip_model, p, x, method=method, validate=False))


def _latents(unet, uparams, schedule, x0, n_inv, path):
    """Inverted latents, cached in ``path`` (keyed by a hash of x0 and n_inv) so a resumed run reuses them."""
    from jaxhspace.editing.asyrp_edit import invert

    digest = hashlib.sha256(np.ascontiguousarray(x0, np.float32).tobytes() + str(n_inv).encode()).hexdigest()
    if os.path.isfile(path):
        with np.load(path) as z:
            if str(z["digest"]) == digest:
                return np.asarray(z["x_lat"])
    x_lat = np.asarray(jax.device_get(invert(unet, uparams, schedule, jnp.asarray(x0), n_inv)))
    tmp = path + ".tmp.npz"
    np.savez(tmp, x_lat=x_lat, digest=np.asarray(digest))
    os.replace(tmp, path)
    return x_lat


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------
# msl2 = mean over 3 scales of RMS(a − b)/2; for x0 in [-1, 1] and x_t ≈ N(0, I) at t = T its expected value is at
# most √(1 + 1)/2 ≈ 0.71 (measured on SynthFaces: ≈ 0.44), so no x-curve threshold at or above this can fire.
MSL2_X_CURVE_BOUND = 0.71


def check_t_select(t_boost: int, t_select_metric: str, lpips_addnoise_th: float,
                   add_noise_from_xt: bool = True) -> None:
    """Fail before any work if the automatic t_boost (``t_boost < 0``) cannot fire: with ``add_noise_from_xt``
    the threshold ``lpips_addnoise_th`` (official 1.2, LPIPS-calibrated) must be reachable by the metric's x curve.

    Raises:
      JaxhspaceError (a ValueError) saying why and what to set instead.
    """
    if int(t_boost) >= 0 or not bool(add_noise_from_xt):
        return
    th = float(lpips_addnoise_th)
    if t_select_metric == "msl2" and th >= MSL2_X_CURVE_BOUND:
        raise JaxhspaceError(f"automatic t_boost (t_boost={t_boost}) cannot fire with t_select_metric='msl2': "
                             f"lpips_addnoise_th={th:g} is an LPIPS threshold, and msl2 between pure noise and an "
                             f"image is at most ≈ {MSL2_X_CURVE_BOUND} (≈ 0.44 measured), so no t reaches it. Set "
                             "t_boost explicitly (official README: 200), use t_select_metric='lpips' with "
                             f"lpips_path, or set lpips_addnoise_th below {MSL2_X_CURVE_BOUND} for msl2")


def train_asyrp(settings: AsyrpTrainSettings, workdir: str, models: AsyrpModels | tuple, images: np.ndarray,
                sources: Optional[Mapping[str, str]] = None) -> dict:
    """Train (or resume) an Asyrp editor; export it to ``workdir/editor`` when all epochs are done.

    Args:
      settings: the :class:`AsyrpTrainSettings` (validated here, before any work).
      workdir: output folder (checkpoints/, latents.npz, train_log.jsonl, editor/).
      models: :class:`AsyrpModels` ``(unet, unet_params, schedule, clip_model, clip_params, tokenizer)``.
      images: ``[N, H, W, C]`` training images x0 in [-1, 1] (C = the UNet's in_channels); the first
        ``N // batch_size`` batches are used each epoch.
      sources: where the models came from, recorded in the metrics and the editor's meta (``model``, ``clip``);
        default "given".

    Returns:
      metrics dict: steps done, per-step ``loss`` / ``clip`` / ``l1`` lists, t_edit, cos, timing,
      ``stopped_early`` (``settings.max_steps`` reached), ``editor`` (export path, once all epochs are done). The
      ``asyrp_train`` job writes it to ``workdir/metrics.json``.

    Raises:
      JaxhspaceError: an invalid setting (naming it), images of the wrong shape or fewer than ``batch_size``,
      cos(src, tgt) <= 0 with the cos-weighted L1 term; FloatingPointError: a non-finite loss.
    """
    cfg = settings.validate()
    unet, uparams, schedule, clip_model, clip_params, tok = models
    sources = {"model": "given", "clip": "given", **dict(sources or {})}
    t_start = time.time()
    x0_all = np.asarray(images)
    c_in = int(unet.config.in_channels)
    if x0_all.ndim != 4 or x0_all.shape[-1] != c_in:
        raise JaxhspaceError(f"training images must be [N, H, W, {c_in}] (NHWC, in [-1, 1]), got shape {x0_all.shape}")
    os.makedirs(workdir, exist_ok=True)
    bs = int(cfg.batch_size)
    n_batches = x0_all.shape[0] // bs
    if n_batches < 1:
        raise JaxhspaceError(f"need at least batch_size={bs} training images, got {x0_all.shape[0]}")
    if x0_all.shape[0] % bs:
        warnings.warn(f"{x0_all.shape[0] % bs} training images do not fill a batch and are skipped each epoch",
                      stacklevel=2)

    templates = IMAGENET_TEMPLATES if cfg.templates == "imagenet" else None
    cos = text_cosine(clip_model, clip_params, tok, cfg.src_text, cfg.tgt_text)
    if cfg.l1_use_cos and cfg.lambda_l1 and cos <= 0:
        raise JaxhspaceError(f"cos(E_T({cfg.src_text!r}), E_T({cfg.tgt_text!r})) = {cos:.3f} <= 0: the official "
                             "λ_L1·cos·L1 term would reward moving away from the reference (the edit diverges). "
                             "Set l1_use_cos=False (plain λ_L1·L1) or lambda_l1=0.")
    text_dir = text_direction(clip_model, clip_params, tok, cfg.src_text, cfg.tgt_text, templates)
    t_edit, t_boost, t_info = _resolve_t(cfg, unet, uparams, schedule, x0_all, cos)
    ts, tps = training_grid(int(cfg.n_train), t_edit, schedule.num_train_timesteps - 1)
    K = ts.size
    spe = n_batches * K
    total = int(cfg.n_epochs) * spe

    x_lat_all = _latents(unet, uparams, schedule, x0_all, int(cfg.n_inv), os.path.join(workdir, "latents.npz"))
    feats_fn = _image_features_fn(clip_model, str(cfg.clip_resize))
    feat_all = np.concatenate([np.asarray(feats_fn(clip_params, jnp.asarray(x0_all[i:i + 64])))
                               for i in range(0, x0_all.shape[0], 64)])

    editor = DeltaBlock(EditorConfig.for_unet(unet.config, num_groups=int(cfg.editor_num_groups),
                                              variant=str(cfg.editor_variant)))
    eparams = init_editor(editor, jax.random.PRNGKey(int(cfg.seed)))
    opt_spec = (str(cfg.optimizer), float(cfg.lr), int(spe), int(cfg.lr_step_size), float(cfg.lr_gamma),
                float(cfg.momentum))
    optimizer = optimizer_from_spec(opt_spec)
    shape = (bs,) + x0_all.shape[1:]  # two distinct buffers: both are donated
    state = AsyrpTrainState(jnp.array(0, jnp.int32), eparams, optimizer.init(eparams), jnp.zeros(shape, jnp.float32),
                            jnp.zeros(shape, jnp.float32))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), every=int(cfg.checkpoint_every))
    state = ckpt.restore_or(state)
    start = int(state.step)
    step_fn = make_train_step(unet, editor, clip_model, opt_spec, float(cfg.lambda_clip), float(cfg.lambda_l1),
                              str(cfg.clip_resize), str(cfg.clip_batch))
    l1_weight = cos if cfg.l1_use_cos else 1.0
    frozen = {"unet": uparams, "clip": clip_params, "text_dir": text_dir, "cos": jnp.asarray(l1_weight, jnp.float32),
              "schedule": schedule}

    log_path = os.path.join(workdir, "train_log.jsonl")
    records = _read_log(log_path, start)
    max_steps = int(cfg.max_steps)
    stop_at = min(total, max_steps) if max_steps else total
    from tqdm.auto import tqdm

    bar = tqdm(range(start, stop_at), initial=start, total=total, desc="asyrp train", mininterval=2)
    order_cache: dict[int, np.ndarray] = {}
    with open(log_path, "a") as log:
        for s in bar:
            epoch, r = divmod(s, spe)
            b, k = divmod(r, K)
            if epoch not in order_cache:
                order_cache = {epoch: epoch_order(int(cfg.seed), epoch, x0_all.shape[0], bool(cfg.shuffle))}
            idx = order_cache[epoch][b * bs:(b + 1) * bs]
            state, m = step_fn(state, frozen, jnp.asarray(x_lat_all[idx]), jnp.asarray(feat_all[idx]),
                               jnp.int32(ts[k]), jnp.int32(tps[k]), jnp.bool_(k == 0))
            lr_now = float(cfg.lr) * float(cfg.lr_gamma) ** (epoch // int(cfg.lr_step_size))
            rec = {"step": s + 1, "epoch": epoch, "batch": b, "t": int(ts[k]), "lr": lr_now,
                   **{key: float(v) for key, v in m.items()}}
            if not np.isfinite(rec["loss"]):
                ckpt.close()
                raise FloatingPointError(f"loss is {rec['loss']} at step {s + 1} (t={ts[k]}); lower lr")
            records.append(rec)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{rec['loss']:.4f}", t=int(ts[k]))
            ckpt.maybe_save(s + 1, state)
    done = int(state.step)
    if done > start and done % ckpt.every:
        ckpt.save(done, state)
    ckpt.close()

    metrics = {"task": "asyrp_train", **sources, "src_text": cfg.src_text, "tgt_text": cfg.tgt_text,
               "cos_src_tgt": cos, "t_edit": t_edit, "t_boost": t_boost, **t_info, "train_timesteps": ts.tolist(),
               "steps_per_epoch": spe, "total_steps": total, "steps_done": done, "stopped_early": done < total,
               "loss": [r["loss"] for r in records], "clip": [r["clip"] for r in records],
               "l1": [r["l1"] for r in records], "wall_s_this_run": time.time() - t_start}
    if done >= total:
        from jaxhspace.editing.editor_io import save_editor

        meta = {"src_text": cfg.src_text, "tgt_text": cfg.tgt_text, "t_edit": t_edit, "t_boost": t_boost,
                "n_inv_step": int(cfg.n_inv), "n_train_step": int(cfg.n_train), "lr": float(cfg.lr),
                "optimizer": cfg.optimizer, "n_epochs": int(cfg.n_epochs), "lambda_clip": float(cfg.lambda_clip),
                "lambda_l1": float(cfg.lambda_l1), "cos_src_tgt": cos, "model": sources["model"],
                "l1_use_cos": bool(cfg.l1_use_cos), "templates": cfg.templates, "target_factor": cfg.target_factor}
        metrics["editor"] = save_editor(os.path.join(workdir, "editor"), editor, jax.device_get(state.params), meta,
                                        overwrite=True)
    return metrics


def _read_log(path: str, upto: int) -> list[dict]:
    """Per-step records of earlier runs with step <= ``upto`` (later ones were not checkpointed and are redone);
    the file is rewritten without them."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    recs = [r for r in recs if r["step"] <= upto]
    seen: dict[int, dict] = {}
    for r in recs:
        seen[r["step"]] = r
    recs = [seen[k] for k in sorted(seen)]
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    os.replace(path + ".tmp", path)
    return recs


def _resolve_t(cfg: AsyrpTrainSettings, unet, uparams, schedule, x0_all, cos) -> tuple[int, int, dict]:
    """t_edit / t_boost from the settings, or (value < 0) selected as the official ``set_t_edit_t_addnoise``."""
    t_edit, t_boost = int(cfg.t_edit), int(cfg.t_boost)
    if t_edit >= 0 and t_boost >= 0:
        return t_edit, t_boost, {"t_select": "config"}
    from jaxhspace.editing.t_select import select_t_edit_t_boost
    from jaxhspace.losses.perceptual import get_metric

    metric = get_metric(cfg.t_select_metric, cfg.lpips_path)
    sel = select_t_edit_t_boost(unet, uparams, schedule, jnp.asarray(x0_all[: int(cfg.t_select_images)]), cos,
                                metric, n_steps=int(cfg.t_select_steps), lpips_edit_th=float(cfg.lpips_edit_th),
                                lpips_addnoise_th=float(cfg.lpips_addnoise_th),
                                add_noise_from_xt=bool(cfg.add_noise_from_xt))
    info = {"t_select": sel["metric"], "t_select_thresholds": [sel["th_edit"], sel["th_boost"]]}
    return (t_edit if t_edit >= 0 else sel["t_edit"]), (t_boost if t_boost >= 0 else sel["t_boost"]), info
