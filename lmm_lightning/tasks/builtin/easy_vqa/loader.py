"""easy-VQA: 64x64 images of one coloured shape with questions about its colour, its shape, or yes/no.

The questions and PNGs ship inside the `easy-vqa` package (`pip install easy-vqa`), so the benchmark
runs offline. Images are a `datasets.Image()` column built from the PNG paths: they are decoded only
when a batch needs them.
"""

import importlib.util
import json
from pathlib import Path

import datasets
import pyarrow as pa

from lmm_lightning.errors import InputError

SPLITS = ("train", "test")
FEATURES = datasets.Features(
    {
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "image": datasets.Image(),
        "image_id": datasets.Value("int64"),
        "choices": datasets.List(datasets.Value("string")),
        "answer_index": datasets.Value("int64"),
    }
)


def data_dir() -> Path:
    """The `data/` folder of the installed `easy_vqa` package, found without importing it."""
    spec = importlib.util.find_spec("easy_vqa")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the easy_vqa tasks need the `easy-vqa` package: pip install easy-vqa")
    for location in spec.submodule_search_locations:
        if (Path(location) / "data" / "answers.txt").is_file():
            return Path(location) / "data"
    raise InputError(
        f"no data/answers.txt in the easy_vqa package at {list(spec.submodule_search_locations)}; reinstall it: pip install --force-reinstall easy-vqa"
    )


def answers() -> list[str]:
    """The 13 possible answers (colours, shapes, yes and no), in the package's order."""
    return [line.strip() for line in (data_dir() / "answers.txt").read_text().splitlines() if line.strip()]


def load(split: str) -> datasets.Dataset:
    """One split as columns question, answer, image, image_id, choices (all 13 answers) and answer_index.

    Built straight as an Arrow table (images as path references): ~25x faster than encoding row by row.
    """
    if split not in SPLITS:
        raise InputError(f"easy_vqa: no split {split!r}; set test_split (or fewshot_split) to one of {list(SPLITS)}")
    folder = data_dir() / split
    questions = json.loads((folder / "questions.json").read_text())
    choices = answers()
    images = f"{folder / 'images'}/"
    table = pa.table(
        {
            "question": [q for q, _, _ in questions],
            "answer": [a for _, a, _ in questions],
            "image": [{"bytes": None, "path": f"{images}{i}.png"} for _, _, i in questions],
            "image_id": [int(i) for _, _, i in questions],
            "choices": [choices] * len(questions),
            "answer_index": [choices.index(a) for _, a, _ in questions],
        },
        schema=FEATURES.arrow_schema,
    )
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=FEATURES))
