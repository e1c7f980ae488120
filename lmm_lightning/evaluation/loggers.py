"""Results into the trainer's loggers, rank 0 only: TensorBoard gets everything, any Lightning logger the numbers.

Every logger (TensorBoard, CSV, W&B, MLflow, ...) gets each task and group metric with its
stderr and interval bounds through `log_metrics`, and the run's configuration through
`log_hyperparams`. Names follow lm-evaluation-harness's W&B logger: "<task>/<metric>" with
",<filter>" kept unless the filter is "none" ("capitals_mc/acc", "capitals_mc/acc_stderr",
"capitals_mc/acc_ci_lower", "gsm8k/exact_match,strict-match").

TensorBoard also gets a table of the first sample records per task (prompt, response, target,
scores) as text, and for vision tasks a few images captioned with their question and answer.
W&B gets the same table and images through `WandbLogger.log_table` / `log_image`.
"""

import math
from typing import Any, Optional

import numpy as np
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from lmm_lightning.evaluation.result import EvaluationResult, MetricKey, TaskResult
from lmm_lightning.evaluation.results import record_value, short_name

PROMPT_CHARS = 400  # the end of a prompt: few-shot prompts are long, the question is last


def metric_scalars(result: EvaluationResult) -> dict[str, float]:
    """Every task and group metric, its stderr and its interval bounds, as flat scalar names; the
    undefined ones (nan: one document, no resampling) left out."""
    out: dict[str, float] = {}
    for entry in result.entries:
        for key, estimate in entry.metrics.items():
            if not math.isfinite(estimate.value):
                continue
            out[f"{entry.name}/{short_name(key)}"] = float(estimate.value)
            if math.isfinite(estimate.stderr):
                out[f"{entry.name}/{short_name(key, '_stderr')}"] = float(estimate.stderr)
            if math.isfinite(estimate.ci_lower) and math.isfinite(estimate.ci_upper):
                out[f"{entry.name}/{short_name(key, '_ci_lower')}"] = float(estimate.ci_lower)
                out[f"{entry.name}/{short_name(key, '_ci_upper')}"] = float(estimate.ci_upper)
    return out


def run_hparams(result: EvaluationResult) -> dict[str, Any]:
    """The run's configuration: model, its arguments, data and bootstrap settings, tasks, world size."""
    return {
        **result.settings.config,
        "tasks": ",".join(task.name for task in result.tasks),
        "groups": ",".join(group.name for group in result.groups),
        "world_size": result.settings.world_size,
    }


# --- sample records -----------------------------------------------------------------------------
def record_scores(record: dict[str, Any], keys: list[MetricKey]) -> dict[str, Any]:
    """The record's per-document value of each metric that has a plain one (corpus metrics have none)."""
    out = {}
    for key in keys:
        value = record_value(record, key)
        if isinstance(value, (bool, int, float, str)):
            out[short_name(key)] = value
    return out


def sample_rows(result: TaskResult, n: int) -> list[dict[str, Any]]:
    """The first `n` records of a task as rows: doc_id, prompt, response, target and scores."""
    rows = []
    keys = list(result.metrics)
    for record in result.records[:n]:
        prompt = str(record["arguments"][0][0]) if record.get("arguments") else ""
        response, target = result.task.describe(record)
        rows.append({"doc_id": record["doc_id"], "prompt": prompt, "response": response, "target": target,
                     **record_scores(record, keys)})
    return rows


