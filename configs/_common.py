"""Pieces the job configs share (not a job config itself: the name starts with "_")."""


def official_checkpoint(c, model_path: str = "/path/to/ddpm-ema-celebahq-256"):
    """``c`` set up for a real checkpoint: ``model_path`` (a placeholder the job refuses until it is replaced), the
    converter fields of :func:`jaxhspace.checkpoints.auto_convert.with_model_conversion` and ``upscale = 1`` (for a
    job that writes grids).
    Returns ``c``."""
    c.model_path = model_path    # REQUIRED: diffusers folder or official .ckpt/.pt
    c.model_format = "auto"      # auto | diffusers | ddpm_ckpt | guided_diffusion: a .ckpt/.pt converts into
    c.model_preset = ""          # the converter's --preset; "" = inferred from the file's parameter shapes
    c.model_arch_json = ""       # the converter's --arch-json, for checkpoints of other architectures
    if "upscale" in c:
        c.upscale = 1
    return c
