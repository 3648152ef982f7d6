"""The one skeleton of every editing job (``pullback``, ``haas``, ``pca``, ``asyrp_edit``, ``prompt_edit``):

    validate(config) → load the world → load the faces → edit (the job's hook) → score → grids → metrics.json

A job is an :class:`EditJob` that fills two hooks: :meth:`EditJob.validate` (checks before any work) and
:meth:`EditJob.edit` (faces → x_t → directions or editors → edited images, returned as :class:`Grid` s of
:class:`Column` s). The skeleton does everything around them the same way for every job: the model's
:class:`~jaxhspace.tasks.inputs.World`, the faces (:func:`~jaxhspace.tasks.inputs.load_faces`, one loader and one
size rule), the probe's scores of every column against the grid's reconstruction, the grid PNGs (rows: faces;
columns: input, reconstruction, then the edits), the typed rows (:class:`~jaxhspace.tasks.rows.EditRow`,
``metrics["rows"]``) and ``metrics.json``. :meth:`EditJob.finish` may add job-specific fields from the scores.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional

import numpy as np

from jaxhspace.tasks.rows import EditRow, make_row


@dataclasses.dataclass
class Column:
    """One edited column of a grid.

    Attributes:
      images: ``[N, S, S, 3]`` in [-1, 1], the edited faces.
      column: the grid column's header (``"v0+"``, ``"s=1"``).
      label: the report row's name (``"pullback v0 +"``).
      method, direction, scale: as :class:`~jaxhspace.tasks.rows.EditRow`.
      target: a known target factor ("glasses", "hair_color=red") or "" (unsupervised: the dominant factor).
      score: fields copied into this column's ``metrics["edit_scores"]`` entry (e.g. ``{"direction": 0,
        "sign": 1.0}``).
    """

    images: np.ndarray
    column: str
    label: str
    method: str
    direction: str
    scale: Optional[float]
    target: str = ""
    score: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Grid:
    """One grid PNG ``<name>.png``: rows are faces; columns input, ``recon`` (``[N, S, S, 3]``, what every column is
    scored against), then ``columns``."""

    name: str
    recon: np.ndarray
    columns: list


@dataclasses.dataclass
class Edits:
    """What a job's :meth:`EditJob.edit` hook returns: its grids and its own metrics fields."""

    grids: list
    metrics: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Scored:
    """A column with its probe scores: ``probe`` (:func:`~jaxhspace.editing.scoring.factor_changes` output),
    ``target`` (:func:`~jaxhspace.editing.scoring.target_effect` output with ``per_face``, or None) and its
    :class:`EditRow` (None when the faces are not scored: no probe, or a size the probe does not score)."""

    column: Column
    probe: Optional[dict]
    target: Optional[dict]
    row: Optional[EditRow]


class EditJob:
    """Base class of the editing jobs; a job sets ``task`` and fills :meth:`edit` (and :meth:`validate`)."""

    task = ""
    #: metrics["grid"] / metrics["columns"] describe the single grid (pullback, haas, pca, prompt_edit)
    single_grid = True

    def validate(self, config) -> None:
        """Job-specific checks of ``config`` before any work (impossible combinations, missing files); raise a
        :class:`jaxhspace.errors.JaxhspaceError` naming the field."""

    def load_world(self, config):
        """The model's :class:`~jaxhspace.tasks.inputs.World` (:func:`~jaxhspace.tasks.inputs.load_world`)."""
        from jaxhspace.tasks.inputs import load_world

        return load_world(config)

    def edit(self, config, world, faces: np.ndarray, workdir: str) -> Edits:
        """The job's work: faces ``[N, S, S, 3]`` in [-1, 1] → :class:`Edits`."""
        raise NotImplementedError

    def finish(self, config, metrics: dict, scored: dict, paths: dict) -> None:
        """Add job-specific fields to ``metrics`` from ``scored`` ({grid name: [Scored]}) and the grid PNGs
        ``paths`` ({grid name: path}); default: nothing."""

    def run(self, config, workdir: str) -> dict:
        """The skeleton (module docstring); returns the metrics dict it writes to ``workdir/metrics.json``."""
        from jaxhspace.tasks.common import write_metrics
        from jaxhspace.tasks.inputs import load_faces

        self.validate(config)
        t0 = time.time()
        world = self.load_world(config)
        faces = np.asarray(load_faces(config, world.image_size))
        edits = self.edit(config, world, faces, workdir)
        scored, paths = score_grids(edits.grids, faces, workdir, int(config.upscale))
        metrics: dict[str, Any] = {"task": self.task, "model": world.source,
                                   "prompt": world.prompt if world.is_latent else None, **edits.metrics}
        metrics["edit_scores"] = [{**s.column.score, **s.probe, **({"target": s.target} if s.target else {})}
                                  for g in edits.grids for s in scored[g.name] if s.probe is not None]
        metrics["rows"] = [s.row.as_dict() for g in edits.grids for s in scored[g.name] if s.row is not None]
        if self.single_grid:
            (g,) = edits.grids
            metrics["grid"] = paths[g.name]
            metrics["columns"] = ["input", "reconstruction"] + [c.column for c in g.columns]
        self.finish(config, metrics, scored, paths)
        metrics["wall_s"] = time.time() - t0
        write_metrics(workdir, metrics)
        return metrics


def score_grids(grids: list, faces: np.ndarray, workdir: str, upscale: int) -> tuple[dict, dict]:
    """Save every grid as ``workdir/<name>.png`` and score its columns with the shipped probe (if it scores faces of
    this size). Returns ``({name: [Scored]}, {name: png path})``."""
    from jaxhspace.data.images import save_grid
    from jaxhspace.data.synthfaces import FACTORS
    from jaxhspace.editing.scoring import factor_changes, load_default_probe, per_face_target_change, target_effect

    probe_params = load_default_probe(faces.shape[1])
    scored, paths = {}, {}
    for g in grids:
        cols = [faces, np.asarray(g.recon)] + [np.asarray(c.images) for c in g.columns]
        paths[g.name] = save_grid(os.path.join(workdir, f"{g.name}.png"), np.stack(cols, axis=1), upscale=upscale)
        out = []
        for c in g.columns:
            if probe_params is None:
                out.append(Scored(c, None, None, None))
                continue
            probe = factor_changes(probe_params, g.recon, c.images)
            target = None
            if c.target:
                target = target_effect(probe_params, g.recon, c.images, c.target)
                factor, _, cls = c.target.partition("=")
                if cls or FACTORS[factor].kind != "categorical":
                    target["per_face"] = per_face_target_change(probe_params, g.recon, c.images, c.target).tolist()
            row = make_row(probe, method=c.method, direction=c.direction, scale=c.scale, label=c.label,
                           target=c.target, target_change=None if target is None else target["target_change"],
                           grid=paths[g.name], column=c.column)
            out.append(Scored(c, probe, target, row))
        scored[g.name] = out
    return scored, paths
