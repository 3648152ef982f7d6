"""Noise schedules (β, ᾱ) and timestep grids for DDIM sampling, inversion and Asyrp.

Conventions used everywhere in :mod:`jaxhspace.diffusion`:

* Timesteps are 0-based integers in ``[0, num_train_timesteps)``; ``ᾱ_t = prod_{s<=t} (1 - β_s)``.
* The timestep **-1** stands for the clean image: ``ᾱ_{-1} = 1``. It is the "previous" timestep of the
  last sampling step (Asyrp: ``seq_next = [-1] + seq[:-1]``; diffusers: ``final_alpha_cumprod`` with
  ``set_alpha_to_one=True``). diffusers' ``set_alpha_to_one=False`` instead uses ``ᾱ_0`` for the final
  step; reproduce it by passing ``final=0`` to :func:`sampling_pairs` (or ``set_alpha_to_one=False`` to
  :func:`diffusers_prev_timesteps`).
* Sampling grids are **descending** (``ddim_timesteps``, like diffusers' ``scheduler.timesteps``);
  the Asyrp grid from :func:`asyrp_timesteps` is **ascending** (as in the official code) and is the one
  DDIM inversion walks; reverse it (``seq[::-1]``) to sample.

Precision: β and ᾱ are computed in float64 NumPy and stored as float32 ``jnp`` arrays. This is what
the official Asyrp code does (float64 ``np.cumprod``, cast to ``torch.float`` by ``extract``).
diffusers computes β and the cumulative product in float32 torch, which accumulates rounding: its ᾱ
differs from ours by up to 2.4e-7 (linear), 4.8e-7 (scaled_linear), 3.0e-7 (squaredcos_cap_v2)
absolute, while ours is within 6e-8 relative of the float64 product (tests/test_ddim.py).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
SPACINGS = ("leading", "trailing", "linspace")


@struct.dataclass
class Schedule:
    """A discrete-time variance-preserving noise schedule (a pytree; safe to pass through ``jax.jit``).

    Attributes:
      betas: [T] float32, β_t.
      alphas_cumprod: [T] float32, ᾱ_t = prod_{s<=t}(1-β_s) (computed in float64, then cast).
      num_train_timesteps: T (static, not a pytree leaf).
    """

    betas: jax.Array
    alphas_cumprod: jax.Array
    num_train_timesteps: int = struct.field(pytree_node=False, default=1000)


# ----------------------------------------------------------------------------------------------
# β schedules
# ----------------------------------------------------------------------------------------------
def _cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """Glide / iDDPM cosine schedule, exactly diffusers' ``betas_for_alpha_bar`` (float64 here)."""

    def f(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    T = num_train_timesteps
    return np.array([min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)], dtype=np.float64)


def make_betas(
    beta_schedule: str = "linear",
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    num_train_timesteps: int = 1000,
) -> np.ndarray:
    """β_t as a float64 NumPy array of shape [T].

    Args:
      beta_schedule: ``"linear"`` (DDPM / Asyrp: ``linspace(beta_start, beta_end, T)``),
        ``"scaled_linear"`` (``linspace(√beta_start, √beta_end, T)**2``, latent diffusion),
        ``"squaredcos_cap_v2"`` (Glide cosine, β capped at 0.999; ignores beta_start/end) or
        ``"sigmoid"`` (diffusers' DDPMScheduler: ``sigmoid(linspace(-6, 6, T))·(end-start)+start``).
      beta_start, beta_end: endpoints of the linear schedules.
      num_train_timesteps: T.

    Raises:
      ValueError: unknown schedule name or T < 1.
    """
    T = int(num_train_timesteps)
    if T < 1:
        raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
    if beta_schedule == "linear":
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if beta_schedule == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        return _cosine_betas(T)
    if beta_schedule == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, T, dtype=np.float64)))
        return s * (beta_end - beta_start) + beta_start
    raise ValueError(f"unknown beta_schedule {beta_schedule!r}; expected one of {BETA_SCHEDULES}")


