"""Video-MME's answer reading, aggregation and prompts against the official evaluator and lmms-eval.

The `official` column is what the official evaluator reads each response as, obtained by running it in a scratch
folder: thanku-all/parse_answer eval_your_results.py (commit afd52cfe3dde5b3685e0d4f760c10c756860c758, the script
Video-MME's README points to), `extract_characters_regex`. Ours follows it on every row (no departure). The
per-duration / per-domain / per-task-type numbers of a hand-made set are its `eval_your_results` output (x 100, one
decimal). The prompts are lmms-eval 0.7.3's `videomme_doc_to_text` / `videomme_doc_to_text_subtitle` on the fixture
documents (run from the installed source, OpenCV replaced by a PyAV stand-in giving the frame count and rate).
"""

import pytest

from lmm_lightning.data.loading import load_documents
from lmm_lightning.metrics import aggregate
from lmm_lightning.requests import Response
from lmm_lightning.tasks import Task, TaskSpec, available_tasks
from lmm_lightning.tasks.builtin.videomme.utils import (
    DOMAIN_METRICS, DURATION_METRICS, TASK_TYPE_METRICS, doc_to_text_subtitle, extract_letter, subtitles_at_frames,
)
from tests.fixtures.videos import SUBTITLED, write_videomme

# (response, the letter the official reads; "" is not answered)
CASES = [
    ('C', 'C'),
    ('c', ''),
    ('C.', 'C'),
    (' C ', 'C'),
    ('\nC\n', 'C'),
    ('(C)', 'C'),
    ('(c)', ''),
    ('C) Three.', 'C'),
    ('C. Three.', 'C'),
    ('The best answer is C.', 'C'),
    ('The best answer is: C', 'C'),
    ('The correct answer is (C)', 'C'),
    ('The answer is C', 'C'),
    ('Answer: C', 'C'),
    ('answer: C', 'C'),
    ('Answer: (C) Three', 'C'),
    ('Option: C', 'C'),
    ('Best answer: C', 'B'),
    ('Best option: C', 'B'),
    ('The best option is C', 'C'),
    ('The correct option is C', 'C'),
    ('Best answer:Best option: C', 'C'),
    ('The correct answer: C', 'C'),
    ('', ''),
    ('   ', ''),
    ('three', ''),
    ('I think it is three people.', ''),
    ('Based on the video, C', 'B'),
    ('Clearly C', 'C'),
    ('the video shows a cat and a dog playing in the garden all day long', ''),
    ('The Video Shows Everything In Order So I Cannot Say Which One It Is Really', 'C'),
    ('A and C', 'A'),
    ('C or D', 'C'),
    ('DC', 'D'),
    ('c) three', ''),
    ('Ｃ', ''),
    ('**C**', 'C'),
    ('C\nD', 'C'),
    ('The answer is\nC', 'C'),
    ('THE BEST ANSWER IS C', 'B'),
    ('E', ''),
    ('None of them', ''),
    ('Option C', 'C'),
    ("I'd go with C", 'C'),
]

# (duration, domain, task type, answer, response): a hand-made set run through the official eval_your_results
SET = [
    ("short", "Knowledge", "Counting Problem", "A", "A"),
    ("short", "Knowledge", "Counting Problem", "B", "C"),
    ("short", "Knowledge", "OCR Problems", "C", "The answer is C"),
    ("short", "Sports Competition", "OCR Problems", "D", "no idea"),
    ("medium", "Sports Competition", "Action Reasoning", "A", "Because A"),
    ("medium", "Film & Television", "Action Reasoning", "B", "B"),
    ("medium", "Film & Television", "Counting Problem", "C", ""),
    ("long", "Film & Television", "Temporal Perception", "D", "D."),
    ("long", "Multilingual", "Temporal Perception", "A", "(a)"),
    ("long", "Multilingual", "Information Synopsis", "B", "Best answer: B"),
    ("long", "Multilingual", "Information Synopsis", "C", "D"),
    ("long", "Knowledge", "Counting Problem", "A", "A"),
]
OFFICIAL = {
    "videomme_acc": 66.7, "videomme_short": 66.7, "videomme_medium": 50.0, "videomme_long": 75.0,
    "videomme_domain_knowledge": 75.0, "videomme_domain_film_television": 100.0, "videomme_domain_sports_competition": 0.0,
    "videomme_domain_multilingual": 50.0, "videomme_task_temporal_perception": 100.0, "videomme_task_ocr_problems": 100.0,
    "videomme_task_counting_problem": 66.7, "videomme_task_action_reasoning": 50.0, "videomme_task_information_synopsis": 50.0,
}

LMMS_VIDEOMME = ["Select the best answer to the following multiple-choice question based on the video and the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\nHow many people speak?\nA. How many people speak? one.\nB. Two.\nC. Three.\nD. Four.\n\nAnswer with the option's letter from the given choices directly.", "Select the best answer to the following multiple-choice question based on the video and the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\nWhat does the sign say?\nA. What does the sign say? one.\nB. Two.\nC. Three.\nD. Four.\n\nAnswer with the option's letter from the given choices directly.", "Select the best answer to the following multiple-choice question based on the video and the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\nWhy does the cat run?\nA. Why does the cat run? one.\nB. Two.\nC. Three.\nD. Four.\n\nAnswer with the option's letter from the given choices directly."]
LMMS_SUBTITLE = {32: ["This video's subtitles are listed below: \nHello there\nsecond line\nthe middle\nThe end\nSelect the best answer to the following multiple-choice question based on the video and the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\nHow many people speak?\nA. How many people speak? one.\nB. Two.\nC. Three.\nD. Four.\nThe best answer is:", "This video's subtitles are listed below: \nHello there\nsecond line\nthe middle\nThe end\nSelect the best answer to the following multiple-choice question based on the video and the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\nWhat does the sign say?\nA. What does the sign say? one.\nB. Two.\nC. Three.\nD. Four.\nThe best answer is:", "This video's subtitles are listed below: \nNo subtitles available\nSelect the best answer to the following multiple-choice question based on the video and the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\nWhy does the cat run?\nA. Why does the cat run? one.\nB. Two.\nC. Three.\nD. Four.\nThe best answer is:"], 4: ["This video's subtitles are listed below: \nHello there\nThe end\nSelect the best answer to the following multiple-choice question based on the video and the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\nHow many people speak?\nA. How many people speak? one.\nB. Two.\nC. Three.\nD. Four.\nThe best answer is:", "This video's subtitles are listed below: \nHello there\nThe end\nSelect the best answer to the following multiple-choice question based on the video and the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\nWhat does the sign say?\nA. What does the sign say? one.\nB. Two.\nC. Three.\nD. Four.\nThe best answer is:", "This video's subtitles are listed below: \nNo subtitles available\nSelect the best answer to the following multiple-choice question based on the video and the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\nWhy does the cat run?\nA. Why does the cat run? one.\nB. Two.\nC. Three.\nD. Four.\nThe best answer is:"], -1: ["This video's subtitles are listed below: \nHello there\nsecond line\nthe middle\nThe end\nSelect the best answer to the following multiple-choice question based on the video and the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\nHow many people speak?\nA. How many people speak? one.\nB. Two.\nC. Three.\nD. Four.\nThe best answer is:", "This video's subtitles are listed below: \nHello there\nsecond line\nthe middle\nThe end\nSelect the best answer to the following multiple-choice question based on the video and the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\nWhat does the sign say?\nA. What does the sign say? one.\nB. Two.\nC. Three.\nD. Four.\nThe best answer is:", "This video's subtitles are listed below: \nNo subtitles available\nSelect the best answer to the following multiple-choice question based on the video and the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\nWhy does the cat run?\nA. Why does the cat run? one.\nB. Two.\nC. Three.\nD. Four.\nThe best answer is:"]}


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_videomme(tmp_path_factory.mktemp("videomme"))


@pytest.mark.parametrize(("response", "official"), CASES)
def test_letters_are_read_as_the_official_reads_them(response: str, official: str) -> None:
    assert extract_letter(response) == official


def test_enough_adversarial_cases() -> None:
    assert len(CASES) >= 30


def test_unanswered_questions_leave_every_accuracy() -> None:
    doc = {"duration": "long", "domain": "Knowledge", "task_type": "OCR Problems", "answer": "C", "question_id": "1-1"}
    assert Task(TaskSpec.from_yaml(available_tasks()["videomme"])).score(doc, [Response(uid=0, text="no idea")]) == {
        "none": {"videomme_answered": 0.0}}
    with pytest.raises(ValueError, match="field 'domain'"):
        Task(TaskSpec.from_yaml(available_tasks()["videomme"])).score({**doc, "domain": "Cooking"}, [Response(uid=0, text="C")])


def test_aggregation_matches_the_official_tables() -> None:
    task = Task(TaskSpec.from_yaml(available_tasks()["videomme"]))
    scores = [
        task.score({"duration": d, "domain": dom, "task_type": t, "answer": a, "question_id": str(i)}, [Response(uid=i, text=r)])["none"]
        for i, (d, dom, t, a, r) in enumerate(SET)
    ]
    for metric, official in OFFICIAL.items():
        values = [s[metric] for s in scores if metric in s]
        assert round(100 * aggregate(task.aggregation(metric), values, 0, 0).value, 1) == official, metric
    assert sum(s["videomme_answered"] for s in scores) == 9
    assert not any("videomme_domain_life_record" in s for s in scores)
    listed = {m.metric for m in task.metrics}
    assert listed == {"videomme_acc", "videomme_answered", *DURATION_METRICS, *DOMAIN_METRICS, *TASK_TYPE_METRICS}


@pytest.mark.parametrize("name", ["videomme", "videomme_w_subtitle"])
def test_shipped_yaml_builds_lmms_eval_prompts_from_the_fixture(tasks: dict, name: str) -> None:
    task = Task(TaskSpec.from_yaml(tasks[name]))
    assert task.spec.cluster_key == "videoID" and task.spec.generation_kwargs["max_new_tokens"] == 16
    documents = load_documents(task, None, 0)
    expected = LMMS_VIDEOMME if name == "videomme" else LMMS_SUBTITLE[32]
    for doc_id, doc in documents.docs.items():
        (request,) = task.build_requests(doc_id, doc, 0)
        assert request.context == expected[doc_id]
        (video,) = task.doc_to_visual(doc)
        assert video.endswith(f"data/{doc['videoID']}" + (".mp4" if doc["videoID"] == SUBTITLED else ".mkv"))


@pytest.mark.parametrize("frame_num", [32, 4, -1])
def test_subtitles_are_those_at_the_sampled_frames(tasks: dict, frame_num: int) -> None:
    task = Task(TaskSpec.from_yaml(tasks["videomme_w_subtitle"]))
    kwargs = {**task.prompt_kwargs, "frame_num": frame_num}
    documents = load_documents(task, None, 0)
    for doc_id, doc in documents.docs.items():
        assert doc_to_text_subtitle(doc, kwargs) == LMMS_SUBTITLE[frame_num][doc_id]
    folder = tasks["videomme_w_subtitle"].parent / "videomme"
    # 64 frames at 8 fps; 4 frames are 0, 21, 42, 63: "the middle" (frames 24-39) falls between them
    picked = subtitles_at_frames(folder / "data" / f"{SUBTITLED}.mp4", folder / "subtitle" / f"{SUBTITLED}.srt", 4)
    assert picked == ["Hello there", "The end"]


def test_the_builtins_are_registered() -> None:
    assert available_tasks()["videomme"].name == "videomme.yaml"
    assert available_tasks()["videomme_w_subtitle"].name == "videomme_w_subtitle.yaml"
