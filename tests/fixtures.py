"""Offline test fixtures: a tiny random causal LM with a tokenizer trained here, and tiny tasks."""

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CORPUS = [
    "Question: What is the capital of France? Answer: Paris",
    "The quick brown fox jumps over the lazy dog.",
    "one two three four five six seven eight nine ten",
    "red green blue yellow circle square triangle rectangle",
    "Paris Berlin Madrid Rome Lisbon Vienna Oslo Dublin",
]

COUNTRIES = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Spain", "Madrid"), ("Italy", "Rome"),
    ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Norway", "Oslo"), ("Ireland", "Dublin"),
    ("Greece", "Athens"), ("Poland", "Warsaw"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"),
    ("Peru", "Lima"),
]


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama with random weights and a byte-level BPE tokenizer, saved as a HF folder."""
    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def write_tiny_tasks(folder: Path, n_docs: int = len(COUNTRIES)) -> Path:
    """A multiple-choice and a generation task over a few countries, as YAML + jsonl."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    capitals = [c for _, c in COUNTRIES]
    with open(folder / "docs.jsonl", "w") as handle:
        for i, (country, capital) in enumerate(COUNTRIES[:n_docs]):
            others = [c for c in capitals if c != capital]
            choices = [capital, others[i % len(others)], others[(i + 3) % len(others)]]
            choices = choices[i % 3 :] + choices[: i % 3]
            handle.write(json.dumps({"country": country, "capital": capital, "choices": choices, "answer": choices.index(capital)}) + "\n")
    (folder / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n"
        "dataset_path: json\n"
        "data_files: docs.jsonl\n"
        "output_type: multiple_choice\n"
        "doc_to_text: 'Question: What is the capital of {{country}}? Answer:'\n"
        "doc_to_choice: choices\n"
        "doc_to_target: answer\n"
    )
    (folder / "tiny_gen.yaml").write_text(
        "task: tiny_gen\n"
        "dataset_path: json\n"
        "data_files: docs.jsonl\n"
        "output_type: generate_until\n"
        "doc_to_text: 'Question: What is the capital of {{country}}? Answer:'\n"
        "doc_to_target: capital\n"
        "generation_kwargs:\n"
        "  until: ['.']\n"
        "  max_new_tokens: 6\n"
        "metric_list:\n"
        "  - metric: exact_match\n"
        "    ignore_case: true\n"
    )
    return folder
