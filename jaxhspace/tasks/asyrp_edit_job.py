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

from jaxhspace.editing import asyrp_edit as ae
from jaxhspace.editing.editor_io import load_editor
from jaxhspace.errors import JaxhspaceError
from jaxhspace.tasks.skeleton import Column, EditJob, Edits, Grid
from jaxhspace.world import require_asset

GLOBAL_DH_SETS = ("separate", "edited")


def editor_names(config) -> list[str]:
    """Names of the editors in rows and captions: ``config.editor_names``, then each remaining editor folder's name."""
    names = list(config.get("editor_names", ()) or ())
    paths = list(config.editor_paths)
    return names + [os.path.basename(os.path.normpath(p)) for p in paths[len(names):]]


def _global_dh_set(config, size):
    """The images the global Δh is averaged over (official: the first K *training* images, applied to test images,
    kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:779-829) and a description for the report.

    ``global_dh_set``: "separate" (default) = ``global_dh_paths`` if given, else SynthFaces with
    ``global_dh_seed`` (default 0, the training split: asyrp_train's data_seed) — never the edited faces;
    "edited" = the first K edited images (in-sample, the old behaviour). Returns ``(images [K,S,S,3] | None, text)``.
    """
    k = int(config.global_dh_images)
    if config.get("global_dh_set", "separate") == "edited":
        return None, f"the first {k} edited images (in-sample)"
    paths = list(config.get("global_dh_paths", ()))
    if paths:
        from jaxhspace.data.images import expand_image_paths, load_images

        files = sorted(expand_image_paths(paths))[:k]
        return load_images(files, size), f"{len(files)} images from global_dh_paths {paths}"
    from jaxhspace.data import synthfaces

    seed = int(config.get("global_dh_seed", 0))
    return synthfaces.generate(seed, k, size=size)[0], f"{k} SynthFaces with seed {seed} (not the edited faces)"


def _t_source(editors) -> int:
    """Index of the editor whose meta gives t_edit / t_boost when ``config.t_edit`` / ``t_boost`` are -1: the attribute
    with the highest cos(E_T(src), E_T(tgt)) (``cos_src_tgt``), as the official multi-attribute edit
    (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:630-655); the first editor if any editor's meta lacks the
    cosine."""
    coss = [m.get("cos_src_tgt") for _, _, m in editors]
    if len(coss) < 2 or any(c is None for c in coss):
        return 0
    return int(np.argmax(np.asarray(coss, np.float64)))


