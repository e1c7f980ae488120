"""GQA testdev-balanced: the questions and the images are two configs of lmms-lab/GQA, joined here.

The questions (config `testdev_balanced_instructions`) name their image by `imageId`; the 398
images (config `testdev_balanced_images`, columns `id`, `image`) are loaded once per process,
indexed by id, and decoded only when a batch needs one. To read the images from local parquet
files instead of the hub, set LMM_LIGHTNING_GQA_IMAGES to those files (a path or a glob).

Scoring is the official GQA eval.py (accuracy: the prediction string equals the answer) on
predictions converted as LLaVA publishes them (scripts/convert_gqa_for_eval.py after
model_vqa_loader.py): stripped, trailing periods removed, lowercased.
"""

import os
from functools import lru_cache
from typing import Any

import datasets

IMAGES_ENV = "LMM_LIGHTNING_GQA_IMAGES"
HUB_IMAGES = ("lmms-lab/GQA", "testdev_balanced_images", "testdev")


@lru_cache(maxsize=4)
def image_index(source: str = "") -> tuple[datasets.Dataset, dict[str, int]]:
    """The image table and id -> row; `source` is local parquet file(s), or "" for the hub config."""
    if source:
        table = datasets.load_dataset("parquet", data_files=source, split="train")
    else:
        path, name, split = HUB_IMAGES
        table = datasets.load_dataset(path, name, split=split)
    return table, {image_id: row for row, image_id in enumerate(table["id"])}


def doc_to_visual(doc: dict[str, Any]) -> list[Any]:
    """The question's image, looked up by its imageId."""
    table, rows = image_index(os.environ.get(IMAGES_ENV, ""))
    if doc["imageId"] not in rows:
        raise KeyError(f"GQA image {doc['imageId']!r} of question {doc.get('id')!r} is not in the image table")
    return [table[rows[doc["imageId"]]]["image"]]


def score(prediction: str, answer: str) -> float:
    """1.0 if the prediction, stripped, without trailing periods and lowercased, is the answer.

    The answer is compared as stored (GQA's answers are lowercase); no other punctuation is
    ignored, so "t-shirt" is not "tshirt" and "yes!" is not "yes".

    >>> [score(p, "yes") for p in ("Yes", "yes.", "Yes...", "yes!", "Yes, it is.", "")]
    [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    """
    return float(prediction.strip().rstrip(".").lower() == answer)


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """exact_match: the official GQA accuracy of the question."""
    return {"exact_match": score(results[0], doc["answer"])}
