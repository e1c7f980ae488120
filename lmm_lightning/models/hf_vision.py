"""A Hugging Face image-text model (LLaVA, Qwen2-VL, ...) as an EvalModule."""

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForImageTextToText, AutoProcessor

from lmm_lightning.data.datamodule import RequestBatch
from lmm_lightning.data.video import FrameSampling, Video
from lmm_lightning.errors import InputError
from lmm_lightning.models.base import EvalModule
from lmm_lightning.models.generation import generate, prompt_budget, uses_own_loop
from lmm_lightning.models.loading import (
    attention_identity, check_device_map, check_pretrained, fill_pad_token, pretrained_options, resolve_adapter, source_identity, torch_dtype,
    with_adapter,
)
from lmm_lightning.models.loglikelihood import Scored, as_responses, score_continuation, score_shared_contexts, split_context
from lmm_lightning.models.precision import float32_head
from lmm_lightning.models.prefix import run_prefix_inputs, share_prefixes
from lmm_lightning.models.sharded_loading import load_pretrained
from lmm_lightning.models.tensor_parallel import parallelize_for
from lmm_lightning.requests import Request, RequestType, Response

Row = dict[str, torch.Tensor]
VIDEO_INPUTS = ("auto", "video", "frames")


def to_rgb(image: Any) -> Any:
    """PNGs decode as RGBA or palette images; vision towers expect three channels."""
    return image.convert("RGB") if hasattr(image, "convert") and getattr(image, "mode", "RGB") != "RGB" else image


class MixedVideoShapes(ValueError):
    """A batch whose per-video tensors (one stack of frames per video) differ in shape and cannot be concatenated."""


def video_shapes(visuals: list[Any]) -> tuple:
    """What must agree for stacked videos to batch: each video's frame count and frame size."""
    return tuple((len(v.frames), v.frames[0].size if v.frames else None) for v in visuals if isinstance(v, Video))


def video_array(video: Video) -> np.ndarray:
    """A decoded video as video processors take one: its frames stacked, (frames, height, width, 3) uint8 RGB."""
    return np.stack([np.asarray(to_rgb(frame)) for frame in video.frames])


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def check_tokenizer_files(path: str, trust_remote_code: bool) -> None:
    """The processor needs a tokenizer; remote code may keep its vocabulary under any name."""
    if not trust_remote_code and not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"model.pretrained: {path} has no tokenizer; expected one of {list(TOKENIZER_FILES)}")


# Models whose positions are not a plain 1-D count (multimodal rotary positions): their contexts are
# not reused, every choice runs its own forward.
SEPARATE_CONTEXT_MODELS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
# Models that decode in `generation.decode` (one-dimensional positions, images with the prompt only); the others,
# whose positions or per-token inputs follow their own rules, decode with transformers' `generate`.
OWN_LOOP_MODELS = ("llava", "llava_next", "llava_onevision", "llava_next_video")