class AsyrpEditJob(EditJob):
    """Faces → DDIM inversion → the asymmetric reverse process with each editor's Δh (and its global mean Δh, the
    combination, fixed Δh files) at every scale; one grid per editor / global Δh / combination / Δh file."""

    task = "asyrp_edit"
    single_grid = False

    def validate(self, config) -> None:
        """Something to edit with; the global-Δh set (never the edited faces unless asked)."""
        if not config.editor_paths and not config.delta_h_paths:
            raise JaxhspaceError("nothing to edit with: set config.editor_paths (train one with "
                                 "configs/asyrp_train.py or convert an official checkpoint) and/or "
                                 "config.delta_h_paths")
        if config.global_dh_images <= 0 or not config.editor_paths:
            return
        mode = config.get("global_dh_set", "separate")
        if mode not in GLOBAL_DH_SETS:
            raise JaxhspaceError(f"config.global_dh_set must be 'separate' (official: training images) or 'edited', "
                                 f"got {mode!r}")
        if mode == "edited" or config.get("global_dh_paths", ()):
            return
        if config.image_paths:
            raise JaxhspaceError("global_dh_images > 0 with image_paths: set config.global_dh_paths to training "
                                 "images (the official averages over the first K training images), or "
                                 "global_dh_set='edited' for the in-sample mean over the edited images, or "
                                 "global_dh_images=0")
        seed = int(config.get("global_dh_seed", 0))
        if seed == int(config.data_seed):
            raise JaxhspaceError(f"global_dh_seed ({seed}) equals data_seed: the global Δh would be averaged over the "
                                 "edited faces; pick another seed or set global_dh_set='edited'")

    def edit(self, config, world, faces, workdir) -> Edits:
        unet, params, schedule = world.model, world.params, world.schedule
        x0 = jnp.asarray(faces)
        use_global = config.global_dh_images > 0 and config.editor_paths
        gset, gset_text = _global_dh_set(config, world.image_size) if use_global else (None, None)
        x_lat = ae.invert(unet, params, schedule, world.to_x(x0), int(config.n_inv))
        if use_global:
            g_lat = x_lat[:int(config.global_dh_images)] if gset is None else ae.invert(
                unet, params, schedule, world.to_x(jnp.asarray(gset)), int(config.n_inv))
        scales = [0.0] + [float(s) for s in config.scales if float(s) != 0.0]
        labels = [f"s={s:g}" for s in scales[1:]]
        key = jax.random.PRNGKey(int(config.seed))
        editors = [load_editor(require_asset(p)) for p in config.editor_paths]
        names = editor_names(config)
        i_t = _t_source(editors)
        meta0 = editors[i_t][2] if editors else {}
        t_edit = int(config.t_edit) if config.t_edit >= 0 else int(meta0.get("t_edit", 500))
        t_boost = int(config.t_boost) if config.t_boost >= 0 else int(meta0.get("t_boost", 200))
        common = dict(x_lat=x_lat, n_test=int(config.n_test), t_edit=t_edit, t_boost=t_boost, key=key)
        targets = list(config.get("target_factors", ()))
        targets += [m.get("target_factor", "") for _, _, m in editors[len(targets):]]
        grids, runs = [], []

        def n_train_of(meta):
            if config.n_train_step > 0:
                return int(config.n_train_step)
            if config.n_train_step == 0:
                return None
            return meta.get("n_train_step")

        def edit(delta, **kw):  # [K, B, S, S, 3] images
            return world.to_images(np.asarray(ae.asyrp_edit(unet, params, schedule, delta=delta, **common, **kw)))

        def grid(name, out, method, direction, row_label, target=""):
            recon = out[0]
            cols = [Column(o, lab, f"{row_label} {lab}", method, direction, s, target,
                           score={"column": lab, "mean_abs_change_vs_recon": float(np.mean(np.abs(o - recon)))})
                    for o, lab, s in zip(out[1:], labels, scales[1:])]
            grids.append(Grid(name, recon, cols))

        for i, (editor, eparams, meta) in enumerate(editors):
            t0 = time.time()
            src = ae.EditorDelta(eparams, editor)
            grid(f"edit_{i}", edit(src, scales=scales, n_train_step=n_train_of(meta)), "asyrp editor", names[i],
                 f"{names[i]} editor", targets[i])
            runs.append({"grid": f"edit_{i}", "wall_s": time.time() - t0, "source": config.editor_paths[i],
                         "n_train_step": n_train_of(meta)})
            if use_global:
                k = int(g_lat.shape[0])
                dhs, _ = ae.collect_delta_h(unet, params, schedule, src, g_lat, int(config.n_test), t_edit,
                                            scale=1.0, n_train_step=n_train_of(meta))
                g = ae.delta_h_global(dhs)
                ae.save_delta_h(os.path.join(workdir, f"global_dh_{i}.npz"), g,
                                meta={"editor": config.editor_paths[i], "images": k, "t_edit": t_edit,
                                      "averaged_over": gset_text})
                grid(f"global_{i}", edit(ae.ConstantDelta(g), scales=scales, n_train_step=n_train_of(meta)),
                     "asyrp global", names[i], f"{names[i]} global Δh", targets[i])

        if len(editors) >= 2:
            grids.append(self._combination(config, editors, names, targets, edit, n_train_of(meta0)))

        for j, path in enumerate(config.delta_h_paths):
            dh, ts, _ = ae.load_delta_h(path)
            table = ae.TableDelta(jnp.asarray(dh), tuple(int(t) for t in ts)) if ts is not None else None
            fixed = table if table is not None else ae.ConstantDelta(jnp.asarray(dh))
            name = os.path.splitext(os.path.basename(path))[0]
            grid(f"delta_{j}", edit(fixed, scales=scales, n_train_step=None), "asyrp delta", name, f"Δh {name}")

        metrics = {"t_edit": t_edit, "t_boost": t_boost, "t_from_editor": i_t if editors else None,
                   "n_inv": int(config.n_inv), "n_test": int(config.n_test), "scales": scales, "targets": targets,
                   "editors": names, "editor_runs": runs, "global_dh_averaged_over": gset_text}
        return Edits(grids, metrics)

    @staticmethod
    def _combination(config, editors, names, targets, edit, ntr) -> Grid:
        """Grid ``combination``: reconstruction, each editor alone, all combined (Σ c_i/√N·Δh_i)."""
        srcs = [ae.EditorDelta(p, e) for e, p, _ in editors]
        n = len(srcs)
        coeffs = jnp.asarray(config.combine_coeffs if config.combine_coeffs else [1.0] * n, jnp.float32)
        recon = edit(None, scales=[0.0])[0]
        if len({(e.config, ) for e, _, _ in editors}) == 1:  # one vmap over the N editors
            alone = [o[0] for o in edit(ae.stack_deltas(srcs), scales=[1.0], stacked=True, n_train_step=ntr)]
        else:
            alone = [edit(s, scales=[1.0], n_train_step=ntr)[0] for s in srcs]
        both = edit(ae.CombinedDelta(tuple(srcs), coeffs), scales=[1.0], n_train_step=ntr)[0]

        def col(img, lab, label, direction, target=""):
            return Column(img, lab, label, "asyrp combination", direction, None, target,
                          score={"column": lab, "mean_abs_change_vs_recon": float(np.mean(np.abs(img - recon)))})

        cols = [col(a, f"attr_{i}", f"combination: {names[i]} alone", names[i], targets[i])
                for i, a in enumerate(alone)]
        cols.append(col(both, "combined", "combination: combined", " + ".join(names)))
        return Grid("combination", recon, cols)

    def finish(self, config, metrics, scored, paths) -> None:
        """``grids`` ({name: png}) and ``columns`` ({name: [per-column stats: mean |edit − recon|, the probe's
        ``probe`` and ``target`` scores]}, the reconstruction first)."""
        metrics["grids"] = dict(paths)
        metrics["columns"] = {
            name: [{"column": "recon", "mean_abs_change_vs_recon": 0.0}]
            + [{**s.column.score, **({"probe": s.probe} if s.probe is not None else {}),
                **({"target": s.target} if s.target is not None else {})} for s in cols]
            for name, cols in scored.items()}


JOB = AsyrpEditJob()
run, validate = JOB.run, JOB.validate