def schedule_from_betas(betas: Sequence[float] | np.ndarray) -> Schedule:
    """Build a :class:`Schedule` from explicit β values ([T], each in (0, 1]); ᾱ = cumprod in float64."""
    b = np.asarray(betas, dtype=np.float64)
    if b.ndim != 1 or b.size < 1:
        raise ValueError(f"betas must be a non-empty 1-D sequence, got shape {b.shape}")
    if not np.all(np.isfinite(b)) or np.any(b <= 0) or np.any(b > 1):
        raise ValueError("betas must be finite and in (0, 1]")
    ac = np.cumprod(1.0 - b)
    return Schedule(
        betas=jnp.asarray(b, dtype=jnp.float32),
        alphas_cumprod=jnp.asarray(ac, dtype=jnp.float32),
        num_train_timesteps=int(b.size),
    )


def make_schedule(
    beta_schedule: str = "linear",
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    num_train_timesteps: int = 1000,
) -> Schedule:
    """The :class:`Schedule` for a named β schedule (see :func:`make_betas`).

    The defaults are the DDPM / Asyrp schedule (linear 1e-4 → 0.02, T = 1000). ᾱ matches diffusers'
    ``DDIMScheduler(...).alphas_cumprod`` to ≤ 1e-6 (diffusers accumulates in float32; we use float64).
    """
    return schedule_from_betas(make_betas(beta_schedule, beta_start, beta_end, num_train_timesteps))


