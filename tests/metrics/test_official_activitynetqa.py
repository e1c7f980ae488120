"""ActivityNet-QA's prompt, judge prompt and judge-answer reading against lmms-eval and Video-ChatGPT.

The `lmms_eval` column is lmms-eval 0.7.3's `parse_score` (lmms_eval/tasks/activitynetqa/utils.py, run from the
installed source with loguru stubbed) on each judge answer: [pred, score], None where it cannot read it; the
`process_results` column what its `activitynetqa_process_results` then does with that answer as the judge's (the
request replaced): (Correctness, score), or the exception it raises (TypeError: its fallback ["no", 0] only covers a
failed request). Ours reads every answer as parse_score does; where it reads none the document is unparsed and
not scored (departure: lmms-eval fails, Video-ChatGPT asks its judge again). The judge prompt is Video-ChatGPT's
(quantitative_evaluation/evaluate_activitynet_qa.py, commit 69ea1db), which lmms-eval copies verbatim.
"""

import pytest

from lmm_lightning.data.loading import load_documents
from lmm_lightning.evaluation.judge import Judge, JudgeRules
from lmm_lightning.metrics import aggregate
from lmm_lightning.models import EvalModule
from lmm_lightning.requests import Response
from lmm_lightning.tasks import Task, TaskSpec, available_tasks
from lmm_lightning.tasks.builtin.activitynetqa.utils import JUDGE_SYSTEM, parse_judgement
from tests.fixtures.videos import write_activitynetqa

# (judge answer, lmms-eval parse_score, lmms-eval process_results)
CASES = [
    ("{'pred': 'yes', 'score': 4}", ('yes', 4), ('yes', 4)),
    ("{'pred': 'no', 'score': 0}", ('no', 0), ('no', 0)),
    ("{'pred': 'yes', 'score': 4.8}", ('yes', 4), ('yes', 4)),
    ("{'pred': 'Yes', 'score': 5}", ('yes', 5), ('yes', 5)),
    ("{'pred': 'NO', 'score': 1}", ('no', 1), ('no', 1)),
    ('{"pred": "yes", "score": 3}', ('yes', 3), ('yes', 3)),
    ("{'pred': 'yes', 'score': '4'}", ('yes', 4), ('yes', 4)),
    ("{'pred': 'yes', 'score': '4.5'}", None, 'TypeError'),
    ("Here is my evaluation: {'pred': 'yes', 'score': 4}", ('yes', 4), ('yes', 4)),
    ("```python\n{'pred': 'no', 'score': 2}\n```", ('no', 2), ('no', 2)),
    ("{'pred': 'yes', 'score': 4}\n{'pred': 'no', 'score': 1}", ('yes', 4), ('yes', 4)),
    ("{'score': 3, 'pred': 'no'}", ('no', 3), ('no', 3)),
    ("{'pred': 'yes'}", None, 'TypeError'),
    ("{'score': 4}", None, 'TypeError'),
    ('yes, 4', None, 'TypeError'),
    ('', None, 'TypeError'),
    ('{}', None, 'TypeError'),
    ("{'pred': 'maybe', 'score': 3}", ('maybe', 3), ('maybe', 3)),
    ("{'pred': 'not sure', 'score': 2}", ('no', 2), ('no', 2)),
    ("{'pred': 'yesno', 'score': 2}", ('yes', 2), ('yes', 2)),
    ("{'pred': 'Noyes', 'score': 2}", ('yes', 2), ('yes', 2)),
    ("{'pred': 'yes', 'score': True}", ('yes', 1), ('yes', 1)),
    ("{'pred': 'yes', 'score': None}", None, 'TypeError'),
    ("{'pred': 1, 'score': 3}", None, 'TypeError'),
    ("{'pred': 'yes', 'score': -1}", ('yes', -1), ('yes', -1)),
    ("{'pred': 'yes', 'score': 7}", ('yes', 7), ('yes', 7)),
    ("{'pred': 'yes', 'score': 1e999}", None, 'TypeError'),
    ("{'pred': 'yes', 'score': 4", ('yes', 4), ('yes', 4)),
    ('{pred: yes, score: 4}', None, 'TypeError'),
    ("{'pred': 'yes', 'score': 4,}", ('yes', 4), ('yes', 4)),
    ('{1, 2}', None, 'TypeError'),
    ("{'pred': 'yes', 'score': 4} extra", ('yes', 4), ('yes', 4)),
    ("{'pred': 'no', 'score': 0.9}", ('no', 0), ('no', 0)),
    ("{'pred': 'yes', 'score': 5.0}", ('yes', 5), ('yes', 5)),
    ("{'pred': 'know', 'score': 3}", ('no', 3), ('no', 3)),
]