def _cell(value: Any) -> str:
    text = str(value)
    if len(text) > PROMPT_CHARS:
        text = "…" + text[-PROMPT_CHARS:]
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def captioned(image: Any, lines: list[str], width: int = 256) -> np.ndarray:
    """The image scaled to `width` with its question and answer written below it, as an HWC uint8 array."""
    from PIL import Image, ImageDraw

    image = image.convert("RGB")
    height = max(1, round(image.height * width / image.width))
    image = image.resize((width, height), Image.NEAREST if image.width < width else Image.BILINEAR)
    chars = max(8, width // 6)
    wrapped = [line[i : i + chars] for line in lines for i in range(0, max(len(line), 1), chars)][:12]
    canvas = Image.new("RGB", (width, height + 4 + 12 * len(wrapped)), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(wrapped):
        draw.text((2, height + 2 + 12 * i), line, fill="black")
    return np.asarray(canvas)


def sample_images(
    result: TaskResult, documents: Any, rows: list[dict[str, Any]], n: int
) -> list[tuple[str, np.ndarray, str]]:
    """(tag, image, caption) for the first `n` documents of a vision task that have images."""
    out = []
    task = result.name
    for row in rows[:n]:
        try:
            images = documents.visuals(row["doc_id"])
        except Exception:  # noqa: BLE001 - a picture for the logger must never fail the evaluation
            continue
        question = str(row["prompt"])[-PROMPT_CHARS:]
        caption = f"Q: {question}\nmodel: {row['response']}\ntarget: {row['target']}"
        for i, image in enumerate(images):
            if hasattr(image, "convert"):
                lines = caption.splitlines()
                out.append((f"{task}/doc_{row['doc_id']}" + (f"_{i}" if i else ""), captioned(image, lines), caption))
    return out


# --- loggers ------------------------------------------------------------------------------------
def log_results(
    loggers: list[Logger],
    result: EvaluationResult,
    documents: Optional[dict[str, Any]] = None,
    n_samples: int = 8,
    n_images: int = 4,
) -> None:
    """Send the results to every logger: scalars and hparams to all, samples and images where supported."""
    if not loggers:
        return
    scalars = metric_scalars(result)
    hparams = run_hparams(result)
    documents = documents or {}
    tables: dict[str, list[dict[str, Any]]] = {}
    images: dict[str, list[tuple[str, np.ndarray, str]]] = {}
    for task in result.tasks:
        rows = sample_rows(task, max(n_samples, n_images))
        tables[task.name] = rows[:n_samples]
        entry = documents.get(task.name)
        if n_images and entry is not None and task.task.has_visuals:
            images[task.name] = sample_images(task, entry, rows, n_images)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            # hparams with the metrics, so TensorBoard's HPARAMS tab lists each run with its scores
            logger.log_hyperparams(hparams, metrics=scalars, step=0)
            _tensorboard_extras(logger.experiment, tables, images)
        else:
            logger.log_hyperparams(hparams)
            logger.log_metrics(scalars, step=0)
            _wandb_extras(logger, tables, images)
        logger.save()


def _tensorboard_extras(writer: Any, tables: dict[str, list], images: dict[str, list]) -> None:
    for task, rows in tables.items():
        if rows:
            writer.add_text(f"samples/{task}", markdown_table(rows), global_step=0)
    for task, entries in images.items():
        for tag, array, caption in entries:
            writer.add_image(f"images/{tag}", array, global_step=0, dataformats="HWC")
            writer.add_text(f"images/{tag}", _cell(caption).replace("<br>", "  \n"), global_step=0)
    writer.flush()


def _wandb_extras(logger: Logger, tables: dict[str, list], images: dict[str, list]) -> None:
    """W&B tables and images; loggers without `log_table` / `log_image` (CSV, MLflow) get numbers only."""
    log_table, log_image = getattr(logger, "log_table", None), getattr(logger, "log_image", None)
    if callable(log_table):
        for task, rows in tables.items():
            if rows:
                columns = list(dict.fromkeys(key for row in rows for key in row))
                log_table(key=f"samples/{task}", columns=columns, data=[[row.get(c) for c in columns] for row in rows])
    if callable(log_image):
        for task, entries in images.items():
            if entries:
                log_image(key=f"images/{task}", images=[a for _, a, _ in entries], caption=[c for _, _, c in entries])
