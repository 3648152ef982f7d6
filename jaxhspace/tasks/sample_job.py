"""Job ``sample``: DDIM samples from the configured UNet, saved as a PNG grid plus metrics.json."""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.data.images import save_grid
from jaxhspace.diffusion.ddim import clipped_eps_fn, ddim_sample
from jaxhspace.models.functional import eps_fn
from jaxhspace.tasks.common import sampling_grid, write_metrics
from jaxhspace.world import load_model


def run(config, workdir: str) -> dict:
    """Draw ``config.num_samples`` DDIM samples (``config.n_steps``, ``config.eta``, ``config.spacing``)."""
    model, params, schedule, source = load_model(config.model_path, config.seed)
    size = model.config.sample_size or config.image_size
    size = size if isinstance(size, int) else size[0]
    key_x, key_eta = jax.random.split(jax.random.PRNGKey(config.seed))
    x_T = jax.random.normal(key_x, (config.num_samples, size, size, model.config.in_channels))
    ts = sampling_grid(config.spacing, config.n_steps, schedule.num_train_timesteps)
    t0 = time.time()
    f = eps_fn(model, params)
    if config.get("clip_sample", False):
        f = clipped_eps_fn(f, schedule)
    x0 = ddim_sample(f, x_T, ts, schedule, eta=config.eta, key=key_eta, progress=True)
    x0 = np.asarray(jax.device_get(x0))
    wall = time.time() - t0
    grid = save_grid(os.path.join(workdir, "samples.png"), x0.reshape(-1, config.grid_cols, *x0.shape[1:])
                     if config.num_samples % config.grid_cols == 0 else x0, upscale=config.upscale)
    metrics = {"task": "sample", "model": source, "num_samples": config.num_samples, "n_steps": config.n_steps,
               "eta": config.eta, "spacing": config.spacing, "clip_sample": bool(config.get("clip_sample", False)),
               "wall_s": wall,
               "pixel_mean": float(x0.mean()), "pixel_std": float(x0.std()),
               "out_of_range_fraction": float(np.mean(np.abs(x0) > 1.0)), "grid": grid}
    metrics.update(probe_sample_scores(x0, config.get("data_seed", 12345)))
    write_metrics(workdir, metrics)
    return metrics


def probe_sample_scores(x0: np.ndarray, data_seed: int = 12345) -> dict:
    """Probe metrics of samples x0 [N, S, S, 3] (if the probe is shipped): the share the probe calls a valid
    face (every factor in range), the share whose probe features are typical of the data
    (``probe.in_distribution``) and both; and the Fréchet distance on probe features to N SynthFaces images
    (seed ``data_seed``), with the same distance between two independent N-image data sets as the noise
    floor at this N."""
    from jaxhspace.world import DEFAULT_PROBE

    if x0.shape[1] not in (32, 64):
        return {}
    if not os.path.isdir(DEFAULT_PROBE):
        import warnings

        from jaxhspace.world import missing_asset_message

        warnings.warn("Samples are not scored: " + missing_asset_message(DEFAULT_PROBE), stacklevel=2)
        return {}
    from jaxhspace.data import probe, synthfaces

    model_p = probe.load_probe(DEFAULT_PROBE)
    scores = probe.score(model_p, jnp.asarray(x0), probs=True)
    valid = probe.is_valid_face(scores)
    gauss = probe.fit_feature_gaussian(model_p)
    feats_x = probe.probe_features(model_p, jnp.asarray(x0))
    typical = gauss.contains(feats_x)
    out = {"probe_valid_face_fraction": float(np.mean(valid)),
           "probe_in_distribution_fraction": float(np.mean(typical)),
           "probe_valid_and_in_distribution_fraction": float(np.mean(valid & typical))}
    n = len(x0)
    if n >= 16:
        data_a, _ = synthfaces.generate(data_seed, n, size=x0.shape[1])
        data_b, _ = synthfaces.generate(data_seed + 1, n, size=x0.shape[1])
        feats_a, feats_b = (probe.probe_features(model_p, jnp.asarray(a)) for a in (data_a, data_b))
        out["probe_frechet_distance"] = probe.frechet_distance(feats_x, feats_a)
        out["probe_frechet_distance_data_vs_data"] = probe.frechet_distance(feats_b, feats_a)
        data_valid = probe.is_valid_face(probe.score(model_p, jnp.asarray(data_a), probs=True))
        out["probe_valid_face_fraction_data"] = float(np.mean(data_valid))
        out["probe_in_distribution_fraction_data"] = float(np.mean(gauss.contains(feats_a)))
    return out
