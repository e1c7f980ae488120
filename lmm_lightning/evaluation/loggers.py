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
import textwrap
from typing import Any, Optional

import numpy as np
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from lmm_lightning.data.loading import image_digest
from lmm_lightning.evaluation.result import EvaluationResult, MetricKey, TaskResult
from lmm_lightning.evaluation.results import record_value, short_name

PROMPT_CHARS = 400  # the end of a prompt: few-shot prompts are long, the question is last
MARK_COLOURS = {True: (42, 157, 80), False: (192, 57, 43)}  # an image's frame: answered right, wrong


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


def correctness(record: dict[str, Any], keys: list[MetricKey]) -> Optional[bool]:
    """Right or wrong by the task's first metric with a per-document 0/1 value (acc, exact_match); None when it
    has none (a corpus metric, a graded score)."""
    for key in keys:
        value = record_value(record, key)
        if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
            return bool(value)
    return None


def sample_rows(result: TaskResult, n: int) -> list[dict[str, Any]]:
    """`n` records of a task as rows, the wrong answers first (then ungraded, then right; by doc_id within):
    doc_id, whether it is right, the prompt the model saw, response, target and scores."""
    keys = list(result.metrics)
    graded = [(correctness(record, keys), record) for record in result.records]
    order = {False: 0, None: 1, True: 2}
    rows = []
    for right, record in sorted(graded, key=lambda pair: (order[pair[0]], pair[1]["doc_id"]))[:n]:
        prompt = str(record["arguments"][0][0]) if record.get("arguments") else ""
        response, target = result.task.describe(record)
        rows.append({"doc_id": record["doc_id"], "result": {True: "right", False: "wrong", None: ""}[right],
                     "prompt": prompt, "response": response, "target": target, **record_scores(record, keys)})
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


def caption_lines(lines: list[str], chars: int, most: int = 12) -> list[str]:
    """The caption wrapped at word boundaries to `chars` per line (a word longer than a line is the only one
    cut), at most `most` lines, the last marked "…" when some were left out.

    >>> caption_lines(["Q: what colour is the small square?"], 16)
    ['Q: what colour', 'is the small', 'square?']
    """
    wrapped = [piece for line in lines for piece in (textwrap.wrap(line, chars, break_on_hyphens=False) or [""])]
    if len(wrapped) > most:
        wrapped = wrapped[: most - 1] + ["…"]
    return wrapped


def captioned(image: Any, lines: list[str], width: int = 256, right: Optional[bool] = None) -> np.ndarray:
    """The image scaled to `width`, framed green when answered right and red when wrong, with its question
    and answer written below it (wrapped at words), as an HWC uint8 array."""
    from PIL import Image, ImageDraw

    image = image.convert("RGB")
    height = max(1, round(image.height * width / image.width))
    image = image.resize((width, height), Image.NEAREST if image.width < width else Image.BILINEAR)
    wrapped = caption_lines(lines, max(8, width // 6))
    canvas = Image.new("RGB", (width, height + 4 + 12 * len(wrapped)), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    if right is not None:
        draw.rectangle([0, 0, width - 1, height - 1], outline=MARK_COLOURS[right], width=4)
    for i, line in enumerate(wrapped):
        draw.text((2, height + 2 + 12 * i), line, fill="black")
    return np.asarray(canvas)


def sample_images(
    result: TaskResult, documents: Any, rows: list[dict[str, Any]], n: int
) -> list[tuple[str, np.ndarray, str]]:
    """(tag, image, caption) for up to `n` distinct images of a vision task's rows (wrong answers first): a
    picture shared by several questions (POPE, MME) is shown once, with the first question asked of it."""
    out: list[tuple[str, np.ndarray, str]] = []
    seen: set[str] = set()
    task = result.name
    for row in rows:
        if len(out) >= n:
            break
        try:
            images = documents.visuals(row["doc_id"])
        except Exception:  # noqa: BLE001 - a picture for the logger must never fail the evaluation
            continue
        right = {"right": True, "wrong": False}.get(row.get("result", ""))
        mark = {True: "RIGHT", False: "WRONG", None: ""}[right]
        question = str(row["prompt"])[-PROMPT_CHARS:]
        caption = f"{mark + ' - ' if mark else ''}Q: {question}\nmodel: {row['response']}\ntarget: {row['target']}"
        for i, image in enumerate(images):
            if not hasattr(image, "convert") or len(out) >= n:
                continue
            digest = image_digest(image)
            if digest in seen:
                continue
            seen.add(digest)
            tag = f"{task}/doc_{row['doc_id']}" + (f"_{i}" if i else "")
            out.append((tag, captioned(image, caption.splitlines(), right=right), caption))
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
        rows = sample_rows(task, len(task.records))  # all of them: the distinct images may be far apart
        tables[task.name] = rows[:n_samples]
        entry = documents.get(task.name)
        if n_images and entry is not None and task.task.has_visuals:
            images[task.name] = sample_images(task, entry, rows, n_images)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            # hparams with the metrics, so TensorBoard's HPARAMS tab lists each run with its scores
            logger.log_hyperparams(hparams, metrics=scalars, step=0)
            _tensorboard_scores(logger.experiment, result, scalars)
            _tensorboard_extras(logger.experiment, tables, images)
        else:
            logger.log_hyperparams(hparams)
            logger.log_metrics(scalars, step=0)
            _wandb_extras(logger, tables, images)
        logger.save()


def custom_scalars_layout(result: EvaluationResult, scalars: dict[str, float]) -> dict[str, dict[str, list]]:
    """TensorBoard's custom-scalars layout: one chart per task or group metric holding its value and interval
    bounds together (a "Margin" chart, the interval shaded), a plain line where it has no interval."""
    layout: dict[str, dict[str, list]] = {}
    for entry in result.entries:
        charts = {}
        for key in entry.metrics:
            value, lower, upper = (f"{entry.name}/{short_name(key, s)}" for s in ("", "_ci_lower", "_ci_upper"))
            if value not in scalars:
                continue
            if lower in scalars and upper in scalars:
                charts[value] = ["Margin", [value, lower, upper]]
            else:
                charts[value] = ["Multiline", [value]]
        if charts:
            layout[entry.name] = charts
    return layout


def _tensorboard_scores(writer: Any, result: EvaluationResult, scalars: dict[str, float], step: int = 0) -> None:
    """Every metric with its interval in one figure (the Images tab) and the custom-scalars charts."""
    from lmm_lightning.evaluation.plots import results_figure, score_rows
    from lmm_lightning.evaluation.results import build_results

    writer.add_figure("scores/all", results_figure(score_rows(build_results(result))), global_step=step, close=True)
    layout = custom_scalars_layout(result, scalars)
    if layout:
        writer.add_custom_scalars(layout)


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
