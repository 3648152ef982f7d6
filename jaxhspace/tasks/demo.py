"""Job ``demo``: edit the same faces three ways (Asyrp editors, Park pullback, Haas ∂ε/∂h and PCA) on the pixel DDPM,
and again in the h-space of the text-conditioned latent pipeline (stage ``latent``), and write one scored,
self-contained report ``workdir/index.html`` plus ``workdir/metrics.json``.

Each stage is the stand-alone job of the same name (``asyrp_edit``, ``pullback``, ``haas``, ``pca``) run on
a sub-config (``config.<stage>`` plus the shared fields) into ``workdir/<stage>/``; the ``latent`` stage runs the
``pullback``, ``haas``, ``pca`` and ``prompt_edit`` jobs on ``config.latent.model_path`` into
``workdir/latent/<job>/``. This module only
collects their probe scores into one table format and renders the report.
"""
from __future__ import annotations

import os
import time

import ml_collections

from jaxhspace.report import write_report
from jaxhspace.tasks.common import write_metrics

SHARED = ("model_path", "seed", "data_seed", "num_images", "image_paths", "upscale")
STAGES = ("asyrp_edit", "pullback", "haas", "pca", "latent")
LATENT_JOBS = ("pullback", "haas", "pca", "prompt_edit")  # the jobs of the latent stage, in this order


def stage_config(config, stage: str) -> ml_collections.ConfigDict:
    """``config[stage]`` with the shared fields (model, seed, faces, upscale) copied in and ``task`` set."""
    sub = ml_collections.ConfigDict(config[stage].to_dict())
    for k in SHARED:
        sub[k] = config[k]
    sub.task = stage
    return sub


def latent_job_config(config, job: str) -> ml_collections.ConfigDict:
    """``config.latent[job]`` on the latent pipeline ``config.latent.model_path`` (prompt ``config.latent.prompt``)
    with the shared faces, seed and upscale of the demo."""
    sub = ml_collections.ConfigDict(config.latent[job].to_dict())
    for k in SHARED:
        if k != "model_path":
            sub[k] = config[k]
    sub.model_path = config.latent.model_path
    if job != "prompt_edit":
        sub.prompt = config.latent.prompt
    sub.task = job
    return sub


def latent_rows(results: dict) -> list[dict]:
    """Rows of the latent stage: its pullback / Haas / PCA rows prefixed "latent", then the prompt edits."""
    rows = []
    for job in ("pullback", "haas", "pca"):
        if job in results:
            rows += [{**r, "edit": f"latent {r['edit']}"} for r in direction_rows(results[job], job)]
    m = results.get("prompt_edit")
    for s in (m or {}).get("edit_scores", []):
        rows.append(_row(f"prompt edit {m['source_prompt']!r} -> {s['prompt']!r}", s, s["target"], s["target_change"]))
    return rows


def _row(edit: str, probe: dict, target: str = "", target_change=None) -> dict:
    """One score-table row from ``scoring.factor_changes`` output; without a target the dominant factor
    is the target and the largest other change the leakage."""
    tgt = target.partition("=")[0] or probe["dominant"]
    changes = probe["changes"]
    others = [v for k, v in changes.items() if k != tgt]
    if target_change is None:
        target_change = probe["signed"].get(tgt)
        target_change = changes[tgt] if target_change is None else target_change
    return {"edit": edit, "target": tgt, "target_class": target.partition("=")[2] or None, "supervised": bool(target),
            "target_change": float(target_change),
            "changes": {k: float(v) for k, v in changes.items()}, "max_leakage": float(max(others))}


def asyrp_rows(m: dict, names: list[str]) -> list[dict]:
    """Rows of the asyrp_edit job's metrics: every editor × scale, its global Δh × scale, the combination."""
    rows, targets = [], m.get("targets", [])
    for grid, cols in m["columns"].items():
        kind, _, idx = grid.partition("_")
        for c in cols:
            if "probe" not in c:
                continue
            if kind == "combination":
                if c["column"].startswith("attr_"):
                    i = int(c["column"][5:])
                    rows.append(_row(f"combination: {names[i]} alone", c["probe"],
                                     targets[i] if i < len(targets) else ""))
                else:
                    rows.append(_row(f"combination: {c['column']}", c["probe"]))
            else:
                name = names[int(idx)]
                label = f"{name} editor {c['column']}" if kind == "edit" else f"{name} global Δh {c['column']}"
                t = c.get("target", {})
                rows.append(_row(label, c["probe"], t.get("target", ""), t.get("target_change")))
    return rows


