"""Job ``pca``: Haas et al.'s PCA of h per timestep over real faces (``get_PCs_indv``) and the supervised
mean-difference direction for a known factor, both applied as per-timestep Δh tables:
PCA: Δh_t = scale·std_t(k)·u_t(k) (signs aligned over t to the first grid step, as official);
supervised: Δh_t = scale·(mean h_t of positives − mean h_t of negatives) for each entry of ``config.supervised_factor``
(a factor name, "factor=class" for a categorical one, or a tuple of them; see :func:`supervised_masks`).
Grid rows: images; columns: input, reconstruction, PCs × scales, supervised × scales.

Where the h's for the PCA come from (``config.pca_source``; missing = "synthfaces"):
* ``"synthfaces"``: DDIM inversions of ``num_pca_samples`` SynthFaces faces (32/64 px models only); the
  supervised direction uses their known factor ``supervised_factor``;
* ``"samples"``: ``num_pca_samples`` generations of the model itself from x_T ~ N(0, I) with η = ``pca_eta``
  (Haas' official source: 500 DDPM (η = 1) samples, 10 steps), h recorded at every grid step; any resolution;
* ``"images"``: DDIM inversions of ``pca_image_paths`` (files or folders).
With a source other than SynthFaces the supervised direction is the mean h of the inverted
``supervised_pos_paths`` minus that of ``supervised_neg_paths`` (Haas' real-data variant), or skipped if
either is empty.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxhspace.data import synthfaces
from jaxhspace.data.images import load_images
from jaxhspace.data.plots import save_line_plot
from jaxhspace.diffusion.ddim import ddim_invert, ddim_sample
from jaxhspace.diffusion.schedule import asyrp_timesteps
from jaxhspace.directions import mean_difference, pca
from jaxhspace.editing.asyrp_edit import TableDelta, asyrp_edit, invert, stack_deltas
from jaxhspace.errors import JaxhspaceError
from jaxhspace.models.functional import eps_fn
from jaxhspace.tasks.inputs import image_size
from jaxhspace.tasks.skeleton import Column, EditJob, Edits, Grid

PCA_SOURCES = ("synthfaces", "samples", "images")


def _encoder(model):
    """Jitted ``(params, x [B,H,W,C], t [B]) -> h [B,h,w,C]`` (params traced: one compile per shape)."""
    return jax.jit(lambda p, x, t: model.apply({"params": p}, x, t, method=model.encode)[0])


def _chunked_h(fn, n: int, batch_size: int) -> np.ndarray:
    """``fn(start, stop) -> [S, b, h, w, C]`` over chunks of ``batch_size``, concatenated to ``[S, n, h, w, C]``."""
    return np.concatenate([fn(i, min(i + batch_size, n)) for i in range(0, n, batch_size)], axis=1)


def inverted_h(model, params, schedule, x0, grid, batch_size: int = 16) -> np.ndarray:
    """h at every point of the ascending ``grid [S]`` along the DDIM inversion of ``x0 [N,H,W,C]`` (h at grid[0] is
    taken on x0 itself), in chunks of ``batch_size`` images with one jitted encoder: ``[S, N, h, w, C]``."""
    f, enc = eps_fn(model, params), _encoder(model)

    def chunk(a, b):
        x = jnp.asarray(x0[a:b])
        _, traj = ddim_invert(f, x, grid, schedule, return_trajectory=True)
        xs = [x] + [traj["x"][i] for i in range(len(grid) - 1)]
        return np.stack([np.asarray(enc(params, x_, jnp.full((b - a,), int(t)))) for x_, t in zip(xs, grid)])

    return _chunked_h(chunk, len(x0), batch_size)


def sampled_h(model, params, schedule, grid, n: int, key, eta: float = 1.0, batch_size: int = 16) -> np.ndarray:
    """h at every point of the ascending ``grid [S]`` along ``n`` generations from x_T ~ N(0, I) with DDIM(η)
    (Haas' PCA data: DDPM, η = 1): ``[S, n, h, w, C]`` (row s: h of the state at t = grid[s])."""
    f, enc = eps_fn(model, params), _encoder(model)
    size, desc = image_size(model), np.asarray(grid)[::-1].copy()

    def chunk(a, b):
        kx, ks = jax.random.split(jax.random.fold_in(key, a))
        x_T = jax.random.normal(kx, (b - a, size, size, model.config.in_channels))
        _, traj = ddim_sample(f, x_T, desc, schedule, eta=float(eta), key=ks, return_trajectory=True)
        xs = [x_T] + [traj["x"][i] for i in range(len(desc) - 1)]                       # state at desc[i]
        hs = [np.asarray(enc(params, x_, jnp.full((b - a,), int(t)))) for x_, t in zip(xs, desc)]
        return np.stack(hs[::-1])

    return _chunked_h(chunk, n, batch_size)


def supervised_specs(value) -> list[str]:
    """``config.supervised_factor`` as a list: '' -> [], 'smile' -> ['smile'], a tuple -> its entries."""
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def supervised_masks(spec: str, factors: dict) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative SynthFaces of a supervised direction ``spec``: a continuous factor ('smile'): above
    half its high end vs below half its low end; a binary one ('glasses'): 1 vs 0; a categorical class
    ('hair_color=red'): that class vs every other. ``factors``: {name: [N]} -> bool [N], bool [N]."""
    name, _, cls = spec.partition("=")
    if name not in synthfaces.FACTORS:
        raise ValueError(f"supervised factor {spec!r}: unknown factor {name!r}; choose from {list(synthfaces.FACTORS)}")
    f, v = synthfaces.FACTORS[name], factors[name]
    if f.kind == "continuous":
        return v > 0.5 * f.high, v < 0.5 * f.low
    if f.kind == "binary":
        return v == 1, v == 0
    if cls not in f.classes:
        raise ValueError(f"supervised factor {spec!r}: a categorical factor needs a class, e.g. "
                         f"'{name}={f.classes[0]}'; classes: {list(f.classes)}")
    k = f.classes.index(cls)
    return v == k, v != k


def pca_data_h(config, world, grid):
    """``(H [S, N, h, w, C], supervised direction [S, h, w, C] or None, supervised info)`` per ``config.pca_source``
    (see the module docstring); images enter the model through ``world.to_x`` (VAE latents in a latent world)."""
    model, params, schedule = world.model, world.params, world.schedule
    source = config.get("pca_source", "synthfaces")
    bs = int(config.get("pca_batch_size", 16))
    if source == "synthfaces":
        data, factors = synthfaces.generate(config.pca_data_seed, config.num_pca_samples, size=world.image_size)
        H = inverted_h(model, params, schedule, world.to_x(data), grid, bs)
        specs = supervised_specs(config.supervised_factor)
        if not specs:
            return H, None, None
        sups, infos = [], []
        for spec in specs:
            pos, neg = supervised_masks(spec, factors)
            sups.append(np.stack([mean_difference(H[s][pos], H[s][neg]) for s in range(len(grid))]))
            infos.append({"factor": spec, "n_pos": int(pos.sum()), "n_neg": int(neg.sum())})
        if isinstance(config.supervised_factor, str):
            return H, sups[0], infos[0]
        return H, sups, infos
    if source == "samples":
        H = sampled_h(model, params, schedule, grid, int(config.num_pca_samples),
                      jax.random.PRNGKey(int(config.pca_data_seed)), float(config.get("pca_eta", 1.0)), bs)
    elif source == "images":
        if not config.get("pca_image_paths"):
            raise ValueError("pca_source='images' needs config.pca_image_paths (image files or folders)")
        H = inverted_h(model, params, schedule, world.to_x(load_images(list(config.pca_image_paths), world.image_size)),
                       grid, bs)
    else:
        raise ValueError(f"config.pca_source must be 'synthfaces', 'samples' or 'images', got {source!r}")
    pos_p, neg_p = config.get("supervised_pos_paths", ()), config.get("supervised_neg_paths", ())
    if not (pos_p and neg_p):
        return H, None, None
    hp, hn = (inverted_h(model, params, schedule, world.to_x(load_images(list(p), world.image_size)), grid, bs)
              for p in (pos_p, neg_p))
    sup = np.stack([mean_difference(hp[s], hn[s]) for s in range(len(grid))])
    return H, sup, {"factor": config.supervised_factor, "n_pos": hp.shape[1], "n_neg": hn.shape[1]}


class PcaJob(EditJob):
    """h along the inversions (or generations) of the PCA data at every grid step → PCs per timestep (and supervised
    mean differences) → Δh tables added in the reverse process of the faces."""

    task = "pca"

    def validate(self, config) -> None:
        """``pca_source`` name and its paths; the supervised factors."""
        source = config.get("pca_source", "synthfaces")
        if source not in PCA_SOURCES:
            raise JaxhspaceError(f"config.pca_source must be one of {PCA_SOURCES}, got {source!r}")
        if source == "images" and not config.get("pca_image_paths"):
            raise JaxhspaceError("pca_source='images' needs config.pca_image_paths (image files or folders)")
        if source == "synthfaces":
            for spec in supervised_specs(config.supervised_factor):
                factor, _, cls = spec.partition("=")
                f = synthfaces.FACTORS.get(factor)
                if f is None:
                    raise JaxhspaceError(f"config.supervised_factor {spec!r}: unknown factor {factor!r}; choose from "
                                         f"{list(synthfaces.FACTORS)}")
                if f.kind == "categorical" and cls not in f.classes:
                    raise JaxhspaceError(f"config.supervised_factor {spec!r}: a categorical factor needs a class, "
                                         f"e.g. '{factor}={f.classes[0]}'; classes: {list(f.classes)}")

    def edit(self, config, world, faces, workdir) -> Edits:
        model, params, schedule = world.model, world.params, world.schedule
        grid = asyrp_timesteps(config.n_steps, schedule.num_train_timesteps - 1)
        H, sup, sup_info = pca_data_h(config, world, grid)                                 # [S, N, h, w, C]
        per_t = [pca(H[s], config.k) for s in tqdm(range(len(grid)), desc="PCA of h per t")]
        comps = np.stack([r.components for r in per_t])                                   # [S, k, h, w, C]
        stds = np.stack([r.std for r in per_t])                                           # [S, k]
        ratios = [r.explained_variance_ratio.tolist() for r in per_t]
        ref = comps[-1].reshape(config.k, -1)                                              # align to t = 999
        signs = np.sign(np.einsum("skd,kd->sk", comps.reshape(len(grid), config.k, -1), ref))
        comps = comps * np.where(signs == 0, 1, signs)[:, :, None, None, None]

        ts = tuple(int(t) for t in grid)
        tables = [TableDelta(jnp.asarray(stds[:, d, None, None, None] * comps[:, d]), ts)
                  for d in range(config.n_dirs)]
        sups = [] if sup is None else (sup if isinstance(sup, list) else [sup])
        tables += [TableDelta(jnp.asarray(d), ts) for d in sups]                           # [S, h, w, C] each
        x0 = jnp.asarray(faces)
        x_lat = invert(model, params, schedule, world.to_x(x0), config.n_steps)
        kw = dict(n_test=config.n_steps, t_edit=config.t_edit, t_boost=config.t_boost, symmetric=config.symmetric,
                  key=jax.random.PRNGKey(config.seed))
        recon = world.to_images(asyrp_edit(model, params, schedule, x_lat=x_lat, **kw)[0])
        E = world.to_images(asyrp_edit(model, params, schedule, x_lat=x_lat, delta=stack_deltas(tables),
                                       scales=config.scales, stacked=True, **kw))          # [D+1, K, B, H, W, 3]
        infos = [] if sup_info is None else sup_info if isinstance(sup_info, list) else [sup_info]
        names = [f"PC{d}" for d in range(config.n_dirs)]
        names += [f"supervised {i['factor']}" if i["factor"] else "supervised" for i in infos]
        columns = []
        for d, n in enumerate(names):
            spec = n[len("supervised "):] if n.startswith("supervised ") else ""
            known = spec.partition("=")[0] in synthfaces.FACTORS  # a SynthFaces supervised direction: known target
            for k, s in enumerate(config.scales):
                columns.append(Column(E[d, k], f"{n} x{s:g}", f"{n} x{s:g}", "supervised" if spec else "pca",
                                      spec or n, s, target=spec if known else "", score={"direction": n, "scale": s}))
        plot = save_line_plot(os.path.join(workdir, "pca_std.png"),
                              {f"t={grid[s]}": stds[s] for s in (0, len(grid) // 2, len(grid) - 1)},
                              "std of h along each PC", "PC", "std")
        metrics = {"timesteps": list(ts), "pc_std": stds.tolist(), "explained_variance_ratio": ratios,
                   "std_plot": plot, "pca_source": config.get("pca_source", "synthfaces"),
                   "num_pca_samples": int(H.shape[1]), "supervised": sup_info}
        return Edits([Grid("pca_grid", recon, columns)], metrics)


JOB = PcaJob()
run, validate = JOB.run, JOB.validate
