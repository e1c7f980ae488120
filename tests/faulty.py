"""A text model that fails on purpose, for the fail-fast, hang, signal, resume and bad-output tests.

Also task helpers that misbehave the same way on purpose: a process_results that raises, and a choice
or row order that differs between processes.
"""

import os
import signal
import time
from typing import Any, Optional

import datasets

from lmm_lightning.data.datamodule import RequestBatch
from lmm_lightning.models import HFCausalLM
from lmm_lightning.requests import Request, Response

# Modes acted on at batch `fail_at_batch` of rank `fail_rank`:
#   raise, kill (SIGKILL), exit (os._exit(0) without a word), none_text (a non-string generation),
#   sleep / loop (a forward that hangs, asleep or busy, for `hang_s`), stop (SIGSTOP), sigterm (SIGTERM to itself),
#   sigterm_parent (after 3 s, SIGTERM to the process that launched it, then hang for `hang_s`).
# Modes acted on outside the batches, on rank `fail_rank`:
#   stall_load (configure_model sleeps `hang_s`), stall_gather / kill_gather (after the last batch, before the
#   final gather: sleep `hang_s`, or SIGKILL).
# `load_s` slows every rank's model load; `delay_s` every rank's batches; `slow_rank_s` only `fail_rank`'s.
# `nonfinite` maps "doc_id:choice_index" to a log-prob to return instead ("nan", "-inf", "inf").


class FaultyLM(HFCausalLM):
    """`HFCausalLM` that misbehaves on rank `fail_rank` as `mode` says.

    Its identity (class name aside, the same hyperparameters) is the plain model's, so a rerun with
    `HFCausalLM` resumes from its store.
    """

    def __init__(
        self,
        pretrained: str,
        fail_rank: int = -1,
        fail_at_batch: int = 0,
        mode: str = "raise",
        delay_s: float = 0.0,
        hang_s: float = 120.0,
        load_s: float = 0.0,
        slow_rank_s: float = 0.0,
        nonfinite: Optional[dict[str, str]] = None,
    ) -> None:
        super().__init__(pretrained=pretrained)
        self.fail_rank, self.fail_at_batch, self.mode, self.delay_s = fail_rank, fail_at_batch, mode, delay_s
        self.hang_s, self.load_s, self.slow_rank_s = hang_s, load_s, slow_rank_s
        self.nonfinite = {key: float(value) for key, value in (nonfinite or {}).items()}
        self.batches = 0

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "class": "HFCausalLM"}

    @property
    def failing(self) -> bool:
        return self.global_rank == self.fail_rank

    def configure_model(self) -> None:
        time.sleep(self.load_s)
        if self.failing and self.mode == "stall_load":
            time.sleep(self.hang_s)
        super().configure_model()

    def predict_step(self, batch: RequestBatch, batch_idx: int = 0) -> list[Response]:
        time.sleep(self.delay_s + (self.slow_rank_s if self.failing else 0.0))
        if self.failing and self.batches == self.fail_at_batch:
            self.misbehave()
        self.batches += 1
        return super().predict_step(batch, batch_idx)

    def misbehave(self) -> None:
        if self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif self.mode == "exit":
            os._exit(0)
        elif self.mode == "sleep":
            time.sleep(self.hang_s)
        elif self.mode == "loop":
            end = time.monotonic() + self.hang_s
            while time.monotonic() < end:
                pass
        elif self.mode == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        elif self.mode == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        elif self.mode == "sigterm_parent":
            time.sleep(3.0)  # the parent (rank 0) is waiting in a collective by then
            os.kill(os.getppid(), signal.SIGTERM)
            time.sleep(self.hang_s)
        elif self.mode == "none_text":
            self.generate_until = lambda requests: [Response(uid=r.uid, text=None) for r in requests]
        elif self.mode == "raise":
            raise RuntimeError("injected failure")

    def on_predict_epoch_end(self) -> None:
        """After the last batch, before the callback's final gather."""
        if self.failing and self.mode == "stall_gather":
            time.sleep(self.hang_s)
        if self.failing and self.mode == "kill_gather":
            os.kill(os.getpid(), signal.SIGKILL)

    def loglikelihood(self, requests: list[Request]) -> list[Response]:
        responses = super().loglikelihood(requests)
        for request, response in zip(requests, responses):
            value = self.nonfinite.get(f"{request.doc_id}:{request.choice_index}")
            if value is not None:
                response.logprob, response.is_greedy = value, False
        return responses


def raising_process_results(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    """A task's process_results with a bug that shows on one document only (Italy, doc_id 3)."""
    if doc["country"] == "Italy":
        return {"acc": 1 / 0}
    return {"acc": float(results[0].strip() == doc["capital"])}


def rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def choices_by_rank(doc: dict[str, Any]) -> list[str]:
    """doc_to_choice whose order depends on the process for one document (Italy, doc_id 3)."""
    choices = list(doc["choices"])
    return choices[::-1] if doc["country"] == "Italy" and rank() == 1 else choices


def rows_by_rank(split: str) -> datasets.Dataset:
    """A dataset loader whose rows 5 and 6 come in another order on rank 1 (a nondeterministic reader)."""
    rows = datasets.load_dataset("json", data_files=os.environ["FAULTY_DOCS"], split="train").to_list()
    if rank() == 1:
        rows[5], rows[6] = rows[6], rows[5]
    return datasets.Dataset.from_list(rows)