LMMS_PROMPTS = ['What is the person in the video doing? Answer the question using a single word or phrase.', 'Is the person in the video indoors? Answer the question using a single word or phrase.', 'What color is the dog? Answer the question using a single word or phrase.']

USER_TURN = (
    "Please evaluate the following video-based question-answer pair:\n\n"
    "Question: what is the person in the video doing\nCorrect Answer: skiing\nPredicted Answer: Skiing down a hill\n\n"
    "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, with 5 "
    "indicating the highest meaningful match. Please generate the response in the form of a Python dictionary string "
    "with keys 'pred' and 'score', where value of 'pred' is  a string of 'yes' or 'no' and value of 'score' is in "
    "INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary "
    "string. For example, your response should look like this: {'pred': 'yes', 'score': 4.8}."
)


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Task:
    return Task(TaskSpec.from_yaml(write_activitynetqa(tmp_path_factory.mktemp("anet"))["activitynetqa"]))


@pytest.mark.parametrize(("answer", "lmms_eval", "processed"), CASES)
def test_judge_answers_are_read_as_lmms_eval_reads_them(answer: str, lmms_eval, processed) -> None:
    ours = parse_judgement(answer)
    assert (None if ours is None else (ours["pred"], ours["score"])) == lmms_eval
    assert (processed == "TypeError") == (ours is None)  # lmms-eval fails exactly where we count unparsed


def test_enough_adversarial_cases() -> None:
    assert len(CASES) >= 30


def test_prompts_are_lmms_evals_and_videos_resolve(task: Task) -> None:
    documents = load_documents(task, None, 0)
    for doc_id, doc in documents.docs.items():
        (request,) = task.build_requests(doc_id, doc, 0)
        assert request.context == LMMS_PROMPTS[doc_id]
        assert request.generation.until == ("ASSISTANT:",) and request.generation.max_new_tokens == 64
        (video,) = task.doc_to_visual(doc)
        assert video.endswith("all_test/v_" + doc["video_name"] + (".mp4" if doc_id < 2 else ".mkv"))
    assert task.spec.cluster_key == "video_name"


class FixedJudge(EvalModule):
    """A judge answering from a list, recording the turns it was sent."""

    def __init__(self, answers: list[str]) -> None:
        super().__init__()
        self.answers, self.sent = answers, []

    def generate_until(self, requests: list) -> list[Response]:
        out = []
        for index, request in enumerate(requests):
            self.sent.append(request.messages)
            response = Response(uid=request.uid, text=self.answers[request.doc_id])
            self.answered(index, response)
            out.append(response)
        return out


def test_judged_end_to_end_accuracy_and_score(task: Task, tmp_path) -> None:
    assert task.spec.judge.quick is None and task.spec.judge.max_new_tokens == 64  # no rule answers without the judge
    documents = load_documents(task, None, 0)
    judge = FixedJudge(["{'pred': 'yes', 'score': 4}", "{'pred': 'no', 'score': 1.9}", "no idea"])
    responses = {i: [Response(uid=i, text="Skiing down a hill")] for i in documents.docs}
    judged = Judge(judge, tmp_path).run({task.name: task}, {task.name: documents.docs}, {task.name: responses})[task.name]
    system, user = judge.sent[0]
    assert (system.role, system.content, user.role, user.content) == ("system", JUDGE_SYSTEM, "user", USER_TURN)
    assert JudgeRules.of(task).prompt(documents.docs[0], "Skiing down a hill", "skiing") == USER_TURN
    assert [j.value for j in judged.values()] == [{"pred": "yes", "score": 4}, {"pred": "no", "score": 1}, None]
    scores = [task.score_judged(documents.docs[i], j.value) for i, j in judged.items() if j.parsed]
    assert scores == [{"activitynetqa_score": 4.0, "activitynetqa_accuracy": 1.0}, {"activitynetqa_score": 1.0, "activitynetqa_accuracy": 0.0}]
    assert aggregate(task.aggregation("activitynetqa_accuracy"), [s["activitynetqa_accuracy"] for s in scores], 0, 0).value == 0.5
    assert aggregate(task.aggregation("activitynetqa_score"), [s["activitynetqa_score"] for s in scores], 0, 0).value == 2.5


def test_a_verdict_neither_yes_nor_no_counts_for_the_score_only() -> None:
    spec = Task(TaskSpec.from_yaml(available_tasks()["activitynetqa"]))
    assert spec.score_judged({}, {"pred": "maybe", "score": 3}) == {"activitynetqa_score": 3.0}
