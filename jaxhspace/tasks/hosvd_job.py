"""Job ``hosvd``: Tucker/HOSVD vs matrix SVD of the pullback Jacobian ``J = dh/dx`` at an edit time.

For a few test faces, inverted to the edit time ``t``:

1. **Energy per parameter.** One randomized block Krylov SVD (``svd_k`` triplets) per face is shared
   by every Tucker model (it is the exact part of their mode Grams, see
   :mod:`jaxhspace.geometry.hosvd`). For each rank choice ``(out_modes, out_ranks, in_modes,
   in_ranks)`` the captured energy ``||core||^2 / ||J||_F^2`` of the Tucker model (De Lathauwer et
   al. 2000, HOSVD + ``hooi_iters`` HOOI sweeps) is compared with the energy
   ``sum_{i<=k} s_i^2 / ||J||_F^2`` of the rank-k SVD with the same number of parameters
   (Tucker ``sum r_n d_n + prod r_n``, SVD ``k (m + n + 1)``; ``k`` rounded, and the SVD energy
   linearly interpolated at exactly the Tucker's parameter count). Both fractions share the
   denominator ``||J||_F^2`` (exact if ``min(m, n) <= exact_norm_max_dim``, else the engine's
   unbiased estimate), so which method captures more does not depend on its accuracy.
2. **Edits.** The top ``n_dirs`` SVD directions ``v_i`` vs the top ``n_dirs`` separable HOSVD
   directions of rank choice ``edit_choice`` (ranked by input-side core energy,
   :func:`~jaxhspace.directions.hosvd_directions.top_separable_directions`), each at both signs with
   :func:`~jaxhspace.editing.pullback_edit.edit_steps` + ``continue_sampling``; the probe's factor
   changes for each (dominant factor, its change, max leakage; cleaner = larger
   dominant / leakage).

Writes ``hosvd_grid.png`` (rows: faces; columns: input, reconstruction, SVD v0-, v0+, ..., HOSVD
d0-, d0+, ...), ``hosvd_table.md`` / ``hosvd_table.json`` and ``metrics.json`` (with a text
``summary``). Jacobian products are counted per stage (``n_jvp``, ``n_vjp``) as in the pullback job.
"""
from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxhspace.directions._solve import top_k_svd
from jaxhspace.directions.hosvd_directions import (matched_svd_rank, svd_num_params, top_separable_directions,
                                                   tucker_num_params)
from jaxhspace.directions.pullback import pullback_operator
from jaxhspace.editing.pullback_edit import continue_sampling, edit_steps
from jaxhspace.errors import JaxhspaceError
from jaxhspace.geometry.hosvd import jacobian_hosvd, resolve_modes
from jaxhspace.models.functional import eps_fn
from jaxhspace.tasks.inputs import invert_to
from jaxhspace.tasks.skeleton import Column, EditJob, Edits, Grid


def _choices(config):
    out = []
    for c in config.rank_choices:
        om, orank, im, irank = c
        out.append((om, tuple(int(r) for r in orank), im, tuple(int(r) for r in irank)))
    if not out:
        raise JaxhspaceError("config.rank_choices is empty: give at least one (out_modes, out_ranks, in_modes, "
                             "in_ranks)")
    return out


def _svd_energy(s2, frob, k):
    return float(np.sum(s2[:k]) / frob)


def _interp_svd_energy(s2, frob, P, m, n):
    """SVD energy at (fractional) rank P / (m + n + 1), linear between integer ranks (None if beyond s)."""
    kf = P / (m + n + 1)
    lo = int(np.floor(kf))
    if lo + 1 > len(s2):
        return None
    c = np.concatenate([[0.0], np.cumsum(s2)]) / frob
    return float(c[lo] + (kf - lo) * (c[lo + 1] - c[lo]))


def _fmt(x, nd=4):
    return "n/a" if x is None else f"{x:.{nd}f}"


