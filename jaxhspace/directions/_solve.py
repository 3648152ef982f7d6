"""Pick a top-k SVD method by name (shared by the pullback and Haas directions)."""
from __future__ import annotations

from jaxhspace.geometry.operators import JacobianOperator
from jaxhspace.geometry.svd import SVDResult, randomized_block_krylov, subspace_iteration

METHODS = ("krylov", "subspace")


def top_k_svd(op: JacobianOperator, k: int, key, method: str = "krylov", **kwargs) -> SVDResult:
    """``randomized_block_krylov`` (default) or ``subspace_iteration`` on ``op``; kwargs go to the method."""
    if method == "krylov":
        return randomized_block_krylov(op, k, key, **kwargs)
    if method == "subspace":
        return subspace_iteration(op, k, key, **kwargs)
    raise ValueError(f"unknown SVD method {method!r}; choose one of {METHODS}")
