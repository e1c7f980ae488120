"""EvalModule: a LightningModule that answers typed requests in `predict_step`."""

import gc
import hashlib
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from lightning.pytorch import LightningModule

from lmm_lightning.data.datamodule import RequestBatch
from lmm_lightning.data.video import FrameSampling
from lmm_lightning.errors import InputError
from lmm_lightning.models.precision import module_precision, precision_identity
from lmm_lightning.requests import Request, RequestType, Response


class InvalidResponse(InputError):
    """A model returned something that is not an answer to its request."""


def check_response(model: Any, request: Request, response: Response) -> None:
    """Refuse a response that cannot be scored, naming the model, task and document."""
    where = f"{type(model).__name__} on task '{request.task}', doc_id {request.doc_id}"
    if response.uid != request.uid:
        raise InvalidResponse(f"{where}: response for request {response.uid} returned in place of request {request.uid}")
    if request.request_type is RequestType.GENERATE_UNTIL and not isinstance(response.text, str):
        raise InvalidResponse(f"{where}: generation must be a string, got {type(response.text).__name__}")
    if request.request_type.scores_logprob and not isinstance(response.logprob, float):
        raise InvalidResponse(f"{where}: loglikelihood must be a float, got {type(response.logprob).__name__}")


def check_responses(model: Any, requests: list[Request], responses: list[Response]) -> list[Response]:
    """`responses`, once each is checked to answer its request (one response per request, in order)."""
    if len(responses) != len(requests):
        raise RuntimeError(f"{type(model).__name__} returned {len(responses)} responses for {len(requests)} requests")
    for request, response in zip(requests, responses):
        check_response(model, request, response)
    return responses


