"""jaxhspace: JAX/Flax research kit for the semantic latent space (h-space) of diffusion models."""
from setuptools import find_packages, setup

setup(
    name="jaxhspace",
    version="0.1.0",
    description="h-space (UNet bottleneck) editing and geometry for diffusion models in JAX/Flax",
    packages=find_packages(include=["jaxhspace", "jaxhspace.*", "checkpoints_convert", "checkpoints_convert.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "orbax-checkpoint",
        "transformers",
        "tokenizers",
        "numpy",
        "scipy",
        "ml_collections",
        "absl-py",
        "pillow",
        "matplotlib",
        "safetensors",
        "tqdm",
    ],
    extras_require={
        # torch is pinned: 2.13.0 is the CPU build available offline; a bare `torch` pulls CUDA wheels.
        "test": ["pytest", "torch==2.13.0", "diffusers", "transformers", "nbclient", "nbformat", "ipykernel"],
    },
)