def schedule_from_config(config: Mapping[str, Any], prediction_types: Sequence[str] = ("epsilon",)) -> Schedule:
    """A :class:`Schedule` from a diffusers scheduler config (the dict in ``scheduler_config.json``).

    Reads ``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule``, ``trained_betas``
    with diffusers' defaults (1000, 1e-4, 0.02, "linear", None). Sampler-only fields (``clip_sample``,
    ``set_alpha_to_one``, ``timestep_spacing``, ``steps_offset``) are not part of the schedule: pass
    them to :func:`ddim_timesteps` / :func:`sampling_pairs`. Note that we never clip the predicted x0,
    whatever ``clip_sample`` says (Asyrp does not; DDPMScheduler configs default to ``clip_sample=True``).

    Raises:
      ValueError: unknown ``beta_schedule``; ``trained_betas`` of the wrong length or outside (0, 1];
        ``rescale_betas_zero_snr=True`` (ᾱ_{T-1}=0 makes ε-prediction's x0 undefined);
        ``prediction_type`` not in ``prediction_types`` (default ε only: the samplers consume ε; a caller that
        converts the model output, e.g. :class:`~jaxhspace.models.conditioning.Conditioned` with
        :func:`~jaxhspace.diffusion.guidance.output_to_epsilon`, passes the types it converts).
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a dict (scheduler_config.json), got {type(config).__name__}")
    T = int(config.get("num_train_timesteps", 1000))
    pred = config.get("prediction_type", "epsilon")
    if pred is not None and pred not in prediction_types:
        raise ValueError(
            f"prediction_type={pred!r} is not supported here: jaxhspace's DDIM/Asyrp code consumes ε "
            f"(supported: {tuple(prediction_types)}; latent pipelines convert v_prediction to ε)"
        )
    if config.get("rescale_betas_zero_snr", False):
        raise ValueError("rescale_betas_zero_snr=True is not supported (ᾱ_{T-1}=0 breaks ε-prediction)")
    trained = config.get("trained_betas", None)
    if trained is not None:
        b = np.asarray(trained, dtype=np.float64)
        if b.ndim != 1 or b.size != T:
            raise ValueError(
                f"trained_betas must be a 1-D list of num_train_timesteps={T} values, got shape {b.shape}"
            )
        return schedule_from_betas(b)
    name = config.get("beta_schedule", "linear")
    if name not in BETA_SCHEDULES:
        raise ValueError(f"unknown beta_schedule {name!r} in scheduler config; expected one of {BETA_SCHEDULES}")
    return make_schedule(name, float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02)), T)


# ----------------------------------------------------------------------------------------------
# ᾱ lookup
# ----------------------------------------------------------------------------------------------
def alpha_bar(schedule: Schedule, t) -> jax.Array:
    """ᾱ_t for integer timesteps ``t`` (any shape; jit-able), with ᾱ = 1 for t < 0 (t = -1: clean image).

    Args:
      schedule: the :class:`Schedule`.
      t: int scalar or array of any shape (floats are truncated toward zero).

    Returns:
      float32 array with the shape of ``t``.

    Concrete out-of-range values (t >= T or t < -1) raise ValueError; traced values are clipped.
    """
    if not isinstance(t, jax.core.Tracer):
        tn = np.asarray(t)
        if tn.size and (tn.max() >= schedule.num_train_timesteps or tn.min() < -1):
            raise ValueError(
                f"timesteps must lie in [-1, {schedule.num_train_timesteps - 1}], got range "
                f"[{tn.min()}, {tn.max()}]"
            )
    t = jnp.asarray(t).astype(jnp.int32)
    ac = schedule.alphas_cumprod
    return jnp.where(t < 0, jnp.ones((), ac.dtype), ac[jnp.clip(t, 0, schedule.num_train_timesteps - 1)])


# ----------------------------------------------------------------------------------------------
# Timestep grids
# ----------------------------------------------------------------------------------------------
def _check_n(n, upper: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"number of steps must be an int, got {n!r}")
    if n < 1:
        raise ValueError(f"number of steps must be >= 1, got {n}")
    if n > upper:
        raise ValueError(f"number of steps {n} exceeds {what} = {upper}")
    return int(n)


def asyrp_timesteps(n: int, t0: int = 999) -> np.ndarray:
    """The official Asyrp grid, **ascending**: ``[int(s + 1e-6) for s in np.linspace(0, 1, n) * t0]``.

    Official: kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:955-957 (also 891, 1091, 1211).
    n = 40 gives [0, 25, 51, 76, ..., 973, 999].
    The ``+ 1e-6`` matters: plain ``(np.linspace(0, 1, n) * t0).astype(int)`` differs for 46 values of
    n <= 1000 with t0 = 999 (e.g. n = 10: 776 instead of 777).
    Inversion walks it forward (pairs (seq[k], seq[k+1])); sampling walks ``seq[::-1]`` and its last
    step goes from seq[0] = 0 to -1 (ᾱ = 1).

    Args:
      n: number of grid points, 1 <= n <= t0 + 1 (more would repeat timesteps).
      t0: last timestep (999 for T = 1000).

    Returns:
      int64 array [n], ascending.
    """
    if isinstance(t0, bool) or not isinstance(t0, (int, np.integer)) or t0 < 0:
        raise ValueError(f"t0 must be a non-negative int, got {t0!r}")
    n = _check_n(n, int(t0) + 1, "t0 + 1 (distinct timesteps available)")
    return np.array([int(s + 1e-6) for s in np.linspace(0, 1, n) * t0], dtype=np.int64)


def ddim_timesteps(
    n: int,
    num_train_timesteps: int = 1000,
    spacing: str = "leading",
    steps_offset: int = 0,
) -> np.ndarray:
    """diffusers' ``DDIMScheduler.set_timesteps(n)`` grid, **descending**, reproduced exactly.

    * ``"leading"``: ``arange(n) * (T // n) + steps_offset`` (e.g. n=10: 900, 800, ..., 0).
    * ``"trailing"``: ``round(arange(T, 0, -T/n)) - 1`` (n=10: 999, 899, ..., 99).
    * ``"linspace"``: ``round(linspace(0, T-1, n))`` (n=10: 999, 888, ..., 0).

    As in diffusers, ``steps_offset`` only applies to ``"leading"``; it is ignored for the other two.

    Args:
      n: number of inference steps, 1 <= n <= T.
      num_train_timesteps: T.
      spacing: ``"leading" | "trailing" | "linspace"``.
      steps_offset: added to the leading grid (1 for Stable Diffusion configs).

    Returns:
      int64 array [n], descending.

    Raises:
      ValueError: n < 1, n > T, unknown spacing, or a leading+offset grid reaching t >= T.
    """
    T = int(num_train_timesteps)
    n = _check_n(n, T, "num_train_timesteps")
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, n).round()[::-1].copy().astype(np.int64)
    elif spacing == "leading":
        ratio = T // n
        ts = (np.arange(0, n) * ratio).round()[::-1].copy().astype(np.int64)
        ts += int(steps_offset)
    elif spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / n)).astype(np.int64)
        ts -= 1
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; expected one of {SPACINGS}")
    if ts.max() >= T or ts.min() < 0:
        raise ValueError(f"grid {spacing!r} with n={n}, steps_offset={steps_offset} leaves [0, {T - 1}]")
    return ts


def sampling_pairs(timesteps: Sequence[int] | np.ndarray, final: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """(t, t_prev) pairs for a descending sampling grid: ``t_prev[i] = timesteps[i+1]``, last = ``final``.

    This is the DDIM-paper / Asyrp convention (the step from t lands exactly on the next grid point).
    ``final=-1`` means ᾱ = 1 (Asyrp; diffusers ``set_alpha_to_one=True``); ``final=0`` reproduces
    diffusers' ``set_alpha_to_one=False`` (``final_alpha_cumprod = ᾱ_0``).

    Note: diffusers' DDIMScheduler.step instead uses ``t - T // n`` as the previous timestep, which
    equals the next grid point only for ``"leading"`` spacing; see :func:`diffusers_prev_timesteps`.

    Args:
      timesteps: [S] strictly descending ints.
      final: previous timestep of the last step: -1, or a timestep <= timesteps[-1] (equal gives an
        identity last step, which is what diffusers does for a grid ending at 0 with set_alpha_to_one=False).

    Returns:
      (t [S], t_prev [S]) int64 arrays.
    """
    ts = np.asarray(timesteps, dtype=np.int64).reshape(-1)
    if ts.size < 1:
        raise ValueError("timesteps must be non-empty")
    if np.any(np.diff(ts) >= 0):
        raise ValueError(
            "sampling timesteps must be strictly descending (reverse an ascending Asyrp grid with seq[::-1])"
        )
    if final < -1 or final > ts[-1]:
        raise ValueError(f"final={final} must be -1 or a timestep <= the last timestep {ts[-1]}")
    return ts, np.concatenate([ts[1:], np.array([final], dtype=np.int64)])


def diffusers_prev_timesteps(
    timesteps: Sequence[int] | np.ndarray, num_train_timesteps: int = 1000, set_alpha_to_one: bool = True
) -> np.ndarray:
    """The previous timesteps diffusers' ``DDIMScheduler.step`` really uses: ``t - T // n``.

    Negative values map to -1 (ᾱ = 1) if ``set_alpha_to_one`` else to 0 (ᾱ_0), like diffusers'
    ``final_alpha_cumprod``. For ``"trailing"``/``"linspace"`` grids this differs from the next grid
    point (e.g. linspace n=10: the step from 999 goes to 899 but the next model call is at 888), a
    diffusers quirk we reproduce only when asked (pass the result as ``prev_timesteps``).

    Returns:
      int64 array [S].
    """
    ts = np.asarray(timesteps, dtype=np.int64).reshape(-1)
    prev = ts - int(num_train_timesteps) // ts.size
    return np.where(prev < 0, -1 if set_alpha_to_one else 0, prev).astype(np.int64)


def inversion_pairs(timesteps: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t, t_next) pairs for DDIM inversion over an **ascending** grid: (seq[k], seq[k+1]), k = 0..n-2.

    Asyrp convention (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:1034-1044): the first ε is evaluated on
    the clean image at t = seq[0] (= 0, where ᾱ_0 = 0.9999, not 1). A grid of n points gives n - 1 inversion steps.

    Returns:
      (t [n-1], t_next [n-1]) int64 arrays (empty if n = 1).
    """
    ts = np.asarray(timesteps, dtype=np.int64).reshape(-1)
    if ts.size < 1:
        raise ValueError("timesteps must be non-empty")
    if np.any(np.diff(ts) <= 0):
        raise ValueError("inversion timesteps must be strictly ascending (e.g. asyrp_timesteps(n))")
    if ts[0] < 0:
        raise ValueError("inversion timesteps must be >= 0 (t = -1 has no model evaluation)")
    return ts[:-1], ts[1:]
