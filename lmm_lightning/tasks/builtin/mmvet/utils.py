"""MM-Vet (Yu et al., 2024): 218 open questions over 200 images, each needing one or more of six capabilities
(recognition, OCR, knowledge, language generation, spatial awareness, math). A judge model (GPT-4 in the paper)
grades each answer from 0.0 to 1.0 against the ground truth with MM-Vet's few-shot grading prompt, as
yuweihao/MM-Vet `mm-vet_evaluator.py` does; the total and each capability's score are the mean grade over
their questions (x 100 in MM-Vet's tables).
"""

from typing import Any, Optional

# MM-Vet's six capabilities, as the dataset's `capability` column names them.
CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")

# The grading prompt of mm-vet_evaluator.py, verbatim: an instruction and a table of graded examples to complete.
GRADER_PROMPT = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""


def judge_prompt(doc: dict[str, Any], response: str) -> str:
    """The whole text the judge reads: the grading prompt, a blank line, then the document's table row with its
    last cell left for the judge. `<AND>` / `<OR>` in the ground truth get spaces around them, as the official does.

    >>> judge_prompt({"question": "What is x?", "answer": "-1<AND>-5"}, "x = -1").splitlines()[-1]
    'What is x? | -1 <AND> -5 | x = -1 | '
    """
    truth = doc["answer"].replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return GRADER_PROMPT + "\n" + " | ".join([doc["question"], truth, response, ""])


def parse_judgement(answer: str) -> Optional[float]:
    """The grade in the judge's answer, read as the official evaluator reads it: the text before the first space,
    stripped, as a Python float in [0, 1]; anything else is unreadable (None). The official then asks again (up
    to 5 times, then grades 0.0); here such a document is counted as unparsed and not scored. NaN, which the
    official would accept, is unreadable here.

    >>> [parse_judgement(a) for a in ("0.5", "1.0 (right)", "0.5\\n", " 0.5", "1.1", "N/A", "nan")]
    [0.5, 1.0, 0.5, None, None, None, None]
    """
    try:
        score = float(answer.split(" ")[0].strip())
    except ValueError:
        return None
    return score if 0.0 <= score <= 1.0 else None


def capabilities(doc: dict[str, Any]) -> list[str]:
    """The document's capabilities: the hub dataset writes them comma-separated ("ocr,math"), MM-Vet's own
    mm-vet.json as a list.

    >>> capabilities({"capability": "ocr,math"}), capabilities({"capability": ["rec"]})
    (['ocr', 'math'], ['rec'])
    """
    value = doc["capability"]
    names = [name.strip() for name in (value.split(",") if isinstance(value, str) else value)]
    unknown = [name for name in names if name not in CAPABILITIES]
    if unknown or not names:
        raise ValueError(
            f"MM-Vet question {doc.get('question_id')!r}: capability {value!r} must name some of {list(CAPABILITIES)}"
        )
    return list(dict.fromkeys(names))


def process_results(doc: dict[str, Any], results: list[float]) -> dict[str, float]:
    """The judge's grade as `mmvet_score`, and as the score of each capability the question needs (the official
    capability columns average over the questions having that capability)."""
    score = float(results[0])
    return {"mmvet_score": score, **{f"mmvet_{name}": score for name in capabilities(doc)}}
