"""A text model that fails on purpose, for the fail-fast, resume and bad-output tests."""

import os
import signal
import time
from typing import Any

from lmm_lightning.data.datamodule import RequestBatch
from lmm_lightning.models import HFCausalLM
from lmm_lightning.requests import Response


class FaultyLM(HFCausalLM):
    """`HFCausalLM` that, on rank `fail_rank`, raises or SIGKILLs itself at batch `fail_at_batch`.

    Its identity (class name aside, the same hyperparameters) is the plain model's, so a rerun with
    `HFCausalLM` resumes from its store.
    """

    def __init__(
        self, pretrained: str, fail_rank: int = -1, fail_at_batch: int = 0, mode: str = "raise", delay_s: float = 0.0
    ) -> None:
        super().__init__(pretrained=pretrained)
        self.fail_rank, self.fail_at_batch, self.mode, self.delay_s = fail_rank, fail_at_batch, mode, delay_s
        self.batches = 0

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "class": "HFCausalLM"}

    def predict_step(self, batch: RequestBatch, batch_idx: int = 0) -> list[Response]:
        time.sleep(self.delay_s)
        if self.global_rank == self.fail_rank and self.batches == self.fail_at_batch:
            if self.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.mode == "none_text":
                self.generate_until = lambda requests: [Response(uid=r.uid, text=None) for r in requests]
            else:
                raise RuntimeError("injected failure")
        self.batches += 1
        return super().predict_step(batch, batch_idx)
