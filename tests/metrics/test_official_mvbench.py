"""MVBench's answer check, prompt and accuracy against the official evaluation, on adversarial model outputs.

The `official` column is what the official `check_ans` returns for "(" + the response's first line (the answer
prompt "Best option:(" is the model's prefix there, and `return_prompt` puts "(" back), obtained by running it in a
scratch folder: OpenGVLab/Ask-Anything video_chat2/mvbench.ipynb (commit 71ac7a28183a3d9610ad149f19ee2195cc31c65e).
The gold is "(A) Ate the medicine.". Where ours differs the row says why: the answer prompt is not prefilled here,
so a response repeating it ("Best option: (A)", a leading "(") is read after it (PREFILL); an empty answer is wrong
(EMPTY; the official finds "(" in every "(x)"). The prompts are the official user turn (system instruction +
`qa_template` + question prompt) on the fixture documents, from the same run.
"""

import pytest

from lmm_lightning.data.loading import load_documents
from lmm_lightning.data.video import Clip
from lmm_lightning.metrics import aggregate
from lmm_lightning.requests import Response
from lmm_lightning.tasks import Task, TaskSpec, available_tasks
from lmm_lightning.tasks.builtin.mvbench.utils import TASKS, as_official_prediction, check_answer, gold_option
from lmm_lightning.tasks.registry import BUILTIN_DIR
from tests.fixtures.videos import write_mvbench

PREFILL = "departure: the answer prompt is not prefilled, a repeated 'Best option:' or leading '(' is read as its"
EMPTY = "departure: an empty answer is wrong"

# (response, official, ours, why ours differs)
CASES = [
    ('A) Ate the medicine.', True, True, ''),
    ('A', True, True, ''),
    ('a', True, True, ''),
    ('A.', True, True, ''),
    ('A. Ate', True, True, ''),
    ('(A) Ate the medicine.', True, True, ''),
    ('(A', False, True, PREFILL),
    ('A)', True, True, ''),
    ('a)', True, True, ''),
    ('A, Ate', False, False, ''),
    ('A: Ate', False, False, ''),
    ('A  Ate', True, True, ''),
    ('Best option: (A) Ate', False, True, PREFILL),
    ('Best option:(A)', False, True, PREFILL),
    ('Best option: A', False, True, PREFILL),
    ('Option A', False, False, ''),
    ('The answer is A', False, False, ''),
    ('', True, False, EMPTY),
    (' ', True, False, EMPTY),
    ('.', True, False, EMPTY),
    ('..', True, False, EMPTY),
    ('(', False, False, ''),
    ('B) Tidied up', False, False, ''),
    ('B', False, False, ''),
    ('AB', False, False, ''),
    ('Apple', False, False, ''),
    ('a cat', True, True, ''),
    ('A\nB', True, True, ''),
    ('\nA', True, True, ''),
    ('A\tAte', False, False, ''),
    ('((A))', True, True, ''),
    ('[A]', False, False, ''),
    ('A.B', False, False, ''),
    ('A.)', True, True, ''),
    ('Ａ', False, False, ''),
    ('Ate the medicine.', False, False, ''),
    ('A or B', True, True, ''),
    ('D) Took the box.', False, False, ''),
]

# task -> [(official user turn, official gold)] for the fixture documents
OFFICIAL_PROMPTS = {'action_sequence': [['Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of objects, and the action and pose of persons. Based on your observations, select the best option that accurately addresses the question.\nQuestion: What happened after the person took the food?\nOptions:\n(A) Ate the medicine.\n(B) Tidied up the blanket.\n(C) Put down the cup/glass/bottle.\n(D) Took the box.\nOnly give the best option.', '(A) Ate the medicine.'], ['Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of objects, and the action and pose of persons. Based on your observations, select the best option that accurately addresses the question.\nQuestion: What happened before the person sat on the sofa?\nOptions:\n(A) Opened the door.\n(B) Threw the towel.\nOnly give the best option.', '(B) Threw the towel.']], 'episodic_reasoning': [['Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of objects, and the action and pose of persons. Based on your observations, select the best option that accurately addresses the question.\nQuestion: What did Castle hold?\nOptions:\n(A) A book.\n(B) A gun.\n(C) A phone.\nOnly give the best option.', '(C) A phone.']], 'action_antonym': [['Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of objects, and the action and pose of persons. Based on your observations, select the best option that accurately addresses the question.\nQuestion: What is the action performed by the person in the video?\nOptions:\n(A) Not sure\n(B) Scattering something down\n(C) Piling something up\nOnly give the best option.', '(C) Piling something up']]}


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_mvbench(tmp_path_factory.mktemp("mvbench"))


@pytest.mark.parametrize(("response", "official", "ours", "why"), CASES)
def test_check_matches_the_official_or_says_why(response: str, official: bool, ours: bool, why: str) -> None:
    assert check_answer(as_official_prediction(response), "(A) Ate the medicine.") == ours
    assert (ours != official) == bool(why)


def test_enough_adversarial_cases() -> None:
    assert len(CASES) >= 30


def test_shipped_yamls_build_the_official_prompts(tasks: dict) -> None:
    for name, expected in OFFICIAL_PROMPTS.items():
        task = Task(TaskSpec.from_yaml(tasks[f"mvbench_{name}"]))
        assert task.spec.generation_kwargs["max_new_tokens"] == 100
        documents = load_documents(task, None, 0)
        assert len(documents.docs) == len(expected)
        for doc_id, doc in documents.docs.items():
            (request,) = task.build_requests(doc_id, doc, 0)
            assert (request.context, gold_option(doc)) == tuple(expected[doc_id])
            (video,) = task.doc_to_visual(doc)
            folder, kind, bounded = TASKS[name]
            if bounded:
                fps = 3.0 if kind == "frame" else None  # a frame folder's rate (official read_frame fps=3); a file's is its own
                path = str(tasks[f"mvbench_{name}"].parent / "mvbench_video" / folder / doc["video"])
                assert video == Clip(path, doc["start"], doc["end"], fps=fps)
            else:
                assert video.endswith(f"{folder}/{doc['video']}")


def test_accuracy_per_task_and_over_the_group(tasks: dict) -> None:
    task = Task(TaskSpec.from_yaml(tasks["mvbench_action_sequence"]))
    docs = list(load_documents(task, None, 0).docs.values())
    scores = [task.score(doc, [Response(uid=i, text=text)])["none"]["mvbench_acc"] for i, (doc, text) in enumerate(zip(docs, ["A", "(A) Opened"]))]
    assert scores == [1.0, 0.0]
    assert aggregate(task.aggregation("mvbench_acc"), scores, 0, 0).value == 0.5


def test_every_official_task_ships_and_the_group_lists_them() -> None:
    names = available_tasks()
    for name in TASKS:
        spec = TaskSpec.from_yaml(names[f"mvbench_{name}"])
        assert (spec.dataset_path, spec.dataset_name, spec.test_split) == ("OpenGVLab/MVBench", name, "train")
        Task(spec)
    from lmm_lightning.tasks.spec import GroupSpec

    group = GroupSpec.from_yaml(BUILTIN_DIR / "mvbench" / "mvbench.yaml")
    assert sorted(group.task) == sorted(f"mvbench_{n}" for n in TASKS) and len(TASKS) == 20
    assert group.weight_by_size("mvbench_acc") and group.clusters_subtasks("mvbench_acc")


def test_an_answer_outside_the_candidates_is_an_error() -> None:
    with pytest.raises(ValueError, match="not among the candidates"):
        gold_option({"video": "v.mp4", "answer": "Sat.", "candidates": ["Ran.", "Ate."]})
