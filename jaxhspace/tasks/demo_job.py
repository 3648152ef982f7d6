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

from jaxhspace.errors import JaxhspaceError
from jaxhspace.report import write_report
from jaxhspace.tasks.common import write_metrics
from jaxhspace.tasks.rows import read_rows

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


def stage_configs(config) -> list[tuple[str, str, ml_collections.ConfigDict]]:
    """Every job the demo will run, in order: ``(stage, job, sub-config)``; unknown stages or latent jobs raise a
    JaxhspaceError naming them."""
    unknown = [s for s in config.stages if s not in STAGES]
    if unknown:
        raise JaxhspaceError(f"config.stages has unknown stages {unknown}; choose from {list(STAGES)}")
    out = []
    for stage in config.stages:
        if stage != "latent":
            out.append((stage, stage, stage_config(config, stage)))
            continue
        bad = [j for j in config.latent.jobs if j not in LATENT_JOBS]
        if bad:
            raise JaxhspaceError(f"config.latent.jobs has unknown jobs {bad}; choose from {list(LATENT_JOBS)}")
        out += [(stage, job, latent_job_config(config, job)) for job in config.latent.jobs]
    return out


def validate(config) -> None:
    """Check every stage's sub-config with its job's checks (:func:`jaxhspace.tasks.validate.validate_job`) before
    the first stage runs; errors name the demo's field (``config.latent.pca.supervised_factor``)."""
    from jaxhspace.tasks.validate import validate_job

    for stage, job, sub in stage_configs(config):
        where = f"config.{stage}." if stage == job else f"config.{stage}.{job}."
        try:
            validate_job(job, sub)
        except JaxhspaceError as e:
            raise JaxhspaceError(str(e).replace("config.", where, 1) if "config." in str(e) else
                                 f"demo stage {where[7:-1]}: {e}") from None


def stage_rows(metrics: dict, prefix: str = "") -> list[dict]:
    """The report rows of a stage job's ``metrics["rows"]`` (typed :class:`~jaxhspace.tasks.rows.EditRow` s), each
    label prefixed with ``prefix``."""
    return [r.report_row(prefix) for r in read_rows(metrics)]


def latent_rows(results: dict) -> list[dict]:
    """Rows of the latent stage: its pullback / Haas / PCA rows prefixed "latent", then the prompt edits."""
    rows = []
    for job in ("pullback", "haas", "pca"):
        if job in results:
            rows += stage_rows(results[job], "latent ")
    return rows + stage_rows(results.get("prompt_edit") or {})


def _grid_caption(grid: str, names: list[str], scales) -> str:
    """Caption of an asyrp_edit grid (edit_<i>, global_<i>, combination, delta_<j>)."""
    if grid == "combination":
        return "combination: input, reconstruction, each editor alone, all together (Σ Δh_i/√N)"
    kind, _, i = grid.partition("_")
    what = {"edit": f"{names[int(i)]} editor", "global": f"{names[int(i)]}: global Δh"}.get(kind, f"Δh file {i}")
    return f"{what}; rows = faces; columns = input, reconstruction, scales {list(scales)}"


def stage_metric_paths(workdir: str, results: dict) -> dict:
    """``{stage: workdir/stage/metrics.json}``; the latent stage runs one job per folder: ``latent/<job>`` keys."""
    paths = {}
    for stage, res in results.items():
        for key, sub in ([(f"{stage}/{job}", os.path.join(stage, job)) for job in res] if stage == "latent"
                         else [(stage, stage)]):
            paths[key] = os.path.join(workdir, sub, "metrics.json")
    return paths


def run(config, workdir: str) -> dict:
    """Run the stages in ``config.stages`` and write ``index.html`` + ``metrics.json``; see configs/demo.py."""
    from jaxhspace.tasks import get_task

    t_all = time.time()
    validate(config)
    results: dict = {}
    walls: dict = {}
    for stage, job, sub in stage_configs(config):
        if stage not in walls:
            print(f"[demo] stage {stage} ...", flush=True)
            walls[stage] = 0.0
        t0 = time.time()
        if stage == "latent":
            results.setdefault(stage, {})[job] = get_task(job)(sub, os.path.join(workdir, stage, job))
        else:
            results[stage] = get_task(job)(sub, os.path.join(workdir, stage))
        walls[stage] += time.time() - t0
        if stage != "latent" or job == config.latent.jobs[-1]:
            print(f"[demo] stage {stage} done in {walls[stage]:.0f} s", flush=True)

    sections, table = [], {}
    if "asyrp_edit" in results:
        m = results["asyrp_edit"]
        names = m["editors"]
        table["asyrp_edit"] = stage_rows(m)
        imgs = [(p, _grid_caption(g, names, m["scales"][1:])) for g, p in m["grids"].items()]
        sections.append(dict(id="asyrp", title="Asyrp: trained editors Δh = f_t(h) in the asymmetric reverse process",
                             text=f"Editors {', '.join(names)} (trained with the shipped tiny CLIP's directional "
                                  "loss); "
                                  f"edited for t ≥ t_edit = {m['t_edit']}, quality boosting below t_boost = "
                                  f"{m['t_boost']}; Δh scaled linearly; the global Δh is the editor's Δh averaged over "
                                  f"{m.get('global_dh_averaged_over') or 'faces'} and timesteps and added as a "
                                  "constant.",
                             images=imgs, rows=table["asyrp_edit"]))
    if "pullback" in results:
        m = results["pullback"]
        table["pullback"] = stage_rows(m)
        sections.append(dict(id="pullback", title="Pullback (Park et al.): right singular vectors of ∂h/∂x at x_t",
                             text=f"Top right singular vectors v_i of J = ∂h/∂x at t = {m['edit_t']} per face "
                                  "(randomized block Krylov on jvp/vjp products), applied as x̂ = x + γ[ε(x+λv) − ε(x)] "
                                  "and sampled down. Columns: input, reconstruction, then v_i −/+ for each direction.",
                             images=[(m["grid"], "pullback edits"), (m["singular_value_plot"], "σ_i of ∂h/∂x")],
                             rows=table["pullback"]))
    if "haas" in results:
        m = results["haas"]
        table["haas"] = stage_rows(m)
        sections.append(dict(id="haas", title="Haas et al.: singular vectors of ∂ε/∂h",
                             text=f"Right singular vectors of J = ∂ε/∂h at t = {m['jacobian_t']} per face, added as "
                                  "Δh = scale·σ_i·v_i (symmetric edit, as Haas et al.). Columns: input, "
                                  "reconstruction, directions × scales.",
                             images=[(m["grid"], "Haas edits"), (m["singular_value_plot"], "σ_i of ∂ε/∂h")],
                             rows=table["haas"]))
    if "pca" in results:
        m = results["pca"]
        table["pca"] = stage_rows(m)
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
               "stage_wall_s": walls, "editors": results.get("asyrp_edit", {}).get("editors", []), "scores": table,
               "stage_metrics": stage_metric_paths(workdir, results), "report": report}
    path = write_metrics(workdir, metrics)
    print(f"[demo] report: {os.path.abspath(report)}\n[demo] metrics: {os.path.abspath(path)}", flush=True)
    return {"report": os.path.abspath(report), "metrics": os.path.abspath(path), "wall_s": metrics["wall_s"],
            "stage_wall_s": walls, "summary": summarize(table)}


def summarize(table: dict) -> list[str]:
    """One line per edit: 'label: target ±x (max leakage y)'."""
    return [f"{r['edit']}: {r['target']} {r['target_change']:+.3f} (max leakage {r['max_leakage']:.3f})"
            for rows in table.values() for r in rows]

