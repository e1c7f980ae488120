"""`loglikelihood_rolling`: the log-probability of a whole text, for perplexity tasks such as wikitext.

As in lm-evaluation-harness, a document is one request holding its `doc_to_target` text and nothing else:
no prompt, no few-shot examples (`num_fewshot` is ignored, as lm-evaluation-harness ignores it here). The
model scores the text in windows of its context and answers the sum (`HFCausalLM.loglikelihood_rolling`);
the metrics pair it with the text's words or bytes, and the corpus score divides the summed
log-likelihoods by the summed units (`weighted_perplexity`, `bits_per_byte`).
"""

from typing import Any

from lmm_lightning.requests import Request, RequestType, Response
from lmm_lightning.tasks.output_types import OutputKind


class Rolling(OutputKind):
    """One request per document: its whole text, scored as `(log-likelihood, words or bytes)` pairs."""

    output_type = "loglikelihood_rolling"
    default_metrics = ("word_perplexity", "byte_perplexity", "bits_per_byte")

    def requests(self, doc_id: int, doc: dict[str, Any], first_uid: int) -> list[Request]:
        text = self.target(doc).text
        return [self._request(doc_id, first_uid, request_type=RequestType.LOGLIKELIHOOD_ROLLING, context="", continuation=text)]

    def filtered(self, responses: list[Response]) -> dict[str, Any]:
        """The text's log-likelihood, as a list of one, which is what a `process_results` gets (lm-eval's `results`)."""
        return {"none": [r.logprob for r in responses]}

    def score(self, doc: dict[str, Any], value: Any) -> dict[str, Any]:
        (logprob,) = value
        text = self.target(doc).text
        return {m.metric: self._metric(m.metric)(logprob, text) for m in self.task.metrics}

    def describe(self, record: dict[str, Any]) -> tuple[str, str]:
        """The text's log-likelihood, and the text."""
        filtered = record.get("filtered_resps") or [float("nan")]
        return f"logprob {filtered[0]:.4f}", str(record.get("target"))