class EvalModule(LightningModule):
    """Base class of every evaluated model. Subclasses implement the two request types."""

    # Set by the evaluation callback for the batch being answered: takes (position in the batch, answer).
    answer_sink: Optional[Callable[[int, Response], None]] = None

    def answered(self, index: int, response: Response) -> None:
        """Hand one answer to the run the moment it exists, before the batch ends: a served model calls it
        as each request returns, so an interrupted run has stored every request it paid for."""
        if self.answer_sink is not None:
            self.answer_sink(index, response)

    def frame_sampling(self) -> Optional[FrameSampling]:
        """The frames this model wants from each video (`data.video_frames: model`); None: no preference."""
        return None

    def loglikelihood(self, requests: list[Request]) -> list[Response]:
        """Log-probability of each continuation given its context, and whether it is the greedy one."""
        raise NotImplementedError(f"{type(self).__name__} does not answer loglikelihood requests")

    def generate_until(self, requests: list[Request]) -> list[Response]:
        """Continuation of each context (greedy unless its request samples), cut at the first stop string."""
        raise NotImplementedError(f"{type(self).__name__} does not answer generate_until requests")

    def loglikelihood_rolling(self, requests: list[Request]) -> list[Response]:
        """Log-probability of each request's whole text, scored in windows of the model's context."""
        raise NotImplementedError(f"{type(self).__name__} does not answer loglikelihood_rolling requests")

    def answer(self, batch: RequestBatch) -> list[Response]:
        """Dispatch a batch by request type; vision models override this to pass the batch's images."""
        if batch.request_type is RequestType.LOGLIKELIHOOD:
            return self.loglikelihood(batch.requests)
        if batch.request_type is RequestType.LOGLIKELIHOOD_ROLLING:
            return self.loglikelihood_rolling(batch.requests)
        return self.generate_until(batch.requests)

    def predict_step(self, batch: RequestBatch, batch_idx: int = 0) -> list[Response]:
        return check_responses(self, batch.requests, self.answer(batch))

    @property
    def synced_generation(self) -> bool:
        """Under FSDP every rank must take part in every decoding step (its shards are needed by
        the others), so `generate` keeps going until all ranks are done (`synced_gpus`)."""
        trainer = self._trainer
        if trainer is None or trainer.world_size < 2:
            return False
        from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

        return isinstance(trainer.strategy, (FSDPStrategy, ModelParallelStrategy))

    def synced_count(self, count: int) -> int:
        """`count` (e.g. of forwards) where ranks run alone; under FSDP the largest count over the ranks, so
        every rank runs as many forwards and none waits for a parameter gather that never comes."""
        if not self.synced_generation:
            return count
        largest = torch.tensor(count, device=self.device)
        torch.distributed.all_reduce(largest, op=torch.distributed.ReduceOp.MAX)
        return int(largest.item())

    def probe(self, batch_size: int, seq_len: int) -> None:
        """Run one forward of `batch_size` sequences of `seq_len` tokens (used to find the largest batch)."""
        raise NotImplementedError(f"{type(self).__name__} cannot probe memory; give data.batch_size as a number")

    def sequence_length(self, request: Request) -> int:
        """Tokens one request occupies (context, continuation and the generation budget)."""
        raise NotImplementedError(f"{type(self).__name__} cannot measure requests; give data.batch_size as a number")

    def find_max_batch_size(self, request: Request, limit: int) -> int:
        """The largest power-of-two batch (at most `limit`) of the longest request that fits in memory on
        every rank. The ranks agree after each probe (`fits_everywhere`), so one that runs out of memory
        stops every rank's search at the same size, and all of them probe as many times."""
        seq_len = self.sequence_length(request)
        best, size = 0, 1
        while size <= limit and self.fits_everywhere(size, seq_len):
            best, size = size, size * 2
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if best == 0:
            raise InputError(f"{type(self).__name__}: even a batch of 1 request of {seq_len} tokens runs out of memory")
        return best

    def fits_everywhere(self, batch_size: int, seq_len: int) -> bool:
        """Whether a probe of `batch_size` sequences ran out of memory on no rank (one all-reduce)."""
        try:
            self.through_strategy("probe", batch_size, seq_len)
            fits = 1
        except torch.OutOfMemoryError:
            fits = 0
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return bool(fits)
        agreed = torch.tensor(fits, device=self._trainer.strategy.root_device if self._trainer else self.device)
        torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN)
        return bool(agreed.item())

    def through_strategy(self, method: str, *args: Any) -> Any:
        """`self.<method>(*args)` run through the strategy's wrapper of this module where it has one (FSDP),
        as Lightning runs `predict_step`: the root's shards are gathered only inside the wrapper's forward."""
        trainer = self._trainer
        wrapper = trainer.strategy.model if trainer is not None else None
        if wrapper is None or wrapper is self:
            return getattr(self, method)(*args)
        return trainer.strategy._forward_redirection(wrapper, self, method, *args)

    def set_model(self, model: torch.nn.Module, placed: bool = False) -> None:
        """Hold the loaded model. A model `placed` by `device_map` is kept out of the module tree, so the
        strategy's move of this module onto its root device leaves the model where `accelerate` put it."""
        if placed:
            self._modules.pop("model", None)
            self.__dict__["model"] = model
        else:
            self.model = model

    def release(self) -> int:
        """Free the model's memory once inference is over, so post-processing (a judge model) has room.
        The next `configure_model` loads it again. Under FSDP the strategy's wrapper holds the shards, so
        they are freed there too, and rank 0 says how much; returns the bytes of shards this rank freed."""
        from lmm_lightning.models.sharding import release_shards

        trainer = self._trainer
        freed = release_shards(trainer.strategy.model) if trainer is not None else 0
        if freed and trainer.is_global_zero:
            print(f"released the model: {freed / 2**20:.1f} MiB of sharded parameters freed on rank 0", flush=True)
        for name in ("model", "processor", "tokenizer"):
            if getattr(self, name, None) is not None:
                setattr(self, name, None)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return freed

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Requests are text; each model moves its own tensors."""
        return batch

    def identity(self) -> dict[str, Any]:
        """What identifies this model in the response store: its class and hyperparameters. Models
        loaded from files add a fingerprint of them (`folder_fingerprint`), so new weights under the
        same path are never served the old answers. A trainer precision other than "32-true" adds itself
        and the dtype it computes in (`precision_identity`), so a bf16-mixed rerun recomputes fp32 answers."""
        identity = {"class": type(self).__name__, **{k: v for k, v in self.hparams.items()}}
        return {**identity, **precision_identity(*module_precision(self))}


_SAMPLE_BYTES = 1 << 16


def _sampled_digest(path: Path, size: int) -> str:
    """sha256 of the file's first, middle and last 64 KiB (the whole file when smaller): cheap on
    100 GB checkpoints, and it sees new values written over a file of the same size."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for start in sorted({0, max(size // 2 - _SAMPLE_BYTES // 2, 0), max(size - _SAMPLE_BYTES, 0)}):
            handle.seek(start)
            digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()[:16]


def folder_fingerprint(folder: str) -> list[list[Any]]:
    """Name, size, modification time and sampled content digest of every file a checkpoint folder
    offers `from_pretrained` (its top level; hidden files aside). Any new weights, config or tokenizer
    file changes it."""
    out = []
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        stat = path.stat()
        out.append([path.name, stat.st_size, stat.st_mtime_ns, _sampled_digest(path, stat.st_size)])
    return out
