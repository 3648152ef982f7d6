"""Unsupervised and supervised h-space directions: ``pullback`` (Park: ∂h/∂x), ``haas_jacobian``
(Haas: ∂ε/∂h), ``pca_h`` / ``pca`` and ``mean_difference`` (Haas PCA / supervised)."""
from jaxhspace.directions.haas import haas_jacobian, haas_operator  # noqa: F401
from jaxhspace.directions.pca import PCAResult, collect_h, mean_difference, pca, pca_h  # noqa: F401
from jaxhspace.directions.pullback import pullback, pullback_operator  # noqa: F401
