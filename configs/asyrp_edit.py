"""Edit images with trained Asyrp editors and/or fixed Δh directions; write grids (rows: images, columns: scales).

    python -m jaxhspace.main --config configs/asyrp_edit.py --workdir runs/asyrp_edit \
        --config.editor_paths="('runs/asyrp_smiling/editor',)"

Per editor: edit_<i>.png (columns: input, reconstruction (scale 0), then each scale) and, with global_dh_images > 0,
global_<i>.png with the global Δh (mean of the editor's Δh over samples and t >= t_edit, applied linearly; the
samples are a separate set as in the official code (first K training images,
kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:779-829):
global_dh_paths, or SynthFaces of global_dh_seed; metrics "global_dh_averaged_over" says which). With two
or more editors: combination.png (columns: input, reconstruction, each attribute alone, all combined with
Σ c_i/√N·s·Δh_i). Δh files (.npz from jaxhspace.editing.asyrp_edit.save_delta_h, e.g. Haas/PCA directions) get
delta_<j>.png. Metrics (mean |edit - reconstruction| per column, the probe's change of every factor vs the
reconstruction and, with target_factors, the target's change and leakage; timings) go to metrics.json.
"""
try:
    from jaxhspace.configs._common import editing_job
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import editing_job


def get_config():
    c = editing_job("asyrp_edit", upscale=4)
    c.editor_paths = ()             # editor folders (save_editor / checkpoints_convert.asyrp_editor) or official .pth
    c.editor_names = ()             # names in rows and captions ("red hair"); missing = the editor folder's name
    c.target_factors = ()           # per editor: the factor it should move ("glasses", or "hair_color=red"), for the
                                    # probe's
                                    # target change / leakage scores; "" or missing = only every factor's change
    c.delta_h_paths = ()            # .npz Δh files: [h,w,C] (every t) or [S,h,w,C] + timesteps
    c.scales = (-1.0, 0.5, 1.0, 1.5)
    c.combine_coeffs = ()           # c_i for the combination (default all 1)
    c.n_inv = 40
    c.n_test = 40
    c.t_edit = -1                   # -1: from the meta of the editor with the highest cos(src, tgt), else 500
    c.t_boost = -1                  # -1: from the editor's meta, else 200; 0 disables quality boosting
    c.n_train_step = -1             # -1: from the editor's meta (official scaling n_train/n_test·s); 0: no scaling
    c.global_dh_images = 4          # >0: also edit with the global Δh computed over this many images
    c.global_dh_set = "separate"    # official: averaged over training images, not the edited ones; "edited" = in-sample
    c.global_dh_seed = 0            # SynthFaces seed of that separate set (0 = asyrp_train's training faces)
    c.global_dh_paths = ()          # or image files/folders for it (required with image_paths unless "edited")
    return c
