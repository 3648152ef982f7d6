"""Job ``asyrp_edit``: invert images, edit them with Asyrp editors / Δh directions, write grids and metrics.

See ``configs/asyrp_edit.py`` for the outputs. Everything after the inversion runs through
:func:`jaxhspace.editing.asyrp_edit.asyrp_edit` (one jitted program, vmap over images × scales × editors).
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.data.images import save_grid
from jaxhspace.editing import asyrp_edit as ae
from jaxhspace.editing.editor_io import load_editor
from jaxhspace.editing.scoring import factor_changes, load_default_probe, target_effect
from jaxhspace.tasks.common import write_metrics
from jaxhspace.world import load_model, require_asset


def _images(config, size):
    if config.image_paths:
        from jaxhspace.data.images import load_images

        return load_images(list(config.image_paths), size)
    from jaxhspace.data import synthfaces

    return synthfaces.generate(int(config.data_seed), int(config.num_images), size=size)[0]


def _global_dh_set(config, size):
    """The images the global Δh is averaged over (official: the first K *training* images, applied to test images,
    Asyrp_official diffusion_latent.py:779-829) and a description for the report.

    ``global_dh_set``: "separate" (default) = ``global_dh_paths`` if given, else SynthFaces with
    ``global_dh_seed`` (default 0, the training split: asyrp_train's data_seed) — never the edited faces;
    "edited" = the first K edited images (in-sample, the old behaviour). Returns ``(images [K,S,S,3] | None, text)``.
    """
    k = int(config.global_dh_images)
    mode = config.get("global_dh_set", "separate")
    if mode == "edited":
        return None, f"the first {k} edited images (in-sample)"
    if mode != "separate":
        raise ValueError(f"config.global_dh_set must be 'separate' (official: training images) or 'edited', "
                         f"got {mode!r}")
    paths = list(config.get("global_dh_paths", ()))
    if paths:
        from jaxhspace.data.images import expand_image_paths, load_images

        files = sorted(expand_image_paths(paths))[:k]
        return load_images(files, size), f"{len(files)} images from global_dh_paths {paths}"
    if config.image_paths:
        raise ValueError("global_dh_images > 0 with image_paths: set config.global_dh_paths to training images (the "
                         "official averages over the first K training images), or global_dh_set='edited' for the "
                         "in-sample mean over the edited images, or global_dh_images=0")
    seed = int(config.get("global_dh_seed", 0))
    if seed == int(config.data_seed):
        raise ValueError(f"global_dh_seed ({seed}) equals data_seed: the global Δh would be averaged over the edited "
                         "faces; pick another seed or set global_dh_set='edited'")
    from jaxhspace.data import synthfaces

    return synthfaces.generate(seed, k, size=size)[0], f"{k} SynthFaces with seed {seed} (not the edited faces)"


def _t_source(editors) -> int:
    """Index of the editor whose meta gives t_edit / t_boost when ``config.t_edit`` / ``t_boost`` are -1: the
    attribute with the highest cos(E_T(src), E_T(tgt)) (``cos_src_tgt``), as the official multi-attribute edit
    (Asyrp_official diffusion_latent.py:630-655); the first editor if any editor's meta lacks the cosine."""
    coss = [m.get("cos_src_tgt") for _, _, m in editors]
    if len(coss) < 2 or any(c is None for c in coss):
        return 0
    return int(np.argmax(np.asarray(coss, np.float64)))


def _column_stats(edits: np.ndarray, recon: np.ndarray, labels: list[str], probe_params=None,
                  target: str = "") -> list[dict]:
    """edits [K, B, H, W, C] -> per column mean |edit - recon| and, with the probe, every factor's change
    vs the reconstruction (``factor_changes``) plus the target's signed change and leakage (``target_effect``)."""
    rows = []
    for lab, e in zip(labels, edits):
        row = {"column": lab, "mean_abs_change_vs_recon": float(np.mean(np.abs(e - recon)))}
        if probe_params is not None and lab != "recon":
            row["probe"] = factor_changes(probe_params, recon, e)
            if target:
                row["target"] = target_effect(probe_params, recon, e, target)
        rows.append(row)
    return rows


def run(config, workdir: str) -> dict:
    """Run the edits described by ``config`` (see configs/asyrp_edit.py); returns the metrics dict."""
    if not config.editor_paths and not config.delta_h_paths:
        raise ValueError("nothing to edit with: set config.editor_paths (train one with configs/asyrp_train.py or "
                         "convert an official checkpoint) and/or config.delta_h_paths")
    t_all = time.time()
    unet, params, schedule, source = load_model(config.model_path, config.seed)
    size = unet.config.sample_size
    size = int(size if isinstance(size, int) else size[0])
    x0 = jnp.asarray(_images(config, size))
    gset, gset_text = (None, None)
    if config.global_dh_images > 0 and config.editor_paths:
        gset, gset_text = _global_dh_set(config, size)                                # validated before inverting
    x_lat = ae.invert(unet, params, schedule, x0, int(config.n_inv))
    if config.global_dh_images > 0 and config.editor_paths:
        g_lat = x_lat[:int(config.global_dh_images)] if gset is None else ae.invert(
            unet, params, schedule, jnp.asarray(gset), int(config.n_inv))
    scales = [0.0] + [float(s) for s in config.scales if float(s) != 0.0]
    labels = ["recon"] + [f"s={s:g}" for s in scales[1:]]
    key = jax.random.PRNGKey(int(config.seed))
    editors = [load_editor(require_asset(p)) for p in config.editor_paths]
    i_t = _t_source(editors)
    meta0 = editors[i_t][2] if editors else {}
    t_edit = int(config.t_edit) if config.t_edit >= 0 else int(meta0.get("t_edit", 500))
    t_boost = int(config.t_boost) if config.t_boost >= 0 else int(meta0.get("t_boost", 200))
    common = dict(x_lat=x_lat, n_test=int(config.n_test), t_edit=t_edit, t_boost=t_boost, key=key)
    x0n = np.asarray(x0)
    grids, table = {}, {}
    probe_params = load_default_probe(x0.shape[1])
    targets = list(config.get("target_factors", ()))
    targets += [m.get("target_factor", "") for _, _, m in editors[len(targets):]]

    def n_train_of(meta):
        if config.n_train_step > 0:
            return int(config.n_train_step)
        if config.n_train_step == 0:
            return None
        return meta.get("n_train_step")

    def write(name, cols, col_labels, target=""):
        recon = cols[0]
        grids[name] = save_grid(os.path.join(workdir, f"{name}.png"),
                                np.concatenate([x0n[:, None], np.stack(cols, axis=1)], axis=1), upscale=config.upscale)
        table[name] = _column_stats(np.stack(cols), recon, col_labels, probe_params, target)

    for i, (editor, eparams, meta) in enumerate(editors):
        t0 = time.time()
        src = ae.EditorDelta(eparams, editor)
        out = np.asarray(ae.asyrp_edit(unet, params, schedule, delta=src, scales=scales,
                                       n_train_step=n_train_of(meta), **common))
        write(f"edit_{i}", list(out), labels, targets[i])
        table[f"edit_{i}"].append({"wall_s": time.time() - t0, "source": config.editor_paths[i],
                                   "n_train_step": n_train_of(meta)})
        if config.global_dh_images > 0:
            k = int(g_lat.shape[0])
            dhs, ts = ae.collect_delta_h(unet, params, schedule, src, g_lat, int(config.n_test), t_edit,
                                         scale=1.0, n_train_step=n_train_of(meta))
            g = ae.delta_h_global(dhs)
            ae.save_delta_h(os.path.join(workdir, f"global_dh_{i}.npz"), g,
                            meta={"editor": config.editor_paths[i], "images": k, "t_edit": t_edit,
                                  "averaged_over": gset_text})
            out = np.asarray(ae.asyrp_edit(unet, params, schedule, delta=ae.ConstantDelta(g), scales=scales,
                                           n_train_step=n_train_of(meta), **common))
            write(f"global_{i}", list(out), labels, targets[i])

    if len(editors) >= 2:
        srcs = [ae.EditorDelta(p, e) for e, p, _ in editors]
        n = len(srcs)
        coeffs = jnp.asarray(config.combine_coeffs if config.combine_coeffs else [1.0] * n, jnp.float32)
        ntr = n_train_of(meta0)
        cols = [np.asarray(ae.asyrp_edit(unet, params, schedule, delta=None, scales=[0.0], **common))[0]]
        same = len({(e.config, ) for e, _, _ in editors}) == 1
        if same:  # one vmap over the N editors
            out = np.asarray(ae.asyrp_edit(unet, params, schedule, delta=ae.stack_deltas(srcs), scales=[1.0],
                                           stacked=True, n_train_step=ntr, **common))
            cols += [o[0] for o in out]
        else:
            cols += [np.asarray(ae.asyrp_edit(unet, params, schedule, delta=s, scales=[1.0], n_train_step=ntr,
                                              **common))[0] for s in srcs]
        comb = ae.CombinedDelta(tuple(srcs), coeffs)
        cols.append(np.asarray(ae.asyrp_edit(unet, params, schedule, delta=comb, scales=[1.0], n_train_step=ntr,
                                             **common))[0])
        write("combination", cols, ["recon"] + [f"attr_{i}" for i in range(n)] + ["combined"])

    for j, path in enumerate(config.delta_h_paths):
        dh, ts, meta = ae.load_delta_h(path)
        src = ae.TableDelta(jnp.asarray(dh), tuple(int(t) for t in ts)) if ts is not None else ae.ConstantDelta(
            jnp.asarray(dh))
        out = np.asarray(ae.asyrp_edit(unet, params, schedule, delta=src, scales=scales, n_train_step=None, **common))
        write(f"delta_{j}", list(out), labels)

    metrics = {"task": "asyrp_edit", "model": source, "t_edit": t_edit, "t_boost": t_boost,
               "t_from_editor": i_t if editors else None, "n_inv": int(config.n_inv), "n_test": int(config.n_test), "scales": scales, "targets": targets, "grids": grids,
               "global_dh_averaged_over": gset_text,
               "columns": table, "wall_s": time.time() - t_all}
    write_metrics(workdir, metrics)
    return metrics
