"""MVBench (Li et al., 2024): 20 temporal video tasks of 200 multiple-choice questions each (OpenGVLab/MVBench).

Prompt and scoring as the official evaluation, OpenGVLab/Ask-Anything video_chat2/mvbench.ipynb: the system
instruction and the question with lettered options in the user turn, then "\\nOnly give the best option."; the
model answers after "Best option:(", and its first line with "(" put back is checked by `check_ans`: the
answer's option "(b)" must contain the response's first word without periods, or the reverse. Accuracy is
correct / all questions, per task and over all 20 (the notebook's "Avg").
"""

from pathlib import Path
from typing import Any, Optional

from lmm_lightning.data.video import Clip

SYSTEM = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of "
    "objects, and the action and pose of persons. Based on your observations, select the best option that "
    "accurately addresses the question.\n"
)
QUESTION_PROMPT = "\nOnly give the best option."
ANSWER_PROMPT = "Best option:("
# The official `data_list`: task -> (video folder under the MVBench `video/` folder, kind, bounded by start/end).
TASKS: dict[str, tuple[str, str, bool]] = {
    "action_sequence": ("star/Charades_v1_480", "video", True),
    "action_prediction": ("star/Charades_v1_480", "video", True),
    "action_antonym": ("ssv2_video", "video", False),
    "fine_grained_action": ("Moments_in_Time_Raw/videos", "video", False),
    "unexpected_action": ("FunQA_test/test", "video", False),
    "object_existence": ("clevrer/video_validation", "video", False),
    "object_interaction": ("star/Charades_v1_480", "video", True),
    "object_shuffle": ("perception/videos", "video", False),
    "moving_direction": ("clevrer/video_validation", "video", False),
    "action_localization": ("sta/sta_video", "video", True),
    "scene_transition": ("scene_qa/video", "video", False),
    "action_count": ("perception/videos", "video", False),
    "moving_count": ("clevrer/video_validation", "video", False),
    "moving_attribute": ("clevrer/video_validation", "video", False),
    "state_change": ("perception/videos", "video", False),
    "fine_grained_pose": ("nturgbd", "video", False),
    "character_order": ("perception/videos", "video", False),
    "egocentric_navigation": ("vlnqa", "video", False),
    "episodic_reasoning": ("tvqa/frames_fps3_hq", "frame", True),
    "counterfactual_inference": ("clevrer/video_validation", "video", False),
}
# The official frame rate of the episodic_reasoning frame folders (read_frame's fps=3; frames 00001.jpg on).
FRAME_FOLDER_FPS = 3.0


def doc_to_visual(doc: dict[str, Any], kwargs: dict[str, Any]) -> list[Any]:
    """The question's video (a frame folder for episodic_reasoning), bounded by its start/end seconds for the
    four tasks the official reads so."""
    folder, _, bounded = TASKS[kwargs["sub_task"]]
    path = str(Path(kwargs["video_dir"]) / folder / doc["video"])
    if not bounded:
        return [path]
    fps = FRAME_FOLDER_FPS if TASKS[kwargs["sub_task"]][1] == "frame" else None  # a video file's rate is its own
    return [Clip(path, float(doc["start"]), float(doc["end"]), fps=fps)]


def doc_to_text(doc: dict[str, Any], kwargs: Optional[dict[str, Any]] = None) -> str:
    """The official user turn (system_llm=True): the instruction, "Question: ...", "Options:" and "(A) ..." lines.

    >>> print(doc_to_text({"question": "What next?", "candidates": ["sit", "run"]}).split("\\n", 1)[1])
    Question: What next?
    Options:
    (A) sit
    (B) run
    Only give the best option.
    """
    options = "".join(f"({chr(ord('A') + i)}) {c}\n" for i, c in enumerate(doc["candidates"]))
    question = f"Question: {doc['question']}\nOptions:\n{options}".rstrip()
    return SYSTEM + question + QUESTION_PROMPT


def gold_option(doc: dict[str, Any]) -> str:
    """The answer as the official writes it: "(B) run", the letter of the candidate equal to the answer."""
    if doc["answer"] not in doc["candidates"]:
        raise ValueError(f"MVBench question on {doc.get('video')!r}: answer {doc['answer']!r} is not among the candidates {doc['candidates']}")
    return f"({chr(ord('A') + doc['candidates'].index(doc['answer']))}) {doc['answer']}"


def as_official_prediction(response: str) -> str:
    """What the official checks: "(" + the first line of the answer given after "Best option:(". The answer
    prompt cannot be prefilled here, so a response repeating it ("Best option: (B)", "(B) run") is read from
    after it."""
    text = response.strip().split("\n")[0].strip()
    if text.startswith("Best option:"):
        text = text[len("Best option:"):].strip()
    if text.startswith("("):
        text = text[1:]
    return "(" + text


def check_answer(prediction: str, gold: str) -> bool:
    """The official `check_ans`: the first space-separated word of each, lowercased; right when the prediction's
    (periods removed) is part of the gold's, or the gold's part of the prediction's. Departure: a prediction
    that is nothing but "(" (an empty answer) is wrong; the official finds "(" in every "(x)".

    >>> [check_answer(p, "(B) run") for p in ("(B) run", "(b", "(B.", "(b, run", "((B)", "(Bob", "(", "(A)")]
    [True, True, True, False, True, False, False, False]
    """
    option = prediction.lower().split(" ")[0]
    gold_word = gold.lower().split(" ")[0]
    if option.replace(".", "") == "(":
        return False
    return option.replace(".", "") in gold_word or gold_word in option


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return {"mvbench_acc": float(check_answer(as_official_prediction(results[0]), gold_option(doc)))}
