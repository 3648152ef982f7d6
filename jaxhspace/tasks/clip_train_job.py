"""Job ``clip_train``: train (or resume) the tiny SynthFaces CLIP, then export it (HF folder with its tokenizer) and
evaluate it zero-shot on held-out faces.

The config (``configs/clip_synthfaces.py``) is read here only; tokenizer, captions, batches, model, loss, train step
and evaluation are :mod:`jaxhspace.training.clip_synthfaces`.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxhspace.data import synthfaces as sf
from jaxhspace.errors import TrainingInterrupted
from jaxhspace.models.clip import init_clip_params
from jaxhspace.tasks.common import run_settings
from jaxhspace.training import clip_synthfaces as cs
from jaxhspace.training.checkpointing import Checkpointer
from jaxhspace.training.loop import final_loss_from_log
from jaxhspace.training.run_config import check_resume, result_fields
from jaxhspace.training.safety import InterruptGuard, LossGuard, check_export_dir, export_folder, trim_log

# config fields that do not change the trained weights (not compared on resume); total_steps does (cosine lr)
BOOKKEEPING = ("task", "max_minutes", "export_dir", "allow_asset_export", "log_every", "checkpoint_every",
               "resume_policy", "max_loss_growth", "loss_window", "stop_at_step", "eval_every", "eval_seed", "eval_n")


def validate(config) -> None:
    """Checks run before any work: the loop fields (``total_steps``, ``lr``, ``checkpoint_every``, ``log_every``,
    ``max_minutes``, ``max_loss_growth``, ``loss_window``, ``resume_policy``) as
    :class:`~jaxhspace.training.loop.RunSettings` (a JaxhspaceError naming the field)."""
    run_settings(config).validate()


def optimizer_args(config) -> tuple:
    """(lr, warmup_steps, total_steps, weight_decay, grad_clip) from the config (hashable), for
    :func:`jaxhspace.training.clip_synthfaces.make_optimizer`."""
    return (float(config.lr), int(config.warmup_steps), int(config.total_steps), float(config.weight_decay),
            float(config.grad_clip))


def make_batch(config, step: int, tokenizer) -> dict:
    """:func:`jaxhspace.training.clip_synthfaces.make_batch` of ``step`` with the config's data fields."""
    return cs.make_batch(step, tokenizer, seed=config.seed, batch_size=config.batch_size,
                         context_length=config.clip.context_length, captions=config.captions,
                         twin_probs=config.get("twin_probs"), multi_positive=config.multi_positive)


def setup(config, tok_dir: str):
    """(tokenizer, model, optimizer, fresh train state at step 0, train key). The tokenizer is built into
    ``tok_dir``, or loaded from it when it exists (resuming)."""
    if os.path.isfile(os.path.join(tok_dir, "tokenizer_config.json")):  # resuming: keep the run's tokenizer
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(tok_dir, local_files_only=True)
    else:
        tokenizer = cs.build_tokenizer(tok_dir, config.clip.context_length)
    cc = config.clip
    model = cs.make_model(len(tokenizer.get_vocab()), cc.context_length, cc.projection_dim, cc.text, cc.vision,
                          cc.get("logit_scale_init", 2.6592))
    tc = model.config.text_config
    if (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) != (
            tc.bos_token_id, tc.eos_token_id, tc.pad_token_id):
        raise RuntimeError("tokenizer special ids do not match the model config")
    init_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
    params = init_clip_params(model, init_key)
    optimizer = cs.make_optimizer(*optimizer_args(config))
    state = cs.CLIPTrainState(jnp.array(0, jnp.int32), params, optimizer.init(params))
    return tokenizer, model, optimizer, state, train_key


