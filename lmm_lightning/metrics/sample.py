"""Per-document metrics: each call scores one document (a float in [0, 1], a parsed answer, or
the per-document value a corpus aggregation needs).

Corpus-level aggregation lives in `aggregation.py` and `bootstrap.py`; keeping these functions
scalar and pure makes them trivial to test against hand-computed values.
"""

import re
import string
from collections.abc import Sequence

import numpy as np

_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)


def acc(logprobs: Sequence[float], gold: int) -> float:
    """1.0 if the highest-scoring choice is `gold`.

    Ties go to the first maximum (numpy argmax), so results match lm-evaluation-harness.

    >>> acc([-1.0, -0.5, -3.0], 1), acc([-0.5, -0.5], 1)
    (1.0, 0.0)
    """
    if len(logprobs) == 0:
        raise ValueError("acc needs at least one choice")
    return float(int(np.argmax(logprobs)) == gold)


def acc_norm(logprobs: Sequence[float], choices: Sequence[str], gold: int) -> float:
    """Like `acc`, but each log-probability is divided by its choice's length in characters.

    Summed log-probabilities favour short answers; dividing by the character length (the
    lm-evaluation-harness definition, tokenizer-independent) removes most of that bias.

    >>> acc_norm([-2.0, -3.0], ["ab", "abcdef"], 1)  # -3 / 6 beats -2 / 2
    1.0
    """
    if len(logprobs) != len(choices):
        raise ValueError(f"got {len(logprobs)} logprobs for {len(choices)} choices")
    lengths = np.array([len(c) for c in choices], dtype=np.float64)
    if len(lengths) == 0 or np.any(lengths == 0):
        raise ValueError("acc_norm needs at least one choice and no empty choices")
    return acc(np.asarray(logprobs, dtype=np.float64) / lengths, gold)


def _normalize(
    text: str, ignore_case: bool, ignore_punctuation: bool, ignore_regexes: Sequence[str]
) -> str:
    for pattern in ignore_regexes:
        text = re.sub(pattern, "", text)
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = text.translate(_PUNCTUATION_TABLE)
    return text


def exact_match(
    prediction: str,
    target: str | Sequence[str],
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
    ignore_regexes: tuple[str, ...] = (),
) -> float:
    """1.0 if the prediction equals the target (or any of several targets) after normalisation.

    Normalisation is applied identically to prediction and targets, in this order: remove each
    regex in `ignore_regexes`, lowercase, remove `string.punctuation`; whitespace is kept, as in
    lm-evaluation-harness's `exact_match` (generations are stripped before any metric sees them,
    see `tasks/postprocess.py`). Regexes run first so they can match the raw text.

    >>> exact_match("Paris.", "paris", ignore_case=True, ignore_punctuation=True), exact_match("Paris ", "Paris")
    (1.0, 0.0)
    """
    targets = [target] if isinstance(target, str) else list(target)
    options = (ignore_case, ignore_punctuation, ignore_regexes)
    pred = _normalize(prediction, *options)
    return float(any(pred == _normalize(t, *options) for t in targets))


# --- VQA v2 accuracy -------------------------------------------------------------------------
# Normalisation tables copied from the official VQA evaluation (GT-Vision-Lab/VQA vqaEval.py,
# also used by EvalAI), quirks included, so scores match the leaderboard to the last digit.

_VQA_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
_VQA_NUMBERS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_VQA_ARTICLES = ("a", "an", "the")
_VQA_PUNCTUATION = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)
# The official regex reads "(?!<=\d)", a typo for the look-behind "(?<!\d)"; as written it only
# requires that the period is not followed by a digit. Kept as is to reproduce official scores.
_VQA_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_VQA_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _vqa_punctuation(text: str) -> str:
    """Official `processPunctuation`: drop or space out punctuation, drop periods not before a digit."""
    out = text
    for p in _VQA_PUNCTUATION:
        if p + " " in text or " " + p in text or _VQA_COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The official code passes re.UNICODE (= 32) as the `count` argument: at most 32 periods go.
    return _VQA_PERIOD_STRIP.sub("", out, count=32)