def direction_rows(m: dict, stage: str) -> list[dict]:
    """Rows of the pullback / haas / pca jobs' ``edit_scores``."""
    rows = []
    for s in m.get("edit_scores", []):
        if stage == "pullback":
            label = f"pullback v{s['direction']} {'+' if s['sign'] > 0 else '-'}"
        elif stage == "haas":
            label = f"Haas v{s['direction']} x{s['scale']:g}"
        else:
            label = f"{s['direction']} x{s['scale']:g}"
            if "target" in s:  # a supervised direction: its known target's signed change, the rest is leakage
                t = s["target"]
                target = t["target"] + (f"={t['target_class']}" if t.get("target_class") else "")
                rows.append(_row(label, s, target, t["target_change"]))
                continue
        rows.append(_row(label, s))
    return rows


def _grid_caption(grid: str, names: list[str], scales) -> str:
    """Caption of an asyrp_edit grid (edit_<i>, global_<i>, combination)."""
    if grid == "combination":
        return "combination: input, reconstruction, each editor alone, all together (Σ Δh_i/√N)"
    kind, _, i = grid.partition("_")
    what = f"{names[int(i)]} editor" if kind == "edit" else f"{names[int(i)]}: global Δh"
    return f"{what}; rows = faces; columns = input, reconstruction, scales {list(scales)}"


def _editor_names(config) -> list[str]:
    names = list(config.editor_names) if config.get("editor_names") else []
    paths = list(config.asyrp_edit.editor_paths)
    return names + [os.path.basename(os.path.normpath(p)) for p in paths[len(names):]]