def run(config, workdir: str) -> dict:
    """Train (or resume) the tiny CLIP; once ``config.total_steps`` are done, export to ``config.export_dir``
    (HF folder via ``save_clip_hf``) and evaluate zero-shot on held-out faces.

    Stops early (after saving) when ``config.max_minutes`` have passed or at ``config.stop_at_step``. On SIGINT /
    SIGTERM the step in flight finishes, the state is saved and :class:`jaxhspace.errors.TrainingInterrupted` is
    raised. ``config.export_dir`` ('' = none; ``{workdir}`` expands) is checked before any work
    (:func:`jaxhspace.training.safety.check_export_dir`). A resume with changed result-affecting config fields is
    refused unless ``config.resume_policy="allow"`` (:func:`jaxhspace.training.run_config.check_resume`).
    Returns the metrics (also written to ``workdir/metrics.json`` and, on export, ``export_dir/metrics.json``).
    """
    validate(config)
    export_dir = check_export_dir(config.get("export_dir"), workdir, cs.WORKDIR_FILES,
                                  bool(config.get("allow_asset_export", False)))
    os.makedirs(workdir, exist_ok=True)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), every=config.checkpoint_every)
    check_resume(result_fields(config, BOOKKEEPING), workdir, ckpt.latest_step() is not None,
                 config.get("resume_policy", "strict"))
    tok_dir = os.path.join(workdir, "tokenizer")
    tokenizer, model, optimizer, state, train_key = setup(config, tok_dir)
    state = ckpt.restore_or(state)
    start = int(state.step)
    end = min(config.total_steps, config.get("stop_at_step") or config.total_steps)
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(state.params))
    step_fn = cs.make_train_step(model, optimizer_args(config), float(config.noise_std),
                                 int(config.get("text_freeze_steps", 0)))
    log_path = os.path.join(workdir, "train_log.jsonl")
    trim_log(log_path, start)  # records of steps after the checkpoint are logged again
    t0, hist, stopped_early = time.time(), [], False
    pool = concurrent.futures.ThreadPoolExecutor(1)  # renders the next batch while the step runs
    nxt = pool.submit(make_batch, config, start, tokenizer) if start < end else None
    bar = tqdm(range(start, end), initial=start, total=config.total_steps, desc="clip", mininterval=5)
    loss_guard = LossGuard(config.get("max_loss_growth", 100.0), config.get("loss_window", 10), config.lr)
    try:
        with InterruptGuard() as guard:
            for step in bar:
                assert nxt is not None  # submitted for every step of the range
                batch = nxt.result()
                if step + 1 < end:
                    nxt = pool.submit(make_batch, config, step + 1, tokenizer)
                state, m = step_fn(state, batch, train_key)
                hist.append(jax.device_get(m))
                done = step + 1
                try:
                    loss_guard.update(done, hist[-1]["loss"])
                except ValueError:
                    bar.close()
                    ckpt.close()  # pending saves finish; the diverged state is not saved
                    raise
                if done % config.log_every == 0:
                    rec = {"step": done, "elapsed_s": time.time() - t0,
                           **{k: float(np.mean([h[k] for h in hist[-config.log_every:]])) for k in hist[-1]}}
                    if config.get("eval_every") and done % config.eval_every == 0:  # cheap zero-shot check, 256 faces
                        zs = cs.zero_shot_accuracy(model, state.params, tokenizer,
                                                   *sf.generate(config.eval_seed + 1, 256))
                        rec.update({f"zs_{k}": zs[k] for k in ("smile_binary", "glasses", "eyes_binary", "hair_color")})
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['i2t_acc']:.2f}")
                    with open(log_path, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                ckpt.maybe_save(done, state)
                if guard.signum is not None:
                    bar.close()
                    if ckpt.latest_step() != done:
                        ckpt.save(done, state)
                    ckpt.close()
                    raise TrainingInterrupted(guard.signum, done, ckpt.directory)
                if config.max_minutes and time.time() - t0 > 60 * config.max_minutes and done < config.total_steps:
                    stopped_early = True
                    break
            if ckpt.latest_step() != int(state.step):  # also when total_steps is not a multiple of checkpoint_every
                ckpt.save(int(state.step), state)
    finally:
        pool.shutdown(cancel_futures=True)
    ckpt.close()
    metrics = {"steps_done": int(state.step), "total_steps": int(config.total_steps), "params": n_params,
               "wall_s_this_run": time.time() - t0,
               "stopped_early": stopped_early or int(state.step) < config.total_steps}
    final = final_loss_from_log(log_path, int(state.step), [float(h["loss"]) for h in hist])  # resumed runs' steps too
    if final is not None:
        metrics["final_loss"] = final
    if int(state.step) >= config.total_steps and export_dir:
        from jaxhspace.checkpoints.clip import save_clip_hf

        params = jax.device_get(state.params)
        metrics.update(cs.evaluate(model, params, tokenizer, config.eval_seed, config.eval_n))
        metrics.update(eval_seed=config.eval_seed, eval_n=config.eval_n, exported_to=export_dir,
                       command=f"python -m jaxhspace.main --config configs/clip_synthfaces.py --workdir {workdir}")

        def write(path):
            save_clip_hf(path, model, params, tokenizer=tok_dir)
            with open(os.path.join(path, "metrics.json"), "w") as f:
                json.dump(metrics, f, indent=2)

        export_folder(export_dir, write, job="clip_train", extra={"steps": int(state.step)})
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics
