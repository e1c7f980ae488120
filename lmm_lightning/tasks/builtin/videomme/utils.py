"""Video-MME (Fu et al., 2024): 2,700 four-option questions over 900 videos (short, medium, long), with or
without the videos' subtitles.

Prompts as lmms-eval 0.7.3 (lmms_eval/tasks/videomme/utils.py); answers read and scored as the official
evaluator (thanku-all/parse_answer eval_your_results.py, the script Video-MME's README points to): the first
capital A-D after some answer prefixes are deleted; a response with none is not "answered" and is left out of
every accuracy, which are correct / answered overall, per duration, per domain, per sub-category, per task type.
"""

import re
from pathlib import Path
from typing import Any, Optional

from lmm_lightning.data.video import FrameSampling, frame_indices, probe

DURATIONS = ("short", "medium", "long")
DOMAINS = ("Knowledge", "Film & Television", "Sports Competition", "Artistic Performance", "Life Record", "Multilingual")
TASK_TYPES = (
    "Temporal Perception", "Spatial Perception", "Attribute Perception", "Action Recognition", "Object Recognition",
    "OCR Problems", "Counting Problem", "Temporal Reasoning", "Spatial Reasoning", "Action Reasoning",
    "Object Reasoning", "Information Synopsis",
)
# The official list verbatim: two missing commas join four prefixes into two strings that rarely occur, so
# "Best answer: C" keeps its "B" (read as B) and "The best option is C" is read from "C" only by luck.
ANSWER_PREFIXES = (
    "The best answer is", "The correct answer is", "The answer is", "The answer",
    "The best option isThe correct option is", "Best answer:Best option:", "Answer:", "Option:",
    "The correct answer", "The correct option",
)
# lmms-eval's instruction, which names the subtitles even in the prompt without them.
OPTION_PROMPT = (
    "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
    "Respond with only the letter (A, B, C, or D) of the correct option."
)
SUBTITLES_PROMPT = "This video's subtitles are listed below: \n"
NO_SUBTITLES = "No subtitles available"
SUBTITLE_TEXT = re.compile(r'<font color="white" size=".72c">(.*?)</font>')
VIDEO_SUFFIXES = (".mp4", ".MP4", ".mkv")


def slug(name: str) -> str:
    """A category as part of a metric name.

    >>> slug("Film & Television"), slug("OCR Problems")
    ('film_television', 'ocr_problems')
    """
    return "_".join(re.findall(r"[a-z0-9]+", name.lower()))


DURATION_METRICS = [f"videomme_{d}" for d in DURATIONS]
DOMAIN_METRICS = [f"videomme_domain_{slug(d)}" for d in DOMAINS]
TASK_TYPE_METRICS = [f"videomme_task_{slug(t)}" for t in TASK_TYPES]


def video_path(doc: dict[str, Any], kwargs: dict[str, Any]) -> Path:
    """`<video_dir>/data/<videoID>.mp4`, else .MP4 or .mkv where that exists (lmms-eval's order)."""
    base = Path(kwargs["video_dir"]) / "data" / doc["videoID"]
    for suffix in VIDEO_SUFFIXES:
        if base.with_name(base.name + suffix).is_file():
            return base.with_name(base.name + suffix)
    return base.with_name(base.name + ".mp4")  # missing: the loader's error names it


def doc_to_visual(doc: dict[str, Any], kwargs: dict[str, Any]) -> list[str]:
    return [str(video_path(doc, kwargs))]


def question_block(doc: dict[str, Any]) -> str:
    """The question, then its options one a line (they carry their "A. " already)."""
    return doc["question"] + "\n" + "\n".join(doc["options"])


def doc_to_text(doc: dict[str, Any], kwargs: Optional[dict[str, Any]] = None) -> str:
    """lmms-eval's `videomme_doc_to_text` (default prompt settings)."""
    post_prompt = (kwargs or {}).get("post_prompt", "The best answer is:")
    return OPTION_PROMPT + "\n" + question_block(doc) + "\n" + post_prompt


def parse_srt_time(text: str) -> float:
    """Seconds of an .srt time (hours:minutes:seconds,milliseconds).

    >>> parse_srt_time("01:02:03,450")
    3723.45
    """
    hours, minutes, rest = text.split(":")
    seconds, millis = rest.split(",")
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000