class HFVisionLM(EvalModule):
    """`AutoModelForImageTextToText` and its `AutoProcessor` from a local folder or a Hugging Face hub id.

    Each request carries zero, one or several images (the batch's `visuals`). The prompt is the
    processor's chat template (an image entry per image, then the text) when the model has one,
    else the processor's image token once per image followed by the text.

    Args:
        pretrained: a local model folder, or a hub id found in the Hugging Face cache (HF_HUB_CACHE, HF_HOME
            or ~/.cache/huggingface/hub; downloaded there unless HF_HUB_OFFLINE=1).
        revision: a branch, tag or commit of the hub id; the commit it resolves to is part of the identity.
        dtype: float32, bfloat16 or float16.
        peft: a PEFT adapter (a folder or a hub id) loaded on top and merged when the adapter type allows.
        device_map: passed to `from_pretrained` (e.g. "auto"): one copy spread over the GPUs of a single
            process; Lightning leaves it where `accelerate` placed it. Needs trainer.devices 1.
        attn_implementation: e.g. "sdpa", "eager" or "flash_attention_2"; the model's default if unset.
        trust_remote_code: passed to `from_pretrained`.
        use_chat_template: wrap each context in the processor's chat template when it has one.
        system_prompt: a system turn before each context (a plain line when there is no chat template).
        max_length: context window; defaults to the language model's `max_position_embeddings`.
        video_input: how a video reaches the model: "video" through the processor's `videos=` (Qwen2-VL /
            Qwen2.5-VL, LLaVA-OneVision, LLaVA-Video: a video entry in the chat template, the model's own video
            tokens), "frames" as that many images (any image model), "auto" (default): "video" when the processor
            has a video processor, else "frames".
        share_prefix: generation prompts on the same images that share their first tokens (the image and the
            prompt around it: POPE's questions on one picture) run that prefix once, the image through the vision
            tower once, its keys/values reused by each question (LLaVA-style models, whose positions are a plain
            count; off under FSDP).
    """

    def __init__(
        self,
        pretrained: str,
        dtype: str = "float32",
        attn_implementation: Optional[str] = None,
        trust_remote_code: bool = False,
        use_chat_template: bool = True,
        system_prompt: Optional[str] = None,
        max_length: Optional[int] = None,
        reuse_context: bool = True,
        revision: Optional[str] = None,
        peft: Optional[str] = None,
        device_map: Union[str, dict, None] = None,
        video_input: str = "auto",
        share_prefix: bool = True,
    ) -> None:
        super().__init__()
        if video_input not in VIDEO_INPUTS:
            raise InputError(f"model.video_input: expected one of {list(VIDEO_INPUTS)}, got {video_input!r}")
        self.save_hyperparameters()
        self.source = check_pretrained(self.hparams)  # resolved once: every later load reads the same files
        self.adapter = resolve_adapter(peft)
        check_tokenizer_files(self.source.path, trust_remote_code)  # before any weights load
        self.model: Optional[torch.nn.Module] = None
        self.processor: Any = None

    def configure_model(self) -> None:
        """Load inside `configure_model` so sharded strategies can build the model in place."""
        if self.model is not None:
            return
        check_device_map(self.hparams.device_map, self._trainer.world_size if self._trainer is not None else 1)
        path, options = pretrained_options(self.hparams, self.source)
        self.processor = self.load_processor(path)
        if not hasattr(self.processor, "tokenizer"):
            raise InputError(f"model.pretrained: the processor in {path} has no tokenizer; is this an image-text model?")
        fill_pad_token(self.tokenizer)
        model = with_adapter(load_pretrained(self._trainer, AutoModelForImageTextToText, path, options, self.adapter), self.adapter)
        model = parallelize_for(self._trainer, model)  # tensor parallel: split by the model's own plan
        model = float32_head(model)  # float32 logits whatever the model's dtype
        self.set_model(model.eval(), placed=self.hparams.device_map is not None)

    def load_processor(self, path: str) -> Any:
        """The model folder's processor (tokenizer, image and video processors, chat template)."""
        return AutoProcessor.from_pretrained(path, trust_remote_code=self.hparams.trust_remote_code)

    def identity(self) -> dict[str, Any]:
        """Hyperparameters, precision and the files evaluated (folder, hub commit, adapter): other weights, other
        identity. SDPA standing in for a flash attention kernel this machine cannot run is named too."""
        source = source_identity(self.source, self.adapter)
        return {**super().identity(), "source": source, **attention_identity(self.hparams.attn_implementation)}

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def max_length(self) -> int:
        if self.hparams.max_length:
            return self.hparams.max_length
        config = self.model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        return int(getattr(text_config, "max_position_embeddings", 2048))

    @property
    def takes_videos(self) -> bool:
        """Whether videos go through the processor's `videos=` (else each frame is an image)."""
        if self.hparams.video_input == "auto":
            return getattr(self.processor, "video_processor", None) is not None
        return self.hparams.video_input == "video"

    def frame_sampling(self) -> Optional[FrameSampling]:
        """The video processor's own choice of frames (`num_frames`, else `fps` capped by `max_frames`), for
        `data.video_frames: model`; None when it has none or videos go in as frames."""
        video = getattr(self.processor, "video_processor", None)
        if video is None or not self.takes_videos:
            return None
        if getattr(video, "num_frames", None):
            return FrameSampling(count=int(video.num_frames))
        if getattr(video, "fps", None):
            return FrameSampling(count=None, fps=float(video.fps), max_frames=getattr(video, "max_frames", None))
        return None

    def media(self, visuals: list[Any]) -> tuple[list[Any], list[Video]]:
        """A request's images and videos as the model takes them: a decoded `Video` stays a video for a model that
        takes videos and becomes its frames (as images, in order) for one that does not."""
        images: list[Any] = []
        videos: list[Video] = []
        for item in visuals:
            if not isinstance(item, Video):
                images.append(item)
            elif self.takes_videos:
                videos.append(item)
            else:
                images.extend(item.frames)
        return images, videos

    @property
    def chat(self) -> bool:
        return bool(self.hparams.use_chat_template and getattr(self.processor, "chat_template", None))

    # --- prompts and tensors ------------------------------------------------------------------
    @staticmethod
    def single_turn(request: Request) -> str:
        """The request's context as one user turn (a description included); few-shot examples as chat turns
        (`fewshot_as_multiturn`) are the text model's."""
        if any(m.role == "assistant" for m in request.messages):
            raise InputError(
                f"task '{request.task}', doc_id {request.doc_id}: data.fewshot_as_multiturn is supported by HFCausalLM, "
                "not by the vision model; set it to false"
            )
        return request.context

    def prompt(self, context: str, n_images: int, n_videos: int = 0) -> str:
        """The text the processor sees: the chat template, or image (and video) tokens then the context."""
        system = self.hparams.system_prompt
        if self.chat:
            visuals = [{"type": "image"} for _ in range(n_images)] + [{"type": "video"} for _ in range(n_videos)]
            content = visuals + [{"type": "text", "text": context}]
            messages = [{"role": "user", "content": content}]
            if system:
                messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        image_token = getattr(self.processor, "image_token", None)
        if n_images and not image_token:
            raise InputError(
                f"{type(self.processor).__name__} has no chat template and no `image_token`, so images cannot be placed"
                " in the prompt; use a model folder whose processor defines one of them"
            )
        video_token = getattr(self.processor, "video_token", None)
        if n_videos and not video_token:
            raise InputError(
                f"{type(self.processor).__name__} has no chat template and no `video_token`, so videos cannot be placed"
                " in the prompt; set model.video_input frames, or use a model folder whose processor defines one"
            )
        images = (image_token + "\n") * n_images  # a separator keeps adjacent images apart (Qwen2-VL needs it)
        videos = (video_token + "\n") * n_videos if n_videos else ""
        return (system + "\n" if system else "") + images + videos + context

    def encode(self, text: str, images: list[Any], videos: Optional[list[Video]] = None) -> Row:
        """One row: token tensors of shape (1, length) plus the image and video tensors (pixel values, grids, ...).
        A video goes in as its frames stacked (frames, height, width, 3), already sampled (`data.video_frames`)."""
        if not text:
            text = self.tokenizer.bos_token or self.tokenizer.eos_token  # the first token needs something to follow
        extra = {"videos": [video_array(video) for video in videos]} if videos else {}
        features = self.processor(
            text=[text],
            images=[to_rgb(image) for image in images] or None,
            add_special_tokens=not self.chat,  # a chat template writes its own special tokens
            return_tensors="pt",
            **extra,
        )
        return {key: value for key, value in features.items() if isinstance(value, torch.Tensor)}

    def collate(self, rows: list[Row], padding_side: str) -> Row:
        """Pad the per-token tensors to one width; concatenate the image tensors in row order, which is
        the order in which the model fills its image tokens."""
        width = max(row["input_ids"].shape[1] for row in rows)
        keys = list(dict.fromkeys(key for row in rows for key in row))
        inputs: Row = {}
        for key in keys:
            present = [row for row in rows if key in row]
            if all(self._per_token(row, key) for row in present):
                fill = self.tokenizer.pad_token_id if key == "input_ids" else 0
                values = [row[key] if key in row else torch.zeros_like(row["input_ids"]) for row in rows]
                inputs[key] = torch.cat([F.pad(v, _pad_spec(v, width, padding_side), value=fill) for v in values])
            else:
                if len({row[key].shape[1:] for row in present}) > 1:
                    raise MixedVideoShapes(key)
                inputs[key] = torch.cat([row[key] for row in present])
        return inputs

    @staticmethod
    def _per_token(row: Row, key: str) -> bool:
        value, ids = row[key], row["input_ids"]
        return key == "input_ids" or (value.dim() >= 2 and value.shape[:2] == ids.shape)

    def to_model(self, inputs: Row) -> Row:
        """Move model inputs to the model's device, pixel values in the model's dtype."""
        dtype = torch_dtype(self.hparams.dtype)
        return {k: v.to(self.device, dtype=dtype) if v.is_floating_point() else v.to(self.device) for k, v in inputs.items()}

    def answer(self, batch: RequestBatch) -> list[Response]:
        """As `EvalModule.answer`, with each request's images passed along."""
        if batch.request_type is RequestType.LOGLIKELIHOOD_ROLLING:
            first = batch.requests[0]
            raise InputError(
                f"{type(self).__name__} on task '{first.task}', doc_id {first.doc_id}: loglikelihood_rolling (perplexity) "
                "is scored by text models only; evaluate this task with model.class_path lmm_lightning.models.HFCausalLM"
            )
        visuals = batch.visuals or [[] for _ in batch.requests]
        answer = self.loglikelihood if batch.request_type is RequestType.LOGLIKELIHOOD else self.generate_until
        try:
            return answer(batch.requests, visuals)
        except MixedVideoShapes as err:
            if self.synced_generation:  # every rank must run as many forwards: no splitting a batch on one rank alone
                raise InputError(
                    f"{type(self.processor).__name__} stacks each video's frames ({err}), and one batch holds videos of "
                    "different frame counts or sizes (a video shorter than data.video_frames); under FSDP set "
                    "data.batch_size 1 or fewer data.video_frames"
                ) from None
        # A processor that stacks a video's frames (LLaVA-OneVision) cannot batch videos of different frame counts or
        # sizes (a video shorter than the frames asked): each group of alike videos is answered on its own.
        groups: dict[tuple, list[int]] = {}
        for i, visual in enumerate(visuals):
            groups.setdefault(video_shapes(visual), []).append(i)
        answers: dict[int, Response] = {}
        for members in groups.values():
            got = answer([batch.requests[i] for i in members], [visuals[i] for i in members])
            answers.update(zip(members, got))
        return [answers[i] for i in range(len(batch.requests))]

    # --- requests -----------------------------------------------------------------------------
    @torch.no_grad()
    def loglikelihood(self, requests: list[Request], visuals: Optional[list[list[Any]]] = None) -> list[Response]:
        """Continuation tokens are those of prompt+continuation after the prompt's own tokens."""
        visuals = visuals or [[] for _ in requests]
        encoded = self._encode(requests, visuals)
        scored = None
        shared = self.hparams.reuse_context and self.model.config.model_type not in SEPARATE_CONTEXT_MODELS
        if shared:
            scored = self._score_shared_contexts(requests, encoded)
        if scored is None:
            scored = self._score_full(encoded, visuals)
            if shared and self.synced_generation:
                self._stand_in_forward()  # the other ranks may be sharing contexts: two forwards there
        return as_responses(requests, scored)

    def _stand_in_forward(self) -> None:
        """A one-token forward whose output is dropped: under FSDP each rank must run as many forwards as
        the others, and sharing contexts takes two where scoring each request alone takes one."""
        self.model(input_ids=torch.full((1, 1), self.tokenizer.pad_token_id, device=self.device), use_cache=False)

    def _encode(self, requests: list[Request], visuals: list[list[Any]]) -> list[tuple[Row, int]]:
        """Each request's prompt+continuation encoding and the length of its prompt in tokens. The choices
        of a question share their prompt and images, which are encoded alone once, not once per choice."""
        prompt_lengths: dict[tuple, int] = {}
        encoded = []
        for request, visual in zip(requests, visuals):
            images, videos = self.media(visual)
            prompt, continuation = self.prompt(self.single_turn(request), len(images), len(videos)), request.continuation
            if not self.chat:  # plain text: the text model's rule; a chat template owns its trailing whitespace
                prompt, continuation = split_context(prompt, continuation)
            key = (request.task, request.doc_id, prompt)
            if key not in prompt_lengths:
                prompt_lengths[key] = self.encode(prompt, images, videos)["input_ids"].shape[1]
            encoded.append((self.encode(prompt + continuation, images, videos), prompt_lengths[key]))
        return encoded

    def _score_shared_contexts(self, requests: list[Request], encoded: list[tuple[Row, int]]) -> Optional[Scored]:
        """Run each shared prompt (with its images) once, then score every choice on the cached
        keys/values. None when a prompt needs truncating."""
        contexts: dict[tuple, int] = {}
        context_rows: list[Row] = []
        group_of, continuations = [], []
        for request, (whole, n_prompt) in zip(requests, encoded):
            if whole["input_ids"].shape[1] > self.max_length or whole["input_ids"].shape[1] == n_prompt:
                return None
            key = (request.task, request.doc_id, tuple(whole["input_ids"][0, :n_prompt].tolist()))
            if key not in contexts:
                contexts[key] = len(context_rows)
                context_rows.append({k: v[:, :n_prompt] if self._per_token(whole, k) else v for k, v in whole.items()})
            group_of.append(contexts[key])
            continuations.append(whole["input_ids"][0, n_prompt:].tolist())
        context_inputs = self.to_model(self.collate(context_rows, "left"))
        return score_shared_contexts(
            self.model, context_inputs, group_of, continuations, self.tokenizer.pad_token_id, two_forwards=self.synced_generation
        )

    def _score_full(self, encoded: list[tuple[Row, int]], visuals: list[list[Any]]) -> Scored:
        """One right-padded forward over every request's prompt+continuation (less its last token)."""
        rows, targets = zip(*(self.scored_row(whole, n_prompt, images) for (whole, n_prompt), images in zip(encoded, visuals)))
        logits = self.model(**self.to_model(self.collate(list(rows), "right"))).logits
        ends = [row["input_ids"].shape[1] for row in rows]
        return [
            score_continuation(logits[i, end - len(target) : end], target) for i, (end, target) in enumerate(zip(ends, targets))
        ]

    def scored_row(self, whole: Row, n_prompt: int, images: list[Any]) -> tuple[Row, list[int]]:
        """The model inputs for one request (prompt+continuation less its last token) and the continuation tokens."""
        target = whole["input_ids"][0, n_prompt:].tolist()
        if len(target) == 0:
            return whole, target
        inputs = {k: v[:, :-1] if self._per_token(whole, k) else v for k, v in whole.items()}
        return self._truncate(inputs, self.max_length, images), target

    @torch.no_grad()
    def generate_until(self, requests: list[Request], visuals: Optional[list[list[Any]]] = None) -> list[Response]:
        """Left-padded batched generation, greedy unless the task samples, cut at the first stop string. Questions
        on the same images share their prefix (`share_prefix`)."""
        visuals = visuals or [[] for _ in requests]
        budget = prompt_budget(self.max_length, requests[0].generation)
        rows = [self._truncate(self._prompt_row(r, visual), budget, visual) for r, visual in zip(requests, visuals)]
        own_loop = self.model.config.model_type in OWN_LOOP_MODELS
        prefix = None
        if own_loop and self.shares_prefixes and uses_own_loop(self.model, self.synced_generation):
            prefix, rows = self._shared_prefix(requests, rows)
        inputs = self.to_model(self.collate(rows, "left"))
        texts = generate(self.model, self.tokenizer, inputs, requests, self.synced_generation, prefix, own_loop=own_loop)
        return [Response(uid=r.uid, text=text) for r, text in zip(requests, texts)]

    @property
    def shares_prefixes(self) -> bool:
        return bool(self.hparams.get("share_prefix", True)) and not self.synced_generation

    def media_token_ids(self) -> set[int]:
        """The placeholder tokens the model fills with image or video features."""
        config = self.model.config
        names = ("image_token_id", "image_token_index", "video_token_id", "video_token_index")
        return {int(getattr(config, name)) for name in names if isinstance(getattr(config, name, None), int)}

    def _shared_prefix(self, requests: list[Request], rows: list[Row]) -> tuple[Optional[tuple[Any, torch.Tensor]], list[Row]]:
        """Rows on the same images (`Request.shares`, or one document) that share their first tokens, images
        included: each group's prefix runs once with its images, and the rows keep only their own tokens. The
        rows unchanged (and no prefix) when none share, or a row would keep an image token after the prefix."""
        ids = [row["input_ids"][0].tolist() for row in rows]
        shared = share_prefixes(ids, keys=[r.shares or (r.task, r.doc_id) for r in requests])
        if shared is None:
            return None, rows
        media = self.media_token_ids()
        if any(media.intersection(row[shared.start(i) :]) for i, row in enumerate(ids)):
            return None, rows
        first: dict[int, int] = {}
        for i, group in enumerate(shared.group_of):
            first.setdefault(group, i)
        prefix_rows = []
        for group, prefix in enumerate(shared.prefixes):
            whole = rows[first[group]]
            prefix_rows.append({k: v[:, : len(prefix)] if self._per_token(whole, k) else v for k, v in whole.items()})
        inputs = self.to_model(self.collate(prefix_rows, "left"))
        state = run_prefix_inputs(self.model, inputs.pop("input_ids"), inputs.pop("attention_mask"), **inputs)
        own = [
            {k: v[:, shared.start(i) :] for k, v in row.items() if k in ("input_ids", "attention_mask")} for i, row in enumerate(rows)
        ]
        return state.for_rows(shared.group_of), own

    def _prompt_row(self, request: Request, visual: list[Any]) -> Row:
        """The encoded prompt of one generation request, with its images and videos."""
        images, videos = self.media(visual)
        return self.encode(self.prompt(self.single_turn(request), len(images), len(videos)), images, videos)

    def _truncate(self, row: Row, limit: int, images: list[Any]) -> Row:
        """Keep the last `limit` tokens of a text-only row; image tokens cannot be cut without breaking the model."""
        length = row["input_ids"].shape[1]
        if length <= limit:
            return row
        if images:
            raise InputError(
                f"a prompt with {len(images)} image(s) or video(s) is {length} tokens, more than model.max_length ({limit} here);"
                " raise model.max_length, use fewer few-shot examples or smaller images"
            )
        return {k: v[:, -limit:] if self._per_token(row, k) else v for k, v in row.items()}


def _pad_spec(value: torch.Tensor, width: int, side: str) -> list[int]:
    """`F.pad` amounts for dimension 1 of a (batch, length, ...) tensor."""
    missing = width - value.shape[1]
    trailing = [0, 0] * (value.dim() - 2)
    return trailing + ([missing, 0] if side == "left" else [0, missing])
