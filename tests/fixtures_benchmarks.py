"""Offline stand-ins for the hub benchmarks: a few rows each, with the real datasets' columns.

Each benchmark gets a parquet file (images are real `datasets.Image()` features, tiny PIL
pictures) and a child YAML that includes the shipped YAML and overrides only where the data
lives, so the shipped prompts, parsing and metrics are what the tests run.
"""

from pathlib import Path
from typing import Any

import datasets
from datasets import Features, Image, List, Value
from PIL import Image as PILImage

from lmm_lightning.tasks.registry import BUILTIN_DIR

COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "gray": (128, 128, 128)}
STRING, INT = Value("string"), Value("int64")
STRINGS = List(Value("string"))


def picture(color: str, size: int = 24) -> PILImage.Image:
    """A small solid image with a darker square in the middle (so it is not constant)."""
    image = PILImage.new("RGB", (size, size), COLORS[color])
    image.paste((0, 0, 0), (size // 3, size // 3, 2 * size // 3, 2 * size // 3))
    return image


def write_parquet(path: Path, rows: list[dict[str, Any]], features: Features) -> Path:
    columns = {name: [row[name] for row in rows] for name in features}
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    return path


def write_child(folder: Path, builtin: str, data_files: Any, test_split: str = "train") -> Path:
    """A YAML including the shipped one, reading the local files instead of the hub."""
    lines = [
        f"include: {BUILTIN_DIR / builtin}",
        "dataset_path: parquet",
        "dataset_name: null",
        f"data_files: {data_files!r}" if isinstance(data_files, str) else f"data_files: {dict(data_files)!r}",
        f"test_split: {test_split}",
    ]
    path = folder / Path(builtin).name
    path.write_text("\n".join(lines) + "\n")
    return path


# --- vision benchmarks ------------------------------------------------------------------------


def mme_rows() -> list[dict[str, Any]]:
    """Two images (one perception, one cognition category), two questions each, as MME pairs them."""
    rows = []
    for image_id, category, color in (("existence/0001.jpg", "existence", "red"), ("code_reasoning/0002.png", "code_reasoning", "blue")):
        for answer in ("Yes", "No"):
            question = f"Is the picture {color if answer == 'Yes' else 'green'}? Please answer yes or no."
            rows.append({"question_id": image_id, "image": picture(color), "question": question, "answer": answer, "category": category})
    return rows


MME = Features({"question_id": STRING, "image": Image(), "question": STRING, "answer": STRING, "category": STRING})


def pope_rows() -> list[dict[str, Any]]:
    objects = [("car", "yes", "red", "adversarial"), ("dog", "no", "blue", "popular"), ("cat", "no", "green", "random"), ("bus", "yes", "gray", "random")]
    return [
        {"id": str(i), "question_id": str(i + 1), "question": f"Is there a {name} in the image?", "answer": answer,
         "image_source": f"COCO_val2014_{i:012d}", "image": picture(color), "category": category}
        for i, (name, answer, color, category) in enumerate(objects)
    ]


POPE = Features({"id": STRING, "question_id": STRING, "question": STRING, "answer": STRING, "image_source": STRING, "image": Image(), "category": STRING})


def mmmu_rows() -> list[dict[str, Any]]:
    base = {"explanation": "", "img_type": "['Diagrams']", "topic_difficulty": "Easy", "subfield": "Geometry"}
    images = {f"image_{k}": None for k in range(1, 8)}
    return [
        {**base, **images, "id": "validation_Math_1", "question": "<image 1> Which color is shown?",
         "options": "['red', 'blue', 'green']", "image_1": picture("red"), "answer": "A", "question_type": "multiple-choice"},
        {**base, **images, "id": "validation_Math_2", "question": "Compare <image 2> and <image 1>. Which is darker?",
         "options": "['<image 3>', 'the left']", "image_1": picture("gray"), "image_2": picture("blue"), "image_3": picture("green"),
         "answer": "B", "question_type": "multiple-choice"},
        {**base, **images, "id": "validation_Math_3", "question": "How many sides does the shape in <image 1> have?",
         "options": "[]", "image_1": picture("green"), "answer": "4", "question_type": "open"},
    ]


MMMU = Features({
    "id": STRING, "question": STRING, "options": STRING, "explanation": STRING,
    **{f"image_{k}": Image() for k in range(1, 8)},
    "img_type": STRING, "answer": STRING, "topic_difficulty": STRING, "question_type": STRING, "subfield": STRING,
})


def scienceqa_rows() -> list[dict[str, Any]]:
    common = {"task": "closed choice", "grade": "grade3", "subject": "natural science", "topic": "colors",
              "category": "Colors", "skill": "Identify colors", "lecture": "", "solution": ""}
    return [
        {**common, "image": picture("red"), "question": "Which color is the picture?", "choices": ["blue", "red"], "answer": 1, "hint": ""},
        {**common, "image": picture("blue"), "question": "Which color is the picture?", "choices": ["blue", "red", "green"], "answer": 0,
         "hint": "The square in the middle is black."},
    ]


SCIENCEQA = Features({
    "image": Image(), "question": STRING, "choices": STRINGS, "answer": Value("int8"), "hint": STRING, "task": STRING,
    "grade": STRING, "subject": STRING, "topic": STRING, "category": STRING, "skill": STRING, "lecture": STRING, "solution": STRING,
})


def textvqa_rows() -> list[dict[str, Any]]:
    return [
        {"image_id": f"img{i}", "question_id": i, "question": question, "question_tokens": question.split(), "image": picture(color),
         "image_width": 24, "image_height": 24, "flickr_original_url": "", "flickr_300k_url": "", "answers": answers,
         "image_classes": ["Sign"], "set_name": "val", "ocr_tokens": ["stop"]}
        for i, (question, color, answers) in enumerate([
            ("what does the sign say?", "red", ["stop"] * 7 + ["stop sign"] * 3),
            ("what color is the board?", "green", ["green"] * 2 + ["dark green"] * 8),
        ])
    ]


TEXTVQA = Features({
    "image_id": STRING, "question_id": INT, "question": STRING, "question_tokens": STRINGS, "image": Image(),
    "image_width": INT, "image_height": INT, "flickr_original_url": STRING, "flickr_300k_url": STRING, "answers": STRINGS,
    "image_classes": STRINGS, "set_name": STRING, "ocr_tokens": STRINGS,
})


def chartqa_rows() -> list[dict[str, Any]]:
    return [
        {"type": "human_test", "question": "What is the highest value?", "answer": "42", "image": picture("blue")},
        {"type": "augmented_test", "question": "Which bar is red?", "answer": "Spain", "image": picture("red")},
        {"type": "augmented_test", "question": "What share is shown?", "answer": "0.45", "image": picture("gray")},
    ]


CHARTQA = Features({"type": STRING, "question": STRING, "answer": STRING, "image": Image()})


def docvqa_rows() -> list[dict[str, Any]]:
    return [
        {"questionId": str(i), "question": question, "question_types": ["form"], "image": picture(color), "docId": i,
         "ucsf_document_id": f"doc{i}", "ucsf_document_page_no": "1", "answers": answers, "data_split": "val"}
        for i, (question, color, answers) in enumerate([
            ("What is the company name?", "gray", ["ACME corp.", "Acme Corporation"]),
            ("What is the date?", "blue", ["1/2/1990"]),
        ])
    ]


DOCVQA = Features({
    "questionId": STRING, "question": STRING, "question_types": STRINGS, "image": Image(), "docId": INT,
    "ucsf_document_id": STRING, "ucsf_document_page_no": STRING, "answers": STRINGS, "data_split": STRING,
})


def ai2d_rows() -> list[dict[str, Any]]:
    return [
        {"question": "Which stage comes first?", "options": ["egg", "larva", "pupa", "adult"], "answer": "0", "image": picture("green")},
        {"question": "What eats the plant?", "options": ["sun", "rabbit", "soil", "water"], "answer": "1", "image": picture("gray")},
    ]


AI2D = Features({"question": STRING, "options": STRINGS, "answer": STRING, "image": Image()})


def gqa_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Questions (several per image) and the separate image table they join on imageId."""
    questions = [
        {"id": "201307251", "imageId": "n161313", "question": "Is it red?", "answer": "yes", "fullAnswer": "Yes, it is red."},
        {"id": "201640614", "imageId": "n235859", "question": "What color is it?", "answer": "blue", "fullAnswer": "It is blue."},
        {"id": "202225914", "imageId": "n161313", "question": "What color is the square?", "answer": "black", "fullAnswer": "The square is black."},
    ]
    for q in questions:
        q.update(isBalanced=True, semanticStr="select: square (1)")
    images = [{"id": "n235859", "image": picture("blue")}, {"id": "n161313", "image": picture("red")}, {"id": "n999999", "image": picture("gray")}]
    return questions, images


GQA = Features({"id": STRING, "imageId": STRING, "question": STRING, "answer": STRING, "fullAnswer": STRING,
                "isBalanced": Value("bool"), "semanticStr": STRING})
GQA_IMAGES = Features({"id": STRING, "image": Image()})


def ocrbench_rows() -> list[dict[str, Any]]:
    return [
        {"dataset": "IIIT5K", "question": "what is written in the image?", "question_type": "Regular Text Recognition",
         "answer": ["STOP"], "image": picture("red")},
        {"dataset": "HME100k", "question": "Please write out the expression of the formula in the image using LaTeX format.",
         "question_type": "Handwritten Mathematical Expression Recognition", "answer": ["x ^ { 2 }"], "image": picture("gray")},
        {"dataset": "docVQA", "question": "What is the total?", "question_type": "Doc-oriented VQA",
         "answer": ["$12.50", "12.50"], "image": picture("blue")},
    ]


OCRBENCH = Features({"dataset": STRING, "question": STRING, "question_type": STRING, "answer": STRINGS, "image": Image()})


def seedbench_rows() -> list[dict[str, Any]]:
    common = {"choice_a": "red", "choice_b": "blue", "choice_c": "green", "choice_d": "gray", "question_type_id": 1}
    return [
        {**common, "question_id": "101669", "data_id": "1454426_2591111986", "data_type": "image",
         "question": "What color is the image?", "answer": "A", "image": [picture("red")]},
        {**common, "question_id": "101670", "data_id": "1454427_2591111987", "data_type": "image",
         "question": "What color is the border?", "answer": "B", "image": [picture("blue")]},
        {**common, "question_id": "v100", "data_id": "video_01.mp4", "data_type": "video",
         "question": "What color do the frames end on?", "answer": "C", "image": [picture("gray"), picture("green")]},
    ]


SEEDBENCH = Features({
    "answer": STRING, "choice_a": STRING, "choice_b": STRING, "choice_c": STRING, "choice_d": STRING, "data_id": STRING,
    "data_type": STRING, "question": STRING, "question_id": STRING, "question_type_id": INT, "image": List(Image()),
})

# task name -> (shipped YAML, rows, features)
VISION = {
    "mme": ("mme/mme.yaml", mme_rows, MME),
    "pope": ("pope/pope.yaml", pope_rows, POPE),
    "mmmu_val": ("mmmu/mmmu_val.yaml", mmmu_rows, MMMU),
    "scienceqa_img": ("scienceqa/scienceqa_img.yaml", scienceqa_rows, SCIENCEQA),
    "textvqa_val": ("textvqa/textvqa_val.yaml", textvqa_rows, TEXTVQA),
    "chartqa": ("chartqa/chartqa.yaml", chartqa_rows, CHARTQA),
    "docvqa_val": ("docvqa/docvqa_val.yaml", docvqa_rows, DOCVQA),
    "ai2d": ("ai2d/ai2d.yaml", ai2d_rows, AI2D),
    "ocrbench": ("ocrbench/ocrbench.yaml", ocrbench_rows, OCRBENCH),
    "seedbench": ("seedbench/seedbench.yaml", seedbench_rows, SEEDBENCH),
}


def write_vision_benchmarks(folder: Path) -> tuple[dict[str, Path], Path]:
    """Child YAMLs by task name, and the GQA image table (for LMM_LIGHTNING_GQA_IMAGES)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (builtin, rows, features) in VISION.items():
        write_parquet(folder / f"{name}.parquet", rows(), features)
        out[name] = write_child(folder, builtin, f"{name}.parquet")
    questions, images = gqa_rows()
    write_parquet(folder / "gqa.parquet", questions, GQA)
    gqa_images = write_parquet(folder / "gqa_images.parquet", images, GQA_IMAGES)
    out["gqa"] = write_child(folder, "gqa/gqa.yaml", "gqa.parquet")
    return out, gqa_images


# --- text benchmarks --------------------------------------------------------------------------

MMLU = Features({"question": STRING, "subject": STRING, "choices": STRINGS, "answer": Value("int64")})
MMLU_DOCS = {
    "anatomy": [
        ("Which organ pumps blood?", ["lung", "heart", "liver", "skin"], 1),
        ("How many lungs do people have?", ["one", "two", "three", "four"], 1),
        ("Which bone is in the leg?", ["femur", "skull", "rib", "ulna"], 0),
    ],
    "astronomy": [
        ("Which is a planet?", ["Sun", "Moon", "Mars", "Sirius"], 2),
        ("What orbits the Earth?", ["Moon", "Sun", "Venus", "Mars"], 0),
    ],
}

ARC = Features({"id": STRING, "question": STRING, "choices": {"text": STRINGS, "label": STRINGS}, "answerKey": STRING})
ARC_DOCS = [
    {"id": "Mercury_7175875", "question": "Which is a source of light?",
     "choices": {"text": ["the Sun", "a rock", "a cup"], "label": ["A", "B", "C"]}, "answerKey": "A"},
    {"id": "NYSEDREGENTS_2015_4_8", "question": "What do plants need to grow?",
     "choices": {"text": ["salt", "sand", "light", "ice"], "label": ["1", "2", "3", "4"]}, "answerKey": "3"},
]

HELLASWAG = Features({
    "ind": INT, "activity_label": STRING, "ctx_a": STRING, "ctx_b": STRING, "ctx": STRING, "endings": STRINGS,
    "source_id": STRING, "split": STRING, "split_type": STRING, "label": STRING,
})
HELLASWAG_DOCS = [
    {"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
     "source_id": "activitynet~v_-JhWjGDPHMY", "split": "val", "split_type": "indomain", "label": "3"},
    {"ind": 92, "activity_label": "Home and Garden", "ctx_a": "[header] How to clean a pan [title] Fill the pan.", "ctx_b": "",
     "endings": ["[step] Add soap and water.", "Paint the pan.", "Throw the pan away.", "Sell the pan."],
     "source_id": "wikihow~1", "split": "val", "split_type": "zeroshot", "label": "0"},
]


def write_text_benchmarks(folder: Path) -> dict[str, Path]:
    """Child YAMLs for two MMLU subjects (plus a group over them), ARC-Easy/Challenge and HellaSwag."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for subject, docs in MMLU_DOCS.items():
        rows = [{"question": q, "subject": subject, "choices": c, "answer": a} for q, c, a in docs]
        write_parquet(folder / f"mmlu_{subject}_test.parquet", rows, MMLU)
        write_parquet(folder / f"mmlu_{subject}_dev.parquet", rows[:1], MMLU)
        files = {"test": f"mmlu_{subject}_test.parquet", "dev": f"mmlu_{subject}_dev.parquet"}
        out[f"mmlu_{subject}"] = write_child(folder, f"mmlu/mmlu_{subject}.yaml", files, test_split="test")
    group = folder / "mmlu_fixture_group.yaml"
    group.write_text(
        "group: mmlu_fixture\ntask:\n" + "".join(f"  - {out[f'mmlu_{s}']}\n" for s in MMLU_DOCS)
        + "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\n"
    )
    out["mmlu_fixture"] = group
    for name in ("arc_easy", "arc_challenge"):
        write_parquet(folder / f"{name}.parquet", ARC_DOCS, ARC)
        out[name] = write_child(folder, f"arc/{name}.yaml", f"{name}.parquet")
    rows = [{**doc, "ctx": doc["ctx_a"] + " " + doc["ctx_b"]} for doc in HELLASWAG_DOCS]
    write_parquet(folder / "hellaswag.parquet", rows, HELLASWAG)
    out["hellaswag"] = write_child(folder, "hellaswag/hellaswag.yaml", "hellaswag.parquet")
    return out