class HosvdJob(EditJob):
    """Faces → x_t → per face one matrix SVD of ∂h/∂x shared by every Tucker model → energies at equal parameter
    counts → edits along the top SVD and separable HOSVD directions (module docstring)."""

    task = "hosvd"

    def validate(self, config) -> None:
        """``rank_choices`` non-empty and well formed; ``edit_choice`` one of them."""
        choices = _choices(config)
        if not 0 <= config.edit_choice < len(choices):
            raise JaxhspaceError(f"config.edit_choice {config.edit_choice} outside 0..{len(choices) - 1} (the index "
                                 "of one of config.rank_choices)")

    def edit(self, config, world, faces, workdir) -> Edits:
        choices = _choices(config)
        model, params, schedule = world.model, world.params, world.schedule
        x0 = faces
        f = eps_fn(model, params)
        x_t, t, grid = invert_to(model, params, schedule, world.to_x(x0), config.n_steps, config.edit_t)
        key = jax.random.PRNGKey(config.seed)
        recon = world.to_images(continue_sampling(f, x_t, grid, schedule, config.t_boost, key))
        N = x_t.shape[0]

        per_image, svd_dirs, hosvd_dirs, hosvd_rows_all = [], [], [], []
        for i in tqdm(range(N), desc="SVD + Tucker models"):
            kimg = jax.random.fold_in(key, i)
            op = pullback_operator(model, params, x_t[i], t, config.chunk_size)
            m, n = op.dim_out, op.dim_in
            # matched SVD ranks for all choices, so the shared SVD is large enough
            need = []
            for om, orank, im, irank in choices:
                od = [int(np.prod([op.out_shape[a] for a in g])) for g in resolve_modes(om, op.out_shape)]
                idm = [int(np.prod([op.in_shape[a] for a in g])) for g in resolve_modes(im, op.in_shape)]
                P = tucker_num_params(od + idm, list(orank) + list(irank))
                need.append(int(np.ceil(P / (m + n + 1))) + 1)
            k_svd = min(max([config.svd_k, config.n_dirs] + need), m, n)
            t0 = time.time()
            svd = top_k_svd(op, k_svd, kimg, config.svd_method, tol=config.svd_tol, max_iters=config.svd_max_iters)
            svd_wall = time.time() - t0
            s2 = np.asarray(svd.s, np.float64) ** 2
            img = {"image": i, "m": m, "n": n, "svd_k": k_svd, "svd_s": np.asarray(svd.s).tolist(),
                   "svd_products": {"n_jvp": svd.n_jvp, "n_vjp": svd.n_vjp}, "svd_wall_s": svd_wall, "choices": []}
            for c, (om, orank, im, irank) in enumerate(choices):
                t0 = time.time()
                # same key for every choice: same probes, so one ||J||_F^2 estimate shared by all rows
                res = jacobian_hosvd(op, orank, irank, jax.random.fold_in(kimg, 1000), out_modes=om, in_modes=im,
                                     svd=svd, n_probes=config.n_probes, hooi_iters=config.hooi_iters,
                                     exact_norm_max_dim=config.exact_norm_max_dim, chunk_size=config.hosvd_chunk)
                wall = time.time() - t0
                frob = res.frobenius_sq
                P = tucker_num_params(res)
                k = matched_svd_rank(P, m, n)
                e_svd = _svd_energy(s2, frob, k) if k <= len(s2) else None
                e_svd_eq = _interp_svd_energy(s2, frob, P, m, n)
                row = {"choice": c, "out_modes": [list(g) for g in res.out_modes],
                       "in_modes": [list(g) for g in res.in_modes],
                       "out_ranks": list(res.out_ranks), "in_ranks": list(res.in_ranks), "tucker_params": P,
                       "tucker_energy": res.captured_energy, "hosvd_energy": res.hooi_history[0],
                       "svd_k": k, "svd_params": svd_num_params(m, n, k), "svd_energy": e_svd,
                       "svd_energy_equal_params": e_svd_eq,
                       "tucker_energy_per_kparam": 1e3 * res.captured_energy / P,
                       "svd_energy_per_kparam": None if e_svd is None else 1e3 * e_svd / svd_num_params(m, n, k),
                       "frobenius_sq": frob, "frobenius_exact": res.frobenius_exact,
                       "out_mode_energy": res.out_mode_energy, "in_mode_energy": res.in_mode_energy,
                       "products": {"n_jvp": res.n_jvp, "n_vjp": res.n_vjp}, "wall_s": wall}
                img["choices"].append(row)
                if c == config.edit_choice:
                    d, rows = top_separable_directions(res, config.n_dirs, side="in")
                    hosvd_dirs.append(np.asarray(d))
                    hosvd_rows_all.append(rows)
            # actual gains ||J v|| of the edit directions (n_dirs JVPs each method, counted)
            j0, v0 = op.n_jvp, op.n_vjp
            gain_images = np.asarray(op.matmat(jnp.asarray(hosvd_dirs[-1])))
            gains_h = np.linalg.norm(gain_images.reshape(len(hosvd_dirs[-1]), -1), axis=1)
            img["hosvd_dir_gain"] = gains_h.tolist()
            img["hosvd_dir_index"] = [list(r["in_index"]) for r in hosvd_rows_all[-1]]
            img["gain_products"] = {"n_jvp": op.n_jvp - j0, "n_vjp": op.n_vjp - v0}
            img["total_products"] = op.counts()
            svd_dirs.append(np.asarray(svd.v[: config.n_dirs]))
            per_image.append(img)

        # ---- aggregate energies over images ------------------------------------------------------
        def mean_of(c, field):
            vals = [img["choices"][c][field] for img in per_image]
            return None if any(v is None for v in vals) else float(np.mean(vals))

        energy_rows = []
        for c in range(len(choices)):
            r0 = per_image[0]["choices"][c]
            energy_rows.append({
                "choice": c, "out_modes": r0["out_modes"], "out_ranks": r0["out_ranks"], "in_modes": r0["in_modes"],
                "in_ranks": r0["in_ranks"], "tucker_params": r0["tucker_params"], "svd_k": r0["svd_k"],
                "svd_params": r0["svd_params"],
                **{f: mean_of(c, f) for f in ("tucker_energy", "hosvd_energy", "svd_energy", "svd_energy_equal_params",
                                              "tucker_energy_per_kparam", "svd_energy_per_kparam")},
                "tucker_products_mean": {s: float(np.mean([img["choices"][c]["products"][s] for img in per_image]))
                                         for s in ("n_jvp", "n_vjp")},
            })

        # ---- edits ----------------------------------------------------------------------------------
        Vs, Vh = np.stack(svd_dirs), np.stack(hosvd_dirs)        # [N, nd', H, W, C]
        nd_s, nd_h = Vs.shape[1], Vh.shape[1]
        combos = ([("svd", d, s) for d in range(nd_s) for s in (-1.0, 1.0)]
                  + [("hosvd", d, s) for d in range(nd_h) for s in (-1.0, 1.0)])
        dirs = np.concatenate([s * (Vs if meth == "svd" else Vh)[:, d] for meth, d, s in combos])
        xs = jnp.tile(x_t, (len(combos), 1, 1, 1))
        edited_t = edit_steps(f, xs, t, jnp.asarray(dirs), config.gamma, config.n_edit_steps, config.lam)
        edited = world.to_images(continue_sampling(f, edited_t, grid, schedule, config.t_boost, key))
        edited = edited.reshape((len(combos),) + tuple(x0.shape))
        columns = []
        for c, (meth, d, s) in enumerate(combos):
            gain = float(np.mean([img["svd_s"][d] if meth == "svd" else img["hosvd_dir_gain"][d] for img in per_image]))
            name = f"{'v' if meth == 'svd' else 'd'}{d}"
            columns.append(Column(edited[c], f"{meth} {name}{'+' if s > 0 else '-'}",
                                  f"{meth.upper()} {name} {'+' if s > 0 else '-'}", f"pullback {meth}", name, s,
                                  score={"method": meth, "direction": d, "sign": s, "gain_mean": gain,
                                         "index": None if meth == "svd" else [img["hosvd_dir_index"][d]
                                                                              for img in per_image],
                                         "pixel_change": float(np.sqrt(np.mean((edited[c] - recon) ** 2)))}))
        metrics = {"edit_t": t, "n_images": N, "svd_method": config.svd_method, "energy": energy_rows,
                   "per_image": per_image}
        return Edits([Grid("hosvd_grid", recon, columns)], metrics)

    def finish(self, config, metrics, scored, paths) -> None:
        """The edit rows (dominant factor, its change, leakage, selectivity), the summary and the Markdown / JSON
        tables ``hosvd_table.md`` / ``hosvd_table.json``."""
        edit_rows, have_probe = [], False
        for sc in scored["hosvd_grid"]:
            row = dict(sc.column.score)
            if sc.probe is not None:
                fc, have_probe = sc.probe, True
                row.update(dominant=fc["dominant"], dominant_change=float(fc["dominant_change"]),
                           max_leakage=float(fc["max_leakage"]),
                           selectivity=float(fc["dominant_change"] / max(fc["max_leakage"], 1e-6)),
                           changes={k_: float(v_) for k_, v_ in fc["changes"].items()})
            edit_rows.append(row)
        energy_rows, source, t = metrics["energy"], metrics["model"], metrics["edit_t"]
        summary = _summary(energy_rows, edit_rows, have_probe, source)
        table = {"energy": energy_rows, "edits": edit_rows, "edit_t": t, "model": source, "summary": summary}
        workdir = os.path.dirname(paths["hosvd_grid"])
        md_path = os.path.join(workdir, "hosvd_table.md")
        json_path = os.path.join(workdir, "hosvd_table.json")
        with open(md_path, "w") as fh:
            fh.write(_markdown(energy_rows, edit_rows, metrics["per_image"], t, source, config, summary))
        with open(json_path, "w") as fh:
            json.dump(table, fh, indent=2, default=float)
        metrics.update(edit_scores=edit_rows, table_md=md_path, table_json=json_path, summary=summary)


