"""Editing along pullback directions (Park et al., NeurIPS 2023), ``x_space_guidance`` in the official code:

    x_{j+1} = x_j + γ·[ε(x_j + λ·v, t) − ε(x_j, t)],   j = 0..N−1

(official enkeejunior1/Diffusion-Pullback@859c012:src/modules/edit.py:1716-1734)

with a unit direction v in X at the editing time t (official: γ = 0.1, λ = 1, N = 16, v fixed), then
DDIM sampling continues from t to 0 with η = 1 ("performance boosting") below t_boost.

Beyond the official loop, :func:`reprojected_edit_steps` recomputes the local basis at every edited
point and re-projects the direction onto the new tangent space (v ← VᵀV v / ‖·‖), the seeds' steps 5-6.

Timestep grids (:func:`park_invert`, ``park_grid`` / ``park_inversion``):

* ``park_grid="asyrp"`` (default): the integer Asyrp grid, η = 1 where t < t_boost, and a last noiseless step
  0 → −1 (ᾱ = 1). With 100 steps and t_boost = 200 that is 19 noisy steps.
* ``park_grid="official"``: the official ``YHCustomScheduler`` float grid s_k = k·t_max/(n−1)
  (enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py:1182-1195; sampling walks s_{n−1} → … → s_1 → s_0 = 0
  and ends with ᾱ_0, n − 1 steps; the UNet gets the float t, ᾱ is read at ⌊t⌋ as ``extract``'s ``t.long()``,
  …:src/utils/utils.py:1314); η = 1 from the grid index nearest t_boost on (…:src/modules/edit.py:584, 1650-1653:
  with 100 steps and t_boost = 200 that is t ≈ 201.8, 20 noisy steps, the last one to ᾱ_0); the edit time is the
  grid point nearest ``edit_t`` (enkeejunior1/Diffusion-Pullback@859c012:src/modules/edit.py:583).
* ``park_inversion="to_edit_t"`` (default): DDIM inversion stops at the edit time. ``park_inversion="official"``:
  the inversion breaks before its last step (enkeejunior1/Diffusion-Pullback@859c012:src/modules/edit.py:645-648:
  x at s_{n−2} ≈ 988.9 for n = 100) and DDIM samples from it *as if it were x at the top* s_{n−1} = 999 down to the
  edit time (…:src/modules/edit.py:703-707). The two give different x_t (not just an inversion error apart).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.diffusion.asyrp import asyrp_reverse
from jaxhspace.diffusion.ddim import _prepare_noise, _step_core, _step_noise, ddim_invert, ddim_sample, run_steps
from jaxhspace.diffusion.schedule import Schedule, alpha_bar, asyrp_timesteps

PARK_GRIDS = ("asyrp", "official")
PARK_INVERSIONS = ("to_edit_t", "official")


def _check_direction(v):
    """Reject NaN and zero-norm directions (only for concrete values: under jit/vmap it is a no-op)."""
    v = jnp.asarray(v)
    if isinstance(v, jax.core.Tracer):
        return v
    norms = jnp.sqrt(jnp.sum(v.reshape(v.shape[0] if v.ndim == 4 else 1, -1) ** 2, axis=-1))
    if not bool(jnp.all(jnp.isfinite(v))):
        raise ValueError("direction v contains NaN or inf")
    if bool(jnp.any(norms == 0)):
        raise ValueError("direction v has zero norm; pass a unit singular vector (e.g. pullback(...).v[i])")
    return v


def edit_steps(eps_fn: Callable, x_t, t, v, gamma: float, n_steps: int, lam: float = 1.0,
               return_path: bool = False):
    """N steps of x ← x + γ[ε(x + λv, t) − ε(x, t)] with a fixed direction (one ``lax.scan``).

    Args:
      eps_fn: ``(x [B,H,W,C], t [B]) -> eps``.
      x_t: [B, H, W, C] images at timestep t.
      t: scalar timestep.
      v: [H, W, C] (same for every image) or [B, H, W, C] directions; official: unit norm.
      gamma: step size γ (official 0.1; γ = 0 leaves x_t unchanged exactly).
      n_steps: N (official 16).
      lam: λ, the probe length along v (official 1).
      return_path: also return the iterates [N, B, H, W, C].

    Returns:
      edited x_t [B, H, W, C] (and the path).
    """
    x_t = jnp.asarray(x_t)
    v = _check_direction(v)
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    tb = jnp.full((x_t.shape[0],), t)
    vb = jnp.broadcast_to(v, x_t.shape)

    def body(x, _):
        # One UNet call with batch 2B, as the official code (x and x + λv together).
        both = eps_fn(jnp.concatenate([x + lam * vb, x]), jnp.concatenate([tb, tb]))
        e_plus, e = jnp.split(both, 2)
        x = x + gamma * (e_plus - e)
        return x, x

    x, path = jax.lax.scan(body, x_t, None, length=n_steps)
    return (x, path) if return_path else x


def reprojected_edit_steps(eps_fn: Callable, basis_fn: Callable, x_t, t, v, gamma: float, n_steps: int,
                           lam: float = 1.0):
    """Like :func:`edit_steps` for one image, but before each step the direction is re-projected onto the
    tangent space at the current point: ``V = basis_fn(x) [k, H, W, C]`` (e.g. the top-k pullback v's),
    ``v ← Vᵀ(V v) / ‖Vᵀ(V v)‖`` with the sign kept so that ⟨v_new, v_old⟩ ≥ 0.

    Args:
      basis_fn: ``x [H, W, C] -> V [k, H, W, C]`` orthonormal rows (a Python function; it may run an SVD).
      x_t: [H, W, C]; v: [H, W, C] unit direction.

    Returns:
      (edited x_t [H, W, C], list of the directions used [N] of [H, W, C]).
    """
    x = jnp.asarray(x_t)
    v = _check_direction(jnp.asarray(v)[None])[0]
    used = []
    step = jax.jit(lambda x, v: edit_steps(eps_fn, x[None], t, v, gamma, 1, lam)[0])
    for _ in range(n_steps):
        V = jnp.asarray(basis_fn(x)).reshape(-1, v.size)
        p = V.T @ (V @ v.reshape(-1))
        norm = jnp.linalg.norm(p)
        if float(norm) == 0.0:
            raise ValueError("the direction is orthogonal to the new tangent space; use a larger basis k")
        p = (p / norm).reshape(v.shape)
        v = p * jnp.sign(jnp.vdot(p, v) + 1e-30)
        used.append(v)
        x = step(x, v)
    return x, used


def continue_sampling(eps_fn: Callable, x_t, timesteps, schedule: Schedule, t_boost: int = 0,
                      key=None, noise=None, return_trajectory: bool = False):
    """DDIM from the edit time to x_0, η = 1 for the "performance boosting" steps (official; t_boost = 0 disables it).

    Args:
      eps_fn: ``(x [B,H,W,C], t [B]) -> eps``.
      x_t: [B, H, W, C] at the edit time.
      timesteps: the integer grid (descending, starting at the edit t; η = 1 where t < t_boost, then a last step
        to −1, i.e. ᾱ = 1), or an :class:`OfficialGrid` from :func:`park_invert` (the official float grid: η = 1
        from the index nearest t_boost on, the last step to ᾱ_0; see the module docstring).
      schedule: the Schedule.
      t_boost: boosting threshold in timesteps (official performance_boosting_t · 1000 = 200).
      key: PRNG key, required when a step is noisy; step i uses ``fold_in(key, i)``.
      noise: optional z [S, B, H, W, C] per step (overrides ``key``).
      return_trajectory: also return ``{"x", "pred_x0", "t", "t_prev", "eta", ...}`` per step.

    Returns:
      x_0 [B, H, W, C] (and the trajectory dict if requested).
    """
    if isinstance(timesteps, OfficialGrid):
        return _official_sampling(eps_fn, x_t, timesteps, schedule, t_boost, key, noise, return_trajectory)

    def pair(x, t, edit):
        e = eps_fn(x, t)
        return e, e

    if t_boost > 0 and key is None and noise is None:
        raise ValueError("t_boost > 0 adds noise: pass a PRNG key")
    return asyrp_reverse(pair, x_t, np.asarray(timesteps), schedule, t_edit=10 ** 9, t_boost=t_boost, key=key,
                         noise=noise, return_trajectory=return_trajectory)


# ----------------------------------------------------------------------------------------------
# The official Diffusion-Pullback float grid (YHCustomScheduler) and inversion
# ----------------------------------------------------------------------------------------------
class OfficialGrid(NamedTuple):
    """Sampling from index ``start`` of the official float grid to its end (what :func:`continue_sampling` walks).

    Attributes:
      n_steps: grid points n (the official ``for_steps``; n − 1 sampling steps in all).
      start: index of the edit time in the descending sampling timesteps (the official ``edit_t_idx``).
      t_max: the top timestep (official 999 = T − 1).
    """

    n_steps: int
    start: int
    t_max: int = 999


def _check_grid(n_steps, t_max) -> tuple[int, int]:
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 2:
        raise ValueError(f"the official Park grid needs n_steps >= 2 (grid points), got {n_steps!r}")
    if isinstance(t_max, bool) or not isinstance(t_max, (int, np.integer)) or t_max < 1:
        raise ValueError(f"t_max must be a positive int (T - 1), got {t_max!r}")
    return int(n_steps), int(t_max)


def park_official_grid(n_steps: int, t_max: int = 999) -> np.ndarray:
    """The official float grid, **ascending**: s_k = k·t_max/(n−1) rounded to float32, k = 0..n−1.

    Official: ``torch.linspace(0, 1, n) * t_max`` in float32
    (enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py:1183, 1190), whose rounding depends on the device (CPU
    vector width, CUDA FMA contraction): it is within 2 ulp of the correctly rounded value used here. ⌊s_k⌋ (the ᾱ
    index, ``t.long()``) is then the same except where k·t_max/(n−1) is an integer and torch lands 1 ulp below it (then
    the official reads ᾱ one index lower): never for n = 100 on CPU or on a GPU kernel with FMA (t = 111, 222, …, 999
    exact), but e.g. 665.99994 for n = 4 on CPU (200 of the n in 2..1000 on CPU).

    Returns:
      float32 [n].
    """
    n, t_max = _check_grid(n_steps, t_max)
    return (np.arange(n, dtype=np.float64) * t_max / (n - 1)).astype(np.float32)


def park_official_sampling_steps(n_steps: int, t_max: int = 999) -> tuple[np.ndarray, np.ndarray]:
    """(t [n−1], t_next [n−1]) float32, descending: the official sampling pairs (s_{n−1}, s_{n−2}), …, (s_1, s_0 = 0).

    Official ``set_timesteps(n)``: ``timesteps = reversed(seq[1:])``, ``timesteps_next = reversed(seq[:-1])``
    (enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py:1193-1195). The last step lands on t = 0, i.e. ᾱ_0 (not
    ᾱ = 1).
    """
    s = park_official_grid(n_steps, t_max)
    return s[1:][::-1].copy(), s[:-1][::-1].copy()


def park_official_inversion_steps(n_steps: int, t_max: int = 999) -> tuple[np.ndarray, np.ndarray]:
    """(t [n−2], t_next [n−2]) float32, ascending: the inversion steps the official code runs.

    ``set_timesteps(n, is_inversion=True)`` builds seq = s + 1e-6 (float32), steps (seq[k], seq[k+1]) for k = 0..n−2
    (enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py:1184-1188), and ``run_DDIMinversion`` breaks before the
    last one (…:src/modules/edit.py:645-648), so the result is x at seq[n−2] (≈ 988.9 for n = 100), not at t_max.
    """
    s = park_official_grid(n_steps, t_max) + np.float32(1e-6)
    return s[:-2].copy(), s[1:-1].copy()


def park_official_index(n_steps: int, t, t_max: int = 999) -> int:
    """Index of the descending sampling timestep nearest ``t`` (official ``(timesteps - t).abs().argmin()``,
    enkeejunior1/Diffusion-Pullback@859c012:src/modules/edit.py:583-584, with t = edit_t·1000 or
    performance_boosting_t·1000)."""
    ts, _ = park_official_sampling_steps(n_steps, t_max)
    return int(np.argmin(np.abs(ts - np.float32(t))))


def park_official_etas(n_steps: int, t_boost, t_max: int = 999) -> np.ndarray:
    """η per official sampling step [n−1] float32: 1 from the index b nearest ``t_boost`` on, else 0.

    Official (enkeejunior1/Diffusion-Pullback@859c012:src/modules/edit.py:584, 1650-1653):
    ``eta = 1 if b <= i and b != len(timesteps) - 1``; t_boost <= 0 gives b = 1000 (never). With n = 100 and
    t_boost = 200: b = 79 (t ≈ 201.8), η = 1 for the last 20 steps.
    """
    n, t_max = _check_grid(n_steps, t_max)
    i = np.arange(n - 1)
    if not t_boost > 0:
        return np.zeros(n - 1, np.float32)
    b = park_official_index(n, t_boost, t_max)
    return ((i >= b) & (b != n - 2)).astype(np.float32)


def _park_step_fn(static, consts, x, inp):
    eps_fn, stochastic = static
    key = consts
    i, t, a_t, a_next, eta, z = inp
    eps = eps_fn(x, jnp.full((x.shape[0],), t, jnp.float32))  # the float t, as the official passes to the UNet
    noise = _step_noise(key, z, i, x) if stochastic else None
    x_new, x0 = _step_core(x, eps, eps, a_t, a_next, eta if stochastic else 0.0, noise)
    return x_new, {"x": x_new, "pred_x0": x0}


def park_official_steps(eps_fn: Callable, x, t, t_next, schedule: Schedule, etas=None, key=None, noise=None,
                        return_trajectory: bool = False):
    """DDIM steps over float timestep pairs (official ``YHCustomScheduler.step``,
    enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py:1197-1235), one scan.

    Step i: ε = eps_fn(x, t_i) with the float t_i, ᾱ_t = ᾱ[⌊t_i⌋], ᾱ_next = ᾱ[⌊t_next_i⌋] (``extract``'s
    ``t.long()``), x ← √ᾱ_next·P_t + √(1 − ᾱ_next − σ²)·ε + σ·z with σ = η√((1 − ᾱ_t/ᾱ_next)(1 − ᾱ_next)/(1 − ᾱ_t)).
    The official writes the direction term with η·σ² (not (ησ)²): the same for η ∈ {0, 1}, the only values it uses.
    Inversion is the same step with t_next > t and η = 0.

    Args:
      eps_fn: ``(x [B,H,W,C], t [B] float) -> eps``.
      x: [B, H, W, C].
      t, t_next: [S] timesteps (floats, >= 0).
      schedule: the Schedule.
      etas: [S] η per step (default 0).
      key: PRNG key for noisy steps (step i: ``fold_in(key, i)``); or ``noise`` z [S, B, H, W, C].
      return_trajectory: also return ``{"x", "pred_x0", "t", "t_prev", "eta"}``.

    Returns:
      x after the S steps [B, H, W, C] (and the trajectory if requested).
    """
    x = jnp.asarray(x)
    ts = np.asarray(t, np.float32).reshape(-1)
    tns = np.asarray(t_next, np.float32).reshape(-1)
    if ts.shape != tns.shape:
        raise ValueError(f"t and t_next must have the same length, got {ts.shape} and {tns.shape}")
    if ts.size and (ts.min() < 0 or tns.min() < 0):
        raise ValueError("official grid timesteps must be >= 0 (the grid ends at t = 0, i.e. alpha_bar_0)")
    etas = np.zeros(ts.size, np.float32) if etas is None else np.asarray(etas, np.float32).reshape(-1)
    if etas.shape != ts.shape:
        raise ValueError(f"etas must have one value per step ({ts.size}), got shape {etas.shape}")
    if ts.size == 0:
        traj = {"x": x[None][:0], "pred_x0": x[None][:0], "t": ts, "t_prev": tns, "eta": etas}
        return (x, traj) if return_trajectory else x
    stochastic = bool(np.any(etas != 0))
    key, z = _prepare_noise(stochastic, key, noise, ts.size, x)
    per_step = (np.arange(ts.size, dtype=np.int32), ts, alpha_bar(schedule, ts), alpha_bar(schedule, tns),
                jnp.asarray(etas, x.dtype), z)
    x, outs = run_steps(_park_step_fn, (eps_fn, stochastic), key, x, per_step, return_trajectory, False,
                        desc="park official")
    if not return_trajectory:
        return x
    return x, dict(outs, t=ts, t_prev=tns, eta=etas)


def _official_sampling(eps_fn, x_t, grid: OfficialGrid, schedule, t_boost, key, noise, return_trajectory):
    ts, tns = park_official_sampling_steps(grid.n_steps, grid.t_max)
    etas = park_official_etas(grid.n_steps, t_boost, grid.t_max)
    s = int(grid.start)
    if not 0 <= s < ts.size:
        raise ValueError(f"OfficialGrid.start = {s} is outside the {ts.size} sampling steps")
    if np.any(etas[s:] != 0) and key is None and noise is None:
        raise ValueError("t_boost > 0 adds noise: pass a PRNG key")
    return park_official_steps(eps_fn, x_t, ts[s:], tns[s:], schedule, etas[s:], key, noise, return_trajectory)


def park_invert(eps_fn: Callable, x0, schedule: Schedule, n_steps: int, edit_t: int, grid: str = "asyrp",
                inversion: str = "to_edit_t", t_max: Optional[int] = None):
    """x_t at Park et al.'s edit time from clean x0 (DDIM inversion, η = 0), on the chosen grid.

    Args:
      eps_fn: ``(x [B,H,W,C], t [B]) -> eps``.
      x0: [B, H, W, C] clean images (or latents).
      schedule: the Schedule.
      n_steps: grid points n (official for/inv steps 100).
      edit_t: the edit time in timesteps (official edit_t · 1000, e.g. 600); the nearest grid point is used.
      grid: ``"asyrp"`` (integer Asyrp grid; the default, as before) or ``"official"`` (the float grid).
      inversion: ``"to_edit_t"`` (stop the inversion at the edit time; the default) or ``"official"`` (invert
        all but the last step, then sample from there as if at the top down to the edit time).
      t_max: top timestep (default ``schedule.num_train_timesteps - 1``).

    Returns:
      ``(x_t [B,H,W,C], t, timesteps)``: t is the edit timestep (an int on the Asyrp grid, a float on the official
      one), ``timesteps`` what :func:`continue_sampling` takes to finish (an int array from t down to 0, or an
      :class:`OfficialGrid`).

    Raises:
      ValueError: unknown ``grid`` / ``inversion``, or fewer than 2 grid points.
    """
    if grid not in PARK_GRIDS:
        raise ValueError(f"park_grid must be one of {PARK_GRIDS}, got {grid!r}")
    if inversion not in PARK_INVERSIONS:
        raise ValueError(f"park_inversion must be one of {PARK_INVERSIONS}, got {inversion!r}")
    t_max = schedule.num_train_timesteps - 1 if t_max is None else int(t_max)
    x0 = jnp.asarray(x0)
    if grid == "asyrp":
        seq = asyrp_timesteps(n_steps, t_max)                       # ascending ints
        i = int(np.argmin(np.abs(seq - edit_t)))
        desc = seq[::-1].copy()
        if inversion == "to_edit_t":                                # = tasks.inputs.invert_to
            x_t = ddim_invert(eps_fn, x0, seq[: i + 1], schedule)
        else:
            x_top = ddim_invert(eps_fn, x0, seq[:-1], schedule)     # stops at seq[-2]
            e = seq.size - 1 - i                                    # steps from the top to the edit time
            x_t = x_top if e == 0 else ddim_sample(eps_fn, x_top, desc[:e], schedule, prev_timesteps=desc[1:e + 1])
        return x_t, int(seq[i]), seq[: i + 1][::-1].copy()
    n, t_max = _check_grid(n_steps, t_max)
    e = park_official_index(n, edit_t, t_max)
    ts, tns = park_official_sampling_steps(n, t_max)
    if inversion == "to_edit_t":
        s = park_official_grid(n, t_max) + np.float32(1e-6)
        m = n - 1 - e                                               # inversion steps s_0 -> s_m = ts[e]
        x_t = park_official_steps(eps_fn, x0, s[:m], s[1:m + 1], schedule)
    else:
        it, itn = park_official_inversion_steps(n, t_max)
        x_top = park_official_steps(eps_fn, x0, it, itn, schedule)  # x at s_{n-2}, used as x at s_{n-1}
        x_t = park_official_steps(eps_fn, x_top, ts[:e], tns[:e], schedule)
    return x_t, float(ts[e]), OfficialGrid(n, e, t_max)
