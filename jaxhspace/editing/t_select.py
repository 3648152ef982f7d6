"""Choosing Asyrp's t_edit and t_boost from distance curves, as the official ``set_t_edit_t_addnoise`` /
``compute_lpips_distance`` (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:1191-1412).

The official code DDIM-inverts training images with 1000 steps and records, for each inversion step i → j,
``d(P_i, x0)`` ("x0_t" curve: how far the *predicted* x0 is from the image) and ``d(x_j, x0)`` ("x" curve: how
far the noisy sample is), both keyed by j and averaged over images (LPIPS-alex). Then

* t_edit = the smallest t with x0_t(t) ≥ th_edit, th_edit = lpips_edit_th · cos(y_src, y_tgt) (default 0.33):
  texts far apart (small cos) give a smaller threshold, reached at a smaller t, i.e. a longer editing
  interval [t_edit, T];
* t_boost = the smallest t with x(t) ≥ lpips_addnoise_th (``--add_noise_from_xt``; scripts use 1.2), or with
  x0_t(t) ≥ lpips_addnoise_th otherwise (argparse default 0.1).

Here the metric is pluggable (:mod:`jaxhspace.losses.perceptual`): LPIPS if its weights are provided, else a
documented fallback whose values are **not LPIPS-calibrated** (the thresholds then select other t than the
official ones would; prefer setting t_edit / t_boost directly, e.g. the README's 500 / 200). The inversion uses
``n_steps`` grid points of the Asyrp grid (official: 1000; default 100 here to keep it cheap).
"""
from __future__ import annotations

from functools import partial
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.diffusion.ddim import ddim_invert
from jaxhspace.diffusion.schedule import Schedule, asyrp_timesteps
from jaxhspace.models.functional import eps_fn as _eps_fn


@partial(jax.jit, static_argnames=("unet", "ts"))
def _invert_traj(params, schedule, x0, *, unet, ts):
    _, traj = ddim_invert(_eps_fn(unet, params), x0, np.asarray(ts), schedule, return_trajectory=True)
    return traj["x"], traj["pred_x0"]


def distance_curves(unet, params, schedule: Schedule, x0, metric, n_steps: int = 100) -> dict:
    """Per-t distance curves over images ``x0 [N,H,W,C]`` during a DDIM inversion on ``asyrp_timesteps(n_steps)``.

    Returns:
      dict ``t`` [n−1] (ascending, the step targets j), ``x0_t`` [n−1] mean_images metric(P_i, x0),
      ``x`` [n−1] mean_images metric(x_j, x0), ``metric`` (name), ``lpips_calibrated`` (bool).
    """
    x0 = jnp.asarray(x0, jnp.float32)
    if x0.ndim != 4:
        raise ValueError(f"x0 must be [N, H, W, C], got {x0.shape}")
    grid = asyrp_timesteps(n_steps, schedule.num_train_timesteps - 1)
    if grid.size < 2:
        raise ValueError("n_steps must be >= 2")
    xs, p0s = _invert_traj(params, schedule, x0, unet=unet, ts=tuple(int(t) for t in grid))
    d_x0t = np.array([float(np.mean(np.asarray(metric(p0s[j], x0)))) for j in range(grid.size - 1)])
    d_x = np.array([float(np.mean(np.asarray(metric(xs[j], x0)))) for j in range(grid.size - 1)])
    return {"t": grid[1:].copy(), "x0_t": d_x0t, "x": d_x, "metric": getattr(metric, "name", "custom"),
            "lpips_calibrated": bool(getattr(metric, "lpips_calibrated", False))}


def first_t_at_least(ts: Sequence[int], values: Sequence[float], th: float) -> int:
    """The smallest t (in ascending order of ``ts``) whose curve value is ≥ ``th`` (official
    kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:1373-1376).

    Raises:
      ValueError if no value reaches ``th`` (the message gives the curve's maximum).
    """
    t_arr, vals = np.asarray(ts), np.asarray(values, np.float64)
    if t_arr.shape != vals.shape or t_arr.ndim != 1 or t_arr.size == 0:
        raise ValueError(f"ts {t_arr.shape} and values {vals.shape} must be equal-length non-empty 1-D arrays")
    order = np.argsort(t_arr)
    for t, v in zip(t_arr[order], vals[order]):
        if v >= th:
            return int(t)
    raise ValueError(f"no t reaches the threshold {th:.4g} (curve max {vals.max():.4g}); the metric is probably not "
                     "LPIPS-calibrated: set t_edit / t_boost directly or lower the threshold")


def select_t_edit_t_boost(unet, params, schedule: Schedule, x0, cos: float, metric, n_steps: int = 100,
                          lpips_edit_th: float = 0.33, lpips_addnoise_th: float = 1.2, add_noise_from_xt: bool = True,
                          curves: Optional[dict] = None) -> dict:
    """Official t_edit / t_boost selection with a pluggable metric.

    Args:
      x0: ``[N, H, W, C]`` a few training images in [-1, 1] (official: 100 images).
      cos: cosine of the CLIP text features of the raw source / target strings.
      metric: a :class:`~jaxhspace.losses.perceptual.Metric` (or any ``(a, b) -> [B]``).
      lpips_edit_th: th_edit = lpips_edit_th · cos (official default 0.33).
      lpips_addnoise_th: t_boost threshold (scripts: 1.2 with ``add_noise_from_xt``; argparse default 0.1).
      add_noise_from_xt: use the x curve for t_boost (else the x0_t curve).
      curves: precomputed :func:`distance_curves` output (skips the inversion).

    Returns:
      dict ``t_edit``, ``t_boost``, ``th_edit``, ``th_boost``, ``metric``, ``lpips_calibrated``, ``curves``.
    """
    curves = curves or distance_curves(unet, params, schedule, x0, metric, n_steps)
    th_edit = float(lpips_edit_th) * float(cos)
    t_edit = first_t_at_least(curves["t"], curves["x0_t"], th_edit)
    t_boost = first_t_at_least(curves["t"], curves["x" if add_noise_from_xt else "x0_t"], float(lpips_addnoise_th))
    return {"t_edit": t_edit, "t_boost": t_boost, "th_edit": th_edit, "th_boost": float(lpips_addnoise_th),
            "metric": curves["metric"], "lpips_calibrated": curves["lpips_calibrated"], "curves": curves}