def run(config, workdir: str) -> dict:
    """Run the stages in ``config.stages`` and write ``index.html`` + ``metrics.json``; see configs/demo.py."""
    from jaxhspace.tasks import get_task

    t_all = time.time()
    unknown = [s for s in config.stages if s not in STAGES]
    if unknown:
        raise ValueError(f"config.stages has unknown stages {unknown}; choose from {list(STAGES)}")
    if "latent" in config.stages:
        bad = [j for j in config.latent.jobs if j not in LATENT_JOBS]
        if bad:
            raise ValueError(f"config.latent.jobs has unknown jobs {bad}; choose from {list(LATENT_JOBS)}")
    results, walls = {}, {}
    for stage in config.stages:
        print(f"[demo] stage {stage} ...", flush=True)
        t0 = time.time()
        if stage == "latent":
            results[stage] = {job: get_task(job)(latent_job_config(config, job), os.path.join(workdir, stage, job))
                              for job in config.latent.jobs}
        else:
            results[stage] = get_task(stage)(stage_config(config, stage), os.path.join(workdir, stage))
        walls[stage] = time.time() - t0
        print(f"[demo] stage {stage} done in {walls[stage]:.0f} s", flush=True)

    names = _editor_names(config)
    sections, table = [], {}
    if "asyrp_edit" in results:
        m = results["asyrp_edit"]
        table["asyrp_edit"] = asyrp_rows(m, names)
        imgs = [(p, _grid_caption(g, names, m["scales"][1:])) for g, p in m["grids"].items()]
        sections.append(dict(id="asyrp", title="Asyrp: trained editors Δh = f_t(h) in the asymmetric reverse process",
                             text=f"Editors {', '.join(names)} (trained with the shipped tiny CLIP's directional loss); "
                                  f"edited for t ≥ t_edit = {m['t_edit']}, quality boosting below t_boost = "
                                  f"{m['t_boost']}; Δh scaled linearly; the global Δh is the editor's Δh averaged over "
                                  f"{m.get('global_dh_averaged_over') or 'faces'} and timesteps and added as a "
                                  "constant.",
                             images=imgs, rows=table["asyrp_edit"]))
    if "pullback" in results:
        m = results["pullback"]
        table["pullback"] = direction_rows(m, "pullback")
        sections.append(dict(id="pullback", title="Pullback (Park et al.): right singular vectors of ∂h/∂x at x_t",
                             text=f"Top right singular vectors v_i of J = ∂h/∂x at t = {m['edit_t']} per face "
                                  "(randomized block Krylov on jvp/vjp products), applied as x̂ = x + γ[ε(x+λv) − ε(x)] "
                                  "and sampled down. Columns: input, reconstruction, then v_i −/+ for each direction.",
                             images=[(m["grid"], "pullback edits"), (m["singular_value_plot"], "σ_i of ∂h/∂x")],
                             rows=table["pullback"]))
    if "haas" in results:
        m = results["haas"]
        table["haas"] = direction_rows(m, "haas")
        sections.append(dict(id="haas", title="Haas et al.: singular vectors of ∂ε/∂h",
                             text=f"Right singular vectors of J = ∂ε/∂h at t = {m['jacobian_t']} per face, added as "
                                  "Δh = scale·σ_i·v_i (symmetric edit, as Haas et al.). Columns: input, "
                                  "reconstruction, directions × scales.",
                             images=[(m["grid"], "Haas edits"), (m["singular_value_plot"], "σ_i of ∂ε/∂h")],
                             rows=table["haas"]))
    if "pca" in results:
        m = results["pca"]
        table["pca"] = direction_rows(m, "pca")
        sections.append(dict(id="pca", title="PCA of h per timestep (Haas et al.) and a supervised direction",
                             text="Principal components of h over inverted SynthFaces at each timestep, added as "
                                  "Δh_t = scale·std_t·u_t; the supervised row is the mean-h difference between faces "
                                  f"with and without '{m['supervised']['factor']}'.",
                             images=[(m["grid"], "PCA edits"), (m["std_plot"], "std of h along each PC")],
                             rows=table["pca"]))

    if "latent" in results:
        r = results["latent"]
        table["latent"] = latent_rows(r)
        imgs = []
        for job, cap in (("pullback", "latent pullback edits (J = ∂h/∂z)"), ("haas", "latent Haas edits (∂ε/∂h)"),
                         ("pca", "latent PCA and supervised global Δh (asymmetric)"),
                         ("prompt_edit", "prompt edits (no h-space)")):
            if job in r:
                imgs.append((r[job]["grid"], cap))
        sections.append(dict(id="latent", title="Latent h-space: the text-conditioned SynthFaces pipeline",
                             text=f"The same faces encoded by the pipeline's VAE ({config.latent.model_path}), "
                                  f"DDIM-inverted with the prompt {config.latent.prompt!r}, and edited in the UNet "
                                  "bottleneck of the latent model: pullback directions of J = ∂h/∂z, Haas directions "
                                  "of ∂ε/∂h, PCs of h and supervised mean-difference Δh (smile, red hair, glasses; "
                                  "mean h of positives minus negatives per timestep, added in the asymmetric reverse "
                                  "process), and prompt edits as the non-h-space baseline.",
                             images=imgs, rows=table["latent"]))

    intro = ("Every edit is scored by the shipped SynthFaces attribute probe against the reconstruction of the same "
             "faces: <b>target change</b> (signed, in fractions of the factor's full range; total-variation of the "
             "class probabilities for hair colour and background) and the change of every other factor "
             "(<b>leakage</b>). For unsupervised directions the factor that moved most is called the target. "
             "Green: target; red: a leak at least half as large as the target change.")
    report = write_report(os.path.join(workdir, "index.html"), "jaxhspace demo: three ways to edit h-space", intro,
                          sections)
    metrics = {"task": "demo", "stages": list(config.stages), "wall_s": time.time() - t_all,
               "stage_wall_s": walls, "editors": names, "scores": table,
               "stage_metrics": {s: os.path.join(workdir, s, "metrics.json") for s in results}, "report": report}
    path = write_metrics(workdir, metrics)
    print(f"[demo] report: {os.path.abspath(report)}\n[demo] metrics: {os.path.abspath(path)}", flush=True)
    return {"report": os.path.abspath(report), "metrics": os.path.abspath(path), "wall_s": metrics["wall_s"],
            "stage_wall_s": walls, "summary": summarize(table)}


def summarize(table: dict) -> list[str]:
    """One line per edit: 'label: target ±x (max leakage y)'."""
    return [f"{r['edit']}: {r['target']} {r['target_change']:+.3f} (max leakage {r['max_leakage']:.3f})"
            for rows in table.values() for r in rows]

