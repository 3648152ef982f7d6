"""DDIM inversion + reconstruction error for several step counts.

    python -m jaxhspace.main --config configs/invert_reconstruct.py --workdir runs/invert
"""
try:
    from jaxhspace.configs._common import editing_job
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import editing_job


def get_config():
    c = editing_job("invert_reconstruct", num_images=8, upscale=4)
    c.n_steps_list = (10, 20, 50, 100)
    c.spacing = "asyrp"
    return c
