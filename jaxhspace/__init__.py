"""jaxhspace: the semantic latent space (h-space, the UNet bottleneck) of diffusion models in JAX/Flax.

Subpackages: ``models`` (UNet2DModel, CLIP, Asyrp editor), ``diffusion`` (schedules, DDIM, Asyrp step),
``geometry`` (matrix-free Jacobian SVD, HOSVD), ``directions`` (pullback, Haas, PCA), ``editing``,
``losses``, ``data`` and ``checkpoints`` (load_unet, load_clip).
"""

__version__ = "0.1.0"
