"""Score edits with the shipped SynthFaces attribute probe: how much each factor moved.

For unsupervised directions (pullback, Haas, PCA) there is no target: every factor's change is
reported and the one that moved most is called the direction's dominant factor; the others are its
leakage. Units follow :func:`jaxhspace.data.probe.edit_effect` (fractions of a full change).
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from jaxhspace.world import DEFAULT_PROBE, missing_asset_message


def load_default_probe(image_size=None):
    """The shipped probe's params, or None if ``assets/probe`` is absent (with a warning saying how to get it) or
    ``image_size`` (if given) is not a size the probe scores (32 or 64: SynthFaces; e.g. 256x256 CelebA-HQ edits
    are not scored)."""
    if image_size is not None and int(image_size) not in (32, 64):
        return None
    if not os.path.isdir(DEFAULT_PROBE):
        warnings.warn("Edits are not scored: " + missing_asset_message(DEFAULT_PROBE), stacklevel=2)
        return None
    from jaxhspace.data import probe

    return probe.load_probe(DEFAULT_PROBE)


def _as_shown(images) -> np.ndarray:
    """Images clipped to [-1, 1], as saved and viewed (the probe extrapolates wildly outside its range)."""
    return np.clip(np.asarray(images, np.float32), -1.0, 1.0)


def factor_changes(probe_params, before, after) -> dict:
    """Mean change of every factor between images ``before`` and ``after`` ([N, H, W, 3] each, same faces).

    Returns {"changes": {factor: magnitude}, "signed": {factor: signed change or None},
    "dominant": factor with the largest magnitude, "dominant_change", "max_leakage" (largest other)}.
    """
    from jaxhspace.data import probe
    from jaxhspace.data.synthfaces import FACTORS

    sb = probe.score(probe_params, _as_shown(before), probs=True)
    sa = probe.score(probe_params, _as_shown(after), probs=True)
    changes = {k: probe._change(k, sb[k], sa[k], False) for k in FACTORS}
    signed = {k: (probe._change(k, sb[k], sa[k], True) if FACTORS[k].kind != "categorical" else None) for k in FACTORS}
    dom = max(changes, key=lambda k: changes[k])
    others = [v for k, v in changes.items() if k != dom]
    return {"changes": changes, "signed": signed, "dominant": dom, "dominant_change": changes[dom],
            "max_leakage": float(max(others)) if others else 0.0}


def target_effect(probe_params, before, after, target: str) -> dict:
    """:func:`jaxhspace.data.probe.edit_effect` for a known target factor, from images [N, H, W, 3].

    ``target`` may name a class of a categorical factor, e.g. ``"hair_color=red"``: the signed
    ``target_change`` is then the mean change of that class's probability (the magnitude and the
    leakage stay as in ``edit_effect``)."""
    from jaxhspace.data import probe
    from jaxhspace.data.synthfaces import FACTORS

    factor, _, cls = target.partition("=")
    sb = probe.score(probe_params, _as_shown(before), probs=True)
    sa = probe.score(probe_params, _as_shown(after), probs=True)
    out = probe.edit_effect(sb, sa, factor)
    if cls:
        classes = FACTORS[factor].classes
        if FACTORS[factor].kind != "categorical" or cls not in classes:
            raise ValueError(f"target {target!r}: {factor!r} has no class {cls!r} (classes: {classes})")
        k = classes.index(cls)
        out["target_change"] = float(np.mean(sa[factor][:, k] - sb[factor][:, k]))
        out["target_class"] = cls
    return out


def per_face_target_change(probe_params, before, after, target: str) -> np.ndarray:
    """Signed change of ``target`` per face, [N] float: a continuous factor in fractions of its range, a binary one
    as the probability change, ``"factor=class"`` as the change of that class's probability (the per-face terms
    whose mean is :func:`target_effect`'s ``target_change``)."""
    from jaxhspace.data import probe
    from jaxhspace.data.synthfaces import FACTORS

    factor, _, cls = target.partition("=")
    f = FACTORS[factor]
    sb = probe.score(probe_params, _as_shown(before), probs=True)
    sa = probe.score(probe_params, _as_shown(after), probs=True)
    if cls:
        k = f.classes.index(cls)
        return (sa[factor][:, k] - sb[factor][:, k]).astype(np.float32)
    if f.kind == "categorical":
        raise ValueError(f"target {target!r}: name a class of the categorical factor, e.g. '{factor}={f.classes[0]}'")
    return ((sa[factor] - sb[factor]) / f.span).astype(np.float32)
