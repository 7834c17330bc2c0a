"""Evaluation of a split: the mean loss, plus a scored task's own metrics."""

from __future__ import annotations

import math

import numpy as np
import torch

from nlp_ssl.progress import progress_bar
from nlp_ssl.training.config import TrainConfig
from nlp_ssl.training.contract import LengthAware, ScoredTask, Task


@torch.no_grad()
def evaluate(task: Task, module, accelerator, cfg: TrainConfig, split: str = "eval", outputs: bool = False):
    """Mean loss over a split's evaluation examples (each process takes a strided share),
    plus a ``ScoredTask``'s own metrics.

    With ``outputs=True`` the per-example arrays handed to ``compute_metrics`` are returned
    too: ``(metrics, outputs)``, ``outputs["index"]`` naming each example (None for a task
    that is not a ``ScoredTask``).
    """
    module.eval()
    indices = task.eval_indices(split)
    if cfg.eval_max_batches is not None and split == "eval":
        indices = indices[: cfg.eval_max_batches * cfg.micro_batch_size * accelerator.num_processes]
    mine = indices[accelerator.process_index :: accelerator.num_processes]
    if isinstance(task, LengthAware):  # longest first: little padding, and a batch too big fails at once
        mine = mine[np.argsort(-task.lengths(split)[mine], kind="stable")]
    size = cfg.eval_batch_size or cfg.micro_batch_size
    per_example = isinstance(task, ScoredTask)
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    pieces: list[dict] = []
    starts = range(0, len(mine), size)
    for start in progress_bar(
        starts,
        desc=f"evaluating ({split})",
        unit="batch",
        leave=False,
        disable=not accelerator.is_main_process or len(starts) < 2,
    ):
        chunk = mine[start : start + size]
        batch = task.make_batch(chunk, 0, split)
        inputs = to_device(batch.inputs, accelerator.device)
        with accelerator.autocast():
            if per_example:
                loss_sum, out = task.eval_step(module, inputs)
                pieces.append({"index": np.asarray(chunk), **{k: _numpy(v) for k, v in out.items()}})
            else:
                loss_sum = module(**inputs)
        totals[0] += loss_sum.double()
        totals[1] += batch.n_targets
    loss_sum, n = accelerator.reduce(totals, reduction="sum").tolist()
    loss = loss_sum / max(n, 1)
    metrics = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "targets": int(n)}
    gathered = None
    if per_example:
        if accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            pieces = gather_object(pieces)
        gathered = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]} if pieces else {}
        if gathered:
            order = np.argsort(gathered["index"], kind="stable")
            gathered = {k: v[order] for k, v in gathered.items()}
        del metrics["perplexity"]
        metrics.update(task.compute_metrics(gathered, split))
    return (metrics, gathered) if outputs else metrics


def headline(metrics: dict, most: int = 4) -> str:
    """The first few scalar figures of an evaluation, for one progress line."""
    shown = [(k, v) for k, v in metrics.items() if isinstance(v, float) and k != "perplexity"][:most]
    return ", ".join(f"{k} {v:.4f}" for k, v in shown)


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() else value).numpy()  # numpy has no bf16
    return np.asarray(value)


def to_device(inputs: dict, device) -> dict:
    from accelerate.utils import send_to_device

    # nested too: a packed batch's masks may be a dict per attention kind
    return send_to_device(inputs, device, non_blocking=True)