JOB = HosvdJob()
run, validate = JOB.run, JOB.validate


def _summary(energy_rows, edit_rows, have_probe: bool, source: str) -> str:
    parts = [f"Model: {source}."]
    wins = 0
    comp = []
    for r in energy_rows:
        ref = r["svd_energy_equal_params"]
        if ref is None:
            continue
        comp.append(r)
        wins += r["tucker_energy"] > ref
    if comp:
        ratio = np.mean([r["tucker_energy"] / max(r["svd_energy_equal_params"], 1e-12) for r in comp])
        per = ", ".join(f"choice {r['choice']}: {r['tucker_energy']:.3f} vs {r['svd_energy_equal_params']:.3f}"
                        for r in comp)
        better = wins > len(comp) / 2 or (2 * wins == len(comp) and ratio > 1)
        parts.append(
            f"Energy per parameter: Tucker captured more than the equal-size SVD in {wins}/{len(comp)} rank "
            f"choices ({per}; mean Tucker/SVD energy ratio {ratio:.2f}): "
            + ("Tucker is the more parameter-efficient model here." if better else
               "the matrix SVD is the more parameter-efficient model here."))
    if have_probe:
        agg = {}
        for meth in ("svd", "hosvd"):
            rows = [r for r in edit_rows if r["method"] == meth and "selectivity" in r]
            if rows:
                agg[meth] = (float(np.mean([r["dominant_change"] for r in rows])),
                             float(np.mean([r["max_leakage"] for r in rows])),
                             float(np.mean([r["selectivity"] for r in rows])))
        if len(agg) == 2:
            cleaner = "HOSVD separable" if agg["hosvd"][2] > agg["svd"][2] else "SVD"
            parts.append(
                f"Edits (probe, mean over directions and signs): SVD dominant change {agg['svd'][0]:.3f}, "
                f"leakage {agg['svd'][1]:.3f}, selectivity {agg['svd'][2]:.2f}; HOSVD dominant change "
                f"{agg['hosvd'][0]:.3f}, leakage {agg['hosvd'][1]:.3f}, selectivity {agg['hosvd'][2]:.2f}: "
                f"the {cleaner} edits were cleaner (higher dominant/leakage).")
    else:
        parts.append("No probe (assets/probe missing): edits not scored.")
    if "random" in source:
        parts.append("Random-init model: the numbers describe an untrained UNet, not face editing.")
    return " ".join(parts)


def _markdown(energy_rows, edit_rows, per_image, t, source, config, summary) -> str:
    L = [f"# HOSVD vs SVD of J = dh/dx at t = {t} ({source}, {len(per_image)} images)", ""]
    L += ["## Captured energy at equal parameter count (mean over images)", "",
          "| choice | out modes : ranks | in modes : ranks | Tucker params | Tucker energy (HOSVD) | SVD k | "
          "SVD params | SVD energy (k) | SVD energy @ equal params | Tucker / SVD energy per kparam | "
          "Tucker products (JVP+VJP) |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in energy_rows:
        L.append(f"| {r['choice']} | {r['out_modes']} : {tuple(r['out_ranks'])} | {r['in_modes']} : "
                 f"{tuple(r['in_ranks'])} | {r['tucker_params']} | {_fmt(r['tucker_energy'])} "
                 f"({_fmt(r['hosvd_energy'])}) | {r['svd_k']} | {r['svd_params']} | {_fmt(r['svd_energy'])} | "
                 f"{_fmt(r['svd_energy_equal_params'])} | {_fmt(r['tucker_energy_per_kparam'], 5)} / "
                 f"{_fmt(r['svd_energy_per_kparam'], 5)} | {r['tucker_products_mean']['n_jvp']:.0f}+"
                 f"{r['tucker_products_mean']['n_vjp']:.0f} |")
    L += ["", "SVD stage per image (shared by all Tucker models): " + ", ".join(
        f"{img['svd_k']} triplets, {img['svd_products']['n_jvp']}+{img['svd_products']['n_vjp']} products"
        for img in per_image), ""]
    L += [f"## Edits (edit_steps gamma={config.gamma}, lam={config.lam}, {config.n_edit_steps} steps; "
          f"HOSVD directions from choice {config.edit_choice})", "",
          "| method | dir | sign | index (per image) | gain ‖Jv‖ | pixel RMS change | dominant | change | "
          "max leakage | "
          "selectivity |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in edit_rows:
        idx = "-" if r["index"] is None else " ".join(str(tuple(i)) for i in r["index"])
        L.append(f"| {r['method']} | {r['direction']} | {'+' if r['sign'] > 0 else '-'} | {idx} | "
                 f"{r['gain_mean']:.4g} | {r['pixel_change']:.4f} | {r.get('dominant', 'n/a')} | "
                 f"{_fmt(r.get('dominant_change'), 3)} | {_fmt(r.get('max_leakage'), 3)} | "
                 f"{_fmt(r.get('selectivity'), 2)} |")
    L += ["", "## Summary", "", summary, ""]
    return "\n".join(L)
