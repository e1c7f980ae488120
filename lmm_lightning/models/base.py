"""EvalModule: a LightningModule that answers typed requests in `predict_step`."""

from typing import Any

import torch
from lightning.pytorch import LightningModule

from lmm_lightning.data.datamodule import RequestBatch
from lmm_lightning.requests import Request, RequestType, Response


class EvalModule(LightningModule):
    """Base class of every evaluated model. Subclasses implement the two request types."""

    def loglikelihood(self, requests: list[Request]) -> list[Response]:
        """Log-probability of each continuation given its context, and whether it is the greedy one."""
        raise NotImplementedError(f"{type(self).__name__} does not answer loglikelihood requests")

    def generate_until(self, requests: list[Request]) -> list[Response]:
        """Greedy continuation of each context, cut at the first stop string."""
        raise NotImplementedError(f"{type(self).__name__} does not answer generate_until requests")

    def predict_step(self, batch: RequestBatch, batch_idx: int = 0) -> list[Response]:
        if batch.request_type is RequestType.LOGLIKELIHOOD:
            responses = self.loglikelihood(batch.requests)
        else:
            responses = self.generate_until(batch.requests)
        if len(responses) != len(batch.requests):
            raise RuntimeError(f"{type(self).__name__} returned {len(responses)} responses for {len(batch.requests)} requests")
        return responses

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Requests are text; each model moves its own tensors."""
        return batch

    def identity(self) -> dict[str, Any]:
        """What identifies this model in results (and, later, in the response store)."""
        return {"class": type(self).__name__, **{k: v for k, v in self.hparams.items()}}
