"""ActivityNet-QA (Yu et al., 2019): open questions on ActivityNet videos, answered in a word or phrase and
judged by a language model, as Video-ChatGPT's evaluate_activitynet_qa.py and lmms-eval's activitynetqa do:
the judge says whether the answer matches the ground truth ("yes"/"no") and scores it 0-5. Accuracy is
yes / (yes + no), the score the mean over all judged answers.
"""

import ast
from pathlib import Path
from typing import Any, Optional

POST_PROMPT = " Answer the question using a single word or phrase."
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv")

# The judge's system turn, verbatim (Video-ChatGPT, and lmms-eval's copy): note the missing spaces and newlines
# where its string pieces join.
JUDGE_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for question-answer pairs. "
    "Your task is to compare the predicted answer with the correct answer and determine if they match meaningfully. Here's how you can accomplish the task:"
    "------"
    "##INSTRUCTIONS: "
    "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer."
)
JUDGE_INSTRUCTION = (
    "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, with 5 indicating the highest meaningful match. "
    "Please generate the response in the form of a Python dictionary string with keys 'pred' and 'score', where value of 'pred' is  a string of 'yes' or 'no' and value of 'score' is in INTEGER, not STRING."
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
    "For example, your response should look like this: {'pred': 'yes', 'score': 4.8}."
)


def doc_to_visual(doc: dict[str, Any], kwargs: dict[str, Any]) -> list[str]:
    """`<video_dir>/all_test/v_<video_name>.mp4`, else .webm or .mkv where that exists (lmms-eval's order)."""
    base = Path(kwargs["video_dir"]) / "all_test" / f"v_{doc['video_name']}"
    for suffix in VIDEO_SUFFIXES:
        if base.with_name(base.name + suffix).is_file():
            return [str(base.with_name(base.name + suffix))]
    return [str(base.with_name(base.name + ".mp4"))]  # missing: the loader's error names it


def doc_to_text(doc: dict[str, Any], kwargs: Optional[dict[str, Any]] = None) -> str:
    """lmms-eval's prompt: the question capitalized (str.capitalize: the rest lowercased) with "?" added.

    >>> doc_to_text({"question": "what is the man in DC doing"}, {"post_prompt": POST_PROMPT})
    'What is the man in dc doing? Answer the question using a single word or phrase.'
    """
    kwargs = kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question'].capitalize()}?{kwargs.get('post_prompt', '')}"


def judge_prompt(doc: dict[str, Any], response: str) -> str:
    """The judge's user turn: the raw question, the ground truth and the model's answer, then the instruction."""
    return (
        "Please evaluate the following video-based question-answer pair:\n\n"
        f"Question: {doc['question']}\n"
        f"Correct Answer: {doc['answer']}\n"
        f"Predicted Answer: {response}\n\n" + JUDGE_INSTRUCTION
    )


def parse_judgement(answer: str) -> Optional[dict[str, Any]]:
    """{"pred": "yes"/"no"/other, "score": int} from the judge's answer, read as lmms-eval's parse_score: the text
    from the first "{" to the next "}" as a Python literal, its score through int() (4.8 -> 4), its pred "yes" if
    it contains yes, else "no" if it contains no (either case), else kept as written. None when unreadable.
    (Video-ChatGPT reads the whole answer as the literal and asks again on failure; lmms-eval's reading also
    takes a dictionary out of surrounding text.)

    >>> parse_judgement("{'pred': 'yes', 'score': 4.8}"), parse_judgement("Sure: {'pred': 'No', 'score': '2'}")
    ({'pred': 'yes', 'score': 4}, {'pred': 'no', 'score': 2})
    >>> parse_judgement("yes, 4"), parse_judgement("{'pred': 'yes'}")
    (None, None)
    """
    parts = answer.split("{")
    if len(parts) < 2:
        return None
    try:
        review = ast.literal_eval("{" + parts[1].split("}")[0] + "}")
        score = int(review["score"])
        pred = review["pred"]
        lowered = pred.lower()
    except (ValueError, SyntaxError, TypeError, KeyError, AttributeError, OverflowError, MemoryError, RecursionError):
        return None
    if "yes" in lowered:
        pred = "yes"
    elif "no" in lowered:
        pred = "no"
    return {"pred": pred, "score": score}


def process_results(doc: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, float]:
    """The judge's score as `activitynetqa_score`; its verdict as `activitynetqa_accuracy` (1.0 yes, 0.0 no), left
    out when it is neither, as the official accuracy counts yes and no only."""
    judged = results[0]
    out = {"activitynetqa_score": float(judged["score"])}
    if judged["pred"] in ("yes", "no"):
        out["activitynetqa_accuracy"] = float(judged["pred"] == "yes")
    return out