def read_subtitles(path: Path) -> list[tuple[float, float, str]]:
    """(start, end, text) of each block of an .srt file: blocks split on blank lines, a block's second line its
    times, its further lines its text joined by spaces; a block repeating an earlier block's times replaces it
    (lmms-eval keeps them in a dict keyed by the times)."""
    blocks: dict[tuple[float, float], str] = {}
    for section in path.read_text(encoding="utf-8").split("\n\n"):
        lines = section.split("\n")
        if section.strip() and len(lines) >= 3:
            start, end = lines[1].split(" --> ")
            blocks[(parse_srt_time(start), parse_srt_time(end))] = " ".join(lines[2:])
    return [(start, end, text) for (start, end), text in blocks.items()]


def subtitles_at_frames(video: Path, subtitle_file: Path, frame_num: int) -> list[str]:
    """The subtitles shown at the `frame_num` frames spread uniformly over the video (all frames for -1), as
    lmms-eval picks them: a subtitle from second s to e covers frames int(s * fps) to int(e * fps), end excluded;
    each one covering a sampled frame is kept once, in time order, as the text of its first <font> tag (a
    subtitle without one is dropped)."""
    info = probe(video)
    fps = info.fps or 0.0
    count = info.total_frames if frame_num == -1 else frame_num
    sampled = frame_indices(info.total_frames, info.fps, FrameSampling(count=count))  # linspace, cast to int
    texts = []
    for start, end, text in read_subtitles(subtitle_file):
        first, last = int(start * fps), int(end * fps)
        match = SUBTITLE_TEXT.search(text)
        if match and any(first <= frame < last for frame in sampled):
            texts.append((start, end, match.group(1)))
    return [text for *_, text in sorted(texts, key=lambda t: (t[0], t[1]))]


def doc_to_text_subtitle(doc: dict[str, Any], kwargs: dict[str, Any]) -> str:
    """lmms-eval's `videomme_doc_to_text_subtitle`: the subtitles at the sampled frames (`frame_num` of the
    prompt settings, 32 by default) or "No subtitles available" for a video without a subtitle file, then
    the question. Its `post_prompt` is not used: the prompt ends "The best answer is:"."""
    subtitle_file = Path(kwargs["video_dir"]) / "subtitle" / f"{doc['videoID']}.srt"
    if subtitle_file.is_file():
        subtitles = "\n".join(subtitles_at_frames(video_path(doc, kwargs), subtitle_file, int(kwargs.get("frame_num", 32))))
    else:
        subtitles = NO_SUBTITLES
    return SUBTITLES_PROMPT + subtitles + "\n" + OPTION_PROMPT + "\n" + question_block(doc) + "\n" + "The best answer is:"


def extract_letter(response: str) -> str:
    """The official evaluator's `extract_characters_regex`: strip, delete the answer prefixes (case kept), then
    the first capital A, B, C or D anywhere, even inside a word; "" when there is none. (Its rule that a
    response of more than 10 words without a capital A-D gives "" changes nothing: such a response has none.)

    >>> [extract_letter(r) for r in ("C", "The best answer is C.", "(c)", "Answer: C", "Because C", "none")]
    ['C', 'C', '', 'C', 'B', '']
    """
    text = response.strip()
    for prefix in ANSWER_PREFIXES:
        text = text.replace(prefix, "")
    match = re.search("[ABCD]", text)
    return match.group() if match else ""


def check_doc(doc: dict[str, Any]) -> None:
    for field, value, known in (("duration", doc["duration"], DURATIONS), ("domain", doc["domain"], DOMAINS),
                                ("task_type", doc["task_type"], TASK_TYPES)):
        if value not in known:
            raise ValueError(f"Video-MME question {doc.get('question_id')!r}: field {field!r} is {value!r}, expected one of {list(known)}")


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """`videomme_answered` for every question (1.0 when a letter was read); where one was, its correctness as
    `videomme_acc` and as the accuracy of its duration, domain and task type (the official denominators count
    answered questions only)."""
    check_doc(doc)
    letter = extract_letter(results[0])
    if not letter:
        return {"videomme_answered": 0.0}
    correct = float(letter == doc["answer"])
    return {
        "videomme_answered": 1.0,
        "videomme_acc": correct,
        f"videomme_{doc['duration']}": correct,
        f"videomme_domain_{slug(doc['domain'])}": correct,
        f"videomme_task_{slug(doc['task_type'])}": correct,
    }
