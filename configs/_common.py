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


def editing_job(task: str, num_images: int = 4, upscale: int = 3, model_path: str = ""):
    """The fields every job that reads faces shares: ``task``, ``precision``, the model, the seed and the faces
    (SynthFaces test faces of ``data_seed``, or ``image_paths``), ``upscale`` of the grids. Returns a ConfigDict."""
    import ml_collections

    c = ml_collections.ConfigDict()
    c.task = task
    c.precision = "highest"    # float32 matmuls on TPU/GPU; "high"/"default" faster, less accurate
    c.model_path = model_path  # "" = assets/ddpm_synthfaces; or a diffusers folder / official .ckpt / .pt
    c.seed = 0
    c.data_seed = 12345        # SynthFaces test faces (training used other seeds)
    c.num_images = num_images
    c.image_paths = ()         # or your own images / folders (centre-cropped, resized to the model's size)
    c.upscale = upscale        # grid pixels per image pixel
    return c


def add_run_fields(c, max_minutes: float = 55.0):
    """Set the fields of a trainer's ConfigDict ``c`` that its job turns into the training loop's
    :class:`~jaxhspace.training.loop.RunSettings` and the export (their shipped defaults): save every 250 steps, log
    every 25, stop (after saving) at ``max_minutes``, export to ``{workdir}/export`` ('' = none; ``assets/...`` needs
    ``allow_asset_export``), refuse a resume with a changed config (``resume_policy="strict"``; "allow" resumes
    anyway), stop when the 10-step mean loss reaches 100x its best (``max_loss_growth``; 0 = off; NaN always stops).
    Returns ``c``."""
    c.checkpoint_every = 250
    c.log_every = 25
    c.max_minutes = float(max_minutes)
    c.export_dir = "{workdir}/export"
    c.allow_asset_export = False
    c.resume_policy = "strict"
    c.max_loss_growth = 100.0
    return c