def _vqa_digit_article(text: str) -> str:
    """Official `processDigitArticle`: lowercase, number words to digits, drop articles, fix contractions."""
    words = [_VQA_NUMBERS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _VQA_ARTICLES]
    return " ".join(_VQA_CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(text: str) -> str:
    """Normalise an answer as the official VQA evaluation does.

    >>> normalize_vqa_answer("Two dogs!")
    '2 dogs'
    """
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _vqa_digit_article(_vqa_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official VQA v2 accuracy: mean over leave-one-out annotator subsets of min(1, matches / 3).

    With 10 answers, each subset of 9 other annotators gives min(1, #matching / 3); an answer
    given by 3 or more annotators therefore scores 1.0, by 2 annotators 0.6, by 1 annotator 0.3.
    Fewer answers use the same leave-one-out, so a single answer always scores 0.0 (use
    `exact_match` for single-reference data).

    Deviation: the official code normalises (punctuation, digits, articles) only when the
    annotators disagree; here prediction and answers are always normalised. That is identical
    whenever the prediction is already in canonical form and avoids penalising "Yes." vs "yes".

    >>> vqa_accuracy("Two", ["2"] * 3 + ["3"] * 7)  # (3 * 2/3 + 7 * 1) / 10
    0.9
    """
    if len(answers) == 0:
        raise ValueError("vqa_accuracy needs at least one reference answer")
    pred = normalize_vqa_answer(prediction)
    matches = [normalize_vqa_answer(a) == pred for a in answers]
    total = sum(matches)
    return float(np.mean([min(1.0, (total - m) / 3.0) for m in matches]))


# --- TextVQA accuracy (EvalAI answer processor) -----------------------------------------------
# TextVQA is scored by EvalAI's answer processor, as facebookresearch/mmf has it
# (mmf/utils/m4c_evaluators.py `EvalAIAnswerProcessor`, `TextVQAAccuracyEvaluator`; lmms-eval's
# tasks/textvqa uses the same processor). Its tables are the VQA ones above; it differs from
# `normalize_vqa_answer` in a first "word_tokenize" step, and from the official VQA v2 code (which
# normalises only when the annotators disagree) in always normalising the prediction and answers.


def _evalai_word_tokenize(text: str) -> str:
    """EvalAI's `word_tokenize`: lowercase, drop every "," and "?", split "'s" off as " 's"."""
    return text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()


def normalize_textvqa_answer(text: str) -> str:
    """Normalise an answer as the TextVQA evaluation does (EvalAI's answer processor).

    Commas go before the punctuation step, so "1,234" reads "1234" and a comma never makes other
    punctuation vanish instead of turning into a space (as it does in VQA v2's processing).

    >>> normalize_textvqa_answer("Coca-Cola's"), normalize_textvqa_answer("1,234 Dollars?")
    ("coca cola 's", '1234 dollars')
    """
    text = _evalai_word_tokenize(text).replace("\n", " ").replace("\t", " ").strip()
    return _vqa_digit_article(_vqa_punctuation(text))


def textvqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """TextVQA accuracy: leave-one-out mean of min(1, matching other annotators / 3).

    Prediction and each of the (10) annotator answers go through `normalize_textvqa_answer`.
    The official evaluator asserts exactly 10 answers; any other non-zero number is averaged
    the same way here, as lmms-eval does.

    >>> textvqa_accuracy("Stop.", ["stop"] * 2 + ["stop sign"] * 8)
    0.6
    """
    if len(answers) == 0:
        raise ValueError("textvqa_accuracy needs at least one reference answer")
    pred = normalize_textvqa_answer(prediction)
    matches = [normalize_textvqa_answer(a) == pred for a in answers]
    total = sum(matches)
    # A plain left-to-right sum, as the official code, so the float is the same to the last bit.
    return sum(min(1.0, (total - m) / 3) for m in matches) / len(matches)


# --- ANLS (DocVQA) ---------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each).

    >>> levenshtein("kitten", "sitting")
    3
    """
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _anls_normalize(text: str) -> str:
    """The official script's preprocessing: lowercase, strip, collapse inner whitespace."""
    return " ".join(text.lower().split())


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity of one question (DocVQA, InfographicVQA).

    As the official DocVQA / InfographicVQA evaluation script (Robust Reading Competition,
    rrc.cvc.uab.es/?ch=17) computes it: the edit distance is taken between the lowercased,
    stripped, whitespace-collapsed strings, but divided by the longer of the *raw* strings'
    uppercase lengths, so "a  b" (two spaces) against "a c" costs 1 / 4, and "ß" (upper "SS")
    counts 2. Score: 1 - the smallest such ratio over the answers, set to 0.0 when below
    `threshold` (exactly 0.5 is kept). Two empty strings score 1.0. lmms-eval's `anls` is the same.

    >>> anls("Acme corp", ["ACME corp.", "Acme Corporation"])
    0.9
    >>> anls("helo   world", ["hello world"])  # 1 edit over the 12 raw characters, not 11
    0.9166666666666666
    """
    if len(answers) == 0:
        raise ValueError("anls needs at least one reference answer")
    pred = _anls_normalize(prediction)
    ratios = []
    for answer in answers:
        length = max(len(answer.upper()), len(prediction.upper()))
        ratios.append(0.0 if length == 0 else levenshtein(_anls_normalize(answer), pred) / length)
    score = 1 - min(ratios)
    return score if score >= threshold else 0.0


# --- ChartQA relaxed accuracy ----------------------------------------------------------------


def _chartqa_float(text: str) -> float | None:
    """A number as pix2struct reads one: Python's `float` (so " 12 ", "1e3", "1_000", "nan" and
    "１２" parse, "1,234" does not); a text ending in "%" loses all its trailing "%" and is / 100.

    >>> _chartqa_float("45%"), _chartqa_float(" 1e3 "), _chartqa_float("1,234")
    (0.45, 1000.0, None)
    """
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def _relaxed_correct(prediction: str, target: str, tolerance: float) -> bool:
    """pix2struct's `relaxed_correctness` for one target: within `tolerance` relative error when
    both are numbers and the target is a non-zero number, else case-insensitive string equality."""
    pred, gold = _chartqa_float(prediction), _chartqa_float(target)
    if pred is not None and gold:  # a target of 0 (falsy) falls back to comparing the strings
        return abs(pred - gold) / abs(gold) <= tolerance
    return prediction.lower() == target.lower()


def relaxed_accuracy(prediction: str, target: str | Sequence[str], tolerance: float = 0.05) -> float:
    """ChartQA relaxed accuracy, exactly as pix2struct's `relaxed_correctness` (google-research/
    pix2struct, pix2struct/metrics.py), best over several targets as its `aggregate_metrics`.

    Nothing is stripped or rewritten: "1,234" and "5kg" are strings, "45%" matches "0.45" but
    not "45", a target of "0" needs the exact string "0", and "nan" never matches (nan <= 0.05
    is false). lmms-eval's ChartQA copies the same function (with prediction first, as here).

    >>> relaxed_accuracy("10.5", "10"), relaxed_accuracy("0.0", "0"), relaxed_accuracy("Yes", "yes")
    (1.0, 0.0, 1.0)
    """
    targets = [target] if isinstance(target, str) else list(target)
    if len(targets) == 0:
        raise ValueError("relaxed_accuracy needs at least one target")
    return float(any(_relaxed_correct(prediction, t, tolerance) for t in targets))


# --- MMMU multiple-choice parsing ------------------------------------------------------------


def _last(candidates: list[int], positions: list[int]) -> int:
    """The candidate found furthest right; the first one on a tie (numpy argmax, as MMMU)."""
    return candidates[int(np.argmax(positions))]


def parse_multiple_choice(response: str, options: Sequence[str], letters: Sequence[str] | None = None) -> int:
    """Index of the option a free-form response picks, by MMMU's official rules; -1 when none.

    Follows `parse_multi_choice_response` (MMMU-Benchmark/MMMU, mmmu/utils/eval_utils.py):
    strip the characters , . ! ? ; : ' from both ends (one after the other), pad with a space,
    then the first rule with a hit decides: "(A)" anywhere; " A " as a word (case-sensitive,
    so "DNA", "A." inside a sentence and "a" are not read as A); then, only for responses of
    more than 5 words, an option's text anywhere (ignoring case). Several hits: the one found
    furthest right. lmms-eval's extra "A " and "A." rules are not applied.

    Departure: where MMMU picks `random.choice` of the letters, this returns -1 so the caller
    decides (the MMMU task scores it wrong by default, or draws a per-document seeded letter).

    >>> parse_multiple_choice("The answer is (B).", ["red", "blue"])
    1
    >>> parse_multiple_choice("B. blue", ["red", "blue"])  # no " B " and only 2 words
    -1
    """
    letters = [chr(ord("A") + i) for i in range(len(options))] if letters is None else list(letters)
    if len(letters) != len(options):
        raise ValueError(f"got {len(letters)} letters for {len(options)} options")
    for char in (",", ".", "!", "?", ";", ":", "'"):
        response = response.strip(char)
    text = f" {response} "  # spaces so " A " also matches at either end
    for pattern in ("({})", " {} "):
        found = [i for i, letter in enumerate(letters) if pattern.format(letter) in text]
        if found:
            return _last(found, [text.rfind(pattern.format(letters[i])) for i in found])
    if len(text.split()) > 5:
        lower = text.lower()
        found = [i for i, option in enumerate(options) if option.lower() in lower]
        if found:
            return _last(found, [lower.rfind(options[i].lower()) for i in found])
    return -1


# --- POPE yes/no parsing ---------------------------------------------------------------------


def yes_no(response: str) -> str:
    """Read a yes/no answer the way POPE's official evaluate.py (RUCAIBox/POPE) does.

    Keep the first sentence (up to the first "."), drop commas, split on single spaces; the
    answer is "no" if a word is exactly "No", "no" or "not", else "yes". So "Nope", "NO",
    "No!" and an empty answer read as "yes", exactly as in the script behind the published
    POPE numbers.

    >>> [yes_no(r) for r in ("No, there is not.", "There is no dog.", "Nope", "NO", "Yes. No.")]
    ['no', 'no', 'yes', 'yes', 'yes']
    """
    text = response.split(".")[0].replace(",", "")
    words = text.split(" ")
    return "no" if "No" in words or "no" in words or "not" in words else "yes"


# --- Per-document values for corpus perplexities ---------------------------------------------
# Each is (log-likelihood, units) of one document; the corpus aggregation (`weighted_perplexity`,
# `bits_per_byte`) divides the summed log-likelihoods by the summed units, as lm-evaluation-harness does.


def perplexity(logprob: float, text: str) -> float:
    """The document's log-likelihood, as lm-evaluation-harness keeps it per document: the `perplexity`
    aggregation over these is exp(-mean log-likelihood) (lambada_openai's YAML names both).

    >>> perplexity(-2.5, "any text")
    -2.5
    """
    return float(logprob)


def word_perplexity(logprob: float, text: str) -> tuple[float, int]:
    """(log-likelihood, word count) of one document, for the `weighted_perplexity` aggregation.

    Words are counted like lm-evaluation-harness: `len(re.split(r"\\s+", text))`, so leading or
    trailing whitespace counts one more (empty) word.

    >>> word_perplexity(-3.0, "a b  c"), word_perplexity(-3.0, " a b")
    ((-3.0, 3), (-3.0, 3))
    """
    return float(logprob), len(re.split(r"\s+", text))


def byte_perplexity(logprob: float, text: str) -> tuple[float, int]:
    """(log-likelihood, UTF-8 byte count) of one document, for `weighted_perplexity`.

    >>> byte_perplexity(-2.0, "héllo")
    (-2.0, 6)
    """
    return float(logprob), len(text.encode("utf-8"))


def bits_per_byte(logprob: float, text: str) -> tuple[float, int]:
    """(log-likelihood, UTF-8 byte count) of one document, for the `bits_per_byte` aggregation.

    >>> bits_per_byte(-2.0, "héllo")
    (-2.0, 6)
    """
    return float(logprob), len(text.encode("utf-8"))
