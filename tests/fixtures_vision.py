"""Offline vision-language test models: a tiny LLaVA and a tiny Qwen2-VL with random weights.

Each folder is a complete Hugging Face checkpoint (config, weights, tokenizer, image processor,
chat template) that `AutoModelForImageTextToText` and `AutoProcessor` load like a real one.
"""

from pathlib import Path
from typing import Union

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
)
from transformers.processing_utils import ProcessorMixin
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

CORPUS = [
    "USER: what is the color of the shape? ASSISTANT: red",
    "what shape is in the image? circle rectangle triangle",
    "does the image contain a blue shape? yes no",
    "red green blue yellow teal gray black brown",
    "is there a triangle in the image? is the shape not green?",
    "Question: what is the red shape? Answer: triangle.",
]

# USER/ASSISTANT turns, an image placeholder per image entry, then the text.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}SYSTEM: {% elif message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# Qwen2-VL's own layout: <|im_start|>role ... <|im_end|>, images wrapped in vision markers.
QWEN2VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)


def _tokenizer(special: list[str], **special_kwargs: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on a few sentences, with the model's special tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", *special], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        **special_kwargs,
    )


def _text_config(tokenizer: PreTrainedTokenizerFast) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def build_tiny_llava(folder: Union[str, Path], seed: int = 0) -> Path:
    """A LLaVA with a 2-layer CLIP vision tower (32x32 images, 16 image tokens) and a 2-layer Llama."""
    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    tokenizer = _tokenizer(["<image>"], extra_special_tokens={"image_token": "<image>"})
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=LlamaConfig(**_text_config(tokenizer)),
        image_token_index=image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_qwen2_vl(folder: Union[str, Path], seed: int = 0) -> Path:
    """A Qwen2-VL with a 2-layer vision tower (images resized to at most 32x32, 16 tokens) and M-RoPE text model."""
    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    special = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer = _tokenizer(special)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in special}
    text = _text_config(tokenizer)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}
    vision = dict(
        depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=4, spatial_merge_size=2, temporal_patch_size=2
    )
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=4, merge_size=2, temporal_patch_size=2, min_pixels=16 * 16, max_pixels=32 * 32
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    # The processor's parts, saved one by one: `Qwen2VLProcessor` itself cannot be built or saved
    # without torchvision (see `qwen2_vl_processor`).
    image_processor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(QWEN2VL_CHAT_TEMPLATE)
    return folder


def qwen2_vl_processor(folder: Union[str, Path]) -> Qwen2VLProcessor:
    """The tiny Qwen2-VL's processor, without its video processor.

    transformers 5.x loads and type-checks a video processor for every Qwen2-VL processor, and
    video processors need torchvision, which has no CPU build on PyPI for this torch. Images need
    none of it, so the tests build the processor from its parts and skip the check for the absent
    video processor.
    """
    folder = Path(folder)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(folder)
    check = ProcessorMixin.check_argument_for_proper_class
    ProcessorMixin.check_argument_for_proper_class = lambda self, name, arg: None if arg is None else check(self, name, arg)
    try:
        return Qwen2VLProcessor(
            image_processor=image_processor, tokenizer=tokenizer, video_processor=None, chat_template=QWEN2VL_CHAT_TEMPLATE
        )
    finally:
        ProcessorMixin.check_argument_for_proper_class = check
