"""Train the shipped tiny CLIP on SynthFaces (32x32 images + augmented captions) and export it (HF CLIPModel
folder with its tokenizer, as shipped in assets/clip_synthfaces), with zero-shot metrics.

    python -m jaxhspace.main --config configs/clip_synthfaces.py --workdir runs/clip_synthfaces
    # to (re)write the shipped asset itself:
    python -m jaxhspace.main --config configs/clip_synthfaces.py --workdir runs/clip_synthfaces \
        --config.export_dir=assets/clip_synthfaces --config.allow_asset_export=True

Re-running the same command resumes from the newest checkpoint in workdir/checkpoints; each run stops
(after saving) at ``max_minutes``. Export and evaluation happen once ``total_steps`` are done. The export goes to
``{workdir}/export`` by default; an existing folder is replaced only if jaxhspace exported it (it carries
``.jaxhspace_export.json``; the shipped folder predates the marker: move it away first to retrain it).
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "clip_train"
    c.seed = 0
    # transformers CLIPConfig fields (vocab size / bos / eos / pad ids come from the learned tokenizer).
    c.clip = ml_collections.ConfigDict(dict(
        context_length=24,  # longest training caption (template + full caption) is 24 tokens
        projection_dim=64,
        logit_scale_init=2.6592,  # ln(1/0.07), CLIP's
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
        # patch 8 (4x4 grid + class token): ~4x cheaper than patch 4 and learns the 2-px mouth curve faster here
        vision=dict(hidden_size=96, intermediate_size=192, num_hidden_layers=4, num_attention_heads=4,
                    patch_size=8),
    ))
    # caption augmentation (see jaxhspace.training.clip_synthfaces.augmented_captions)
    # keep_prob per attribute: (smile, hair_color, eyes, glasses, background); colours are easy, say them less
    c.captions = ml_collections.ConfigDict(dict(keep_prob=(0.9, 0.4, 0.5, 0.5, 0.3), full_prob=0.2,
                                                no_glasses_prob=0.3, template_prob=0.4))
    # half the batch: twins of the other half with (smile, eyes, glasses) changed with these probabilities
    c.twin_probs = (0.6, 0.3, 0.1)
    c.multi_positive = True  # uniform targets over consistent (caption, image) pairs; False = plain CLIP
    c.text_freeze_steps = 600  # text tower locked at random init first (else it collapses smile words)
    c.noise_std = 0.05
    c.batch_size = 64
    c.lr = 1e-3
    c.warmup_steps = 100
    c.weight_decay = 0.05
    c.grad_clip = 1.0
    c.total_steps = 2200
    c.stop_at_step = 0  # > 0: stop (after saving) at this step, e.g. to split a run
    c.checkpoint_every = 200
    c.log_every = 20
    c.eval_every = 100  # log zero-shot accuracies on 256 held-out faces (0: off)
    c.max_minutes = 14.0
    c.export_dir = "{workdir}/export"  # '' = no export; assets/... needs allow_asset_export
    c.allow_asset_export = False
    # resuming with changed result-affecting fields: "strict" refuses (naming them), "allow" resumes anyway
    c.resume_policy = "strict"
    c.max_loss_growth = 100.0  # stop when the 10-step mean loss reaches 100x its best (0: off); NaN always stops
    c.eval_seed = 20240917  # held out: training batches use seeds (seed, step)
    c.eval_n = 512
    return c
