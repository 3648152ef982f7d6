"""Typed result rows of the editing jobs: one :class:`EditRow` per scored edit (one grid column), written by every
job into ``metrics["rows"]`` and read as they are by the demo and its report (no label parsing).

A row's numbers come from the shipped probe (:mod:`jaxhspace.editing.scoring`), against the reconstruction of the
same faces: every factor's change, and for the target factor its signed change. With a known target (an Asyrp editor's
``target_factor``, a supervised direction, a prompt edit) the target is that factor; for an unsupervised direction
(pullback, Haas, PCA) it is the factor that moved most. ``max_leakage`` is the largest change of any other factor.
"""
from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class EditRow:
    """One scored edit.

    Attributes:
      method: what made the edit: ``"asyrp editor"``, ``"asyrp global"``, ``"asyrp combination"``, ``"pullback"``,
        ``"haas"``, ``"pca"``, ``"supervised"`` (mean-difference Δh) or ``"prompt"``.
      direction: which one: the editor's name, ``"v0"``, ``"PC1"``, ``"hair_color=red"``, the target prompt.
      scale: the scale (a pullback sign as ±1.0); None for a combination or a prompt edit.
      label: the row's name in the report (``"red hair editor s=1"``, ``"pullback v0 +"``, ...).
      target: the target factor (the known one, or the dominant one when ``supervised`` is False).
      target_class: the class of a categorical target (``"red"``), else None.
      supervised: True when the target was known before the edit.
      target_change: the target's signed change (its magnitude for an unsupervised categorical factor), in
        fractions of a full change.
      max_leakage: the largest change of any other factor.
      changes: every factor's change magnitude ``{factor: float}``.
      grid: the PNG the edit is a column of ("" if none).
      column: that column's header.
    """

    method: str
    direction: str
    scale: Optional[float]
    label: str
    target: str
    target_class: Optional[str]
    supervised: bool
    target_change: float
    max_leakage: float
    changes: dict
    grid: str = ""
    column: str = ""

    def as_dict(self) -> dict:
        """The row as a JSON-ready dict (``metrics["rows"]`` entries)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EditRow":
        """Inverse of :meth:`as_dict` (reads a job's ``metrics.json``)."""
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def report_row(self, prefix: str = "") -> dict:
        """The report table's row: ``edit`` (the label, with ``prefix``), target, target_class, supervised,
        target_change, changes, max_leakage."""
        return {"edit": prefix + self.label, "target": self.target, "target_class": self.target_class,
                "supervised": self.supervised, "target_change": float(self.target_change),
                "changes": {k: float(v) for k, v in self.changes.items()}, "max_leakage": float(self.max_leakage)}


def make_row(probe: dict, *, method: str, direction: str, scale: Optional[float], label: str, target: str = "",
             target_change: Optional[float] = None, grid: str = "", column: str = "") -> EditRow:
    """An :class:`EditRow` from :func:`jaxhspace.editing.scoring.factor_changes` output ``probe``.

    ``target`` ("glasses", "hair_color=red") is the known target, with its signed ``target_change``
    (:func:`~jaxhspace.editing.scoring.target_effect`); without one the dominant factor is the target and its
    signed change (its magnitude for a categorical factor) the target change."""
    factor, _, cls = target.partition("=")
    tgt = factor or probe["dominant"]
    changes = probe["changes"]
    if target_change is None:
        target_change = probe["signed"].get(tgt)
        target_change = changes[tgt] if target_change is None else target_change
    others = [v for k, v in changes.items() if k != tgt]
    return EditRow(method=method, direction=direction, scale=None if scale is None else float(scale), label=label,
                   target=tgt, target_class=cls or None, supervised=bool(target),
                   target_change=float(target_change), max_leakage=float(max(others)),
                   changes={k: float(v) for k, v in changes.items()}, grid=grid, column=column)


def read_rows(metrics: dict) -> list[EditRow]:
    """The typed rows of a job's metrics dict (``metrics["rows"]``; [] for a job that scored nothing)."""
    return [EditRow.from_dict(r) for r in metrics.get("rows", [])]
