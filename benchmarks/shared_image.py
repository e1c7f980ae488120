"""Many questions per image (POPE-style) with a LLaVA of LLaVA-1.5's geometry: the image and its prompt once.

POPE asks 18 questions about each of its 500 images (6 per setting). lmm_lightning batches a picture's
questions together (`Request.shares`), decodes the picture once per batch, and runs the image tokens and the
prompt before the question once (`share_prefix`, models/prefix.py): the vision tower sees each image once
and every question computes only its own tokens. The model is built here from a config, offline, with random
weights: LLaVA-1.5's image geometry (336x336 pixels, 14-pixel patches: 576 image tokens), a 4-layer CLIP-style
vision tower and SmolLM2-135M's language-model shape with its tokenizer. A random model never emits its end
token, so every answer runs to its budget: `--max-new-tokens 4` (a real LLaVA answers POPE's "Answer the
question using a single word or phrase." in one to three tokens).

Contestants, alternated `--repeats` times, each a `lmm-lightning predict` run (benchmarks/timed_cli.py, the
evaluation phase timed):
  shared          batch `--batch-size`, share_prefix true (the default)
  unshared        batch `--batch-size`, share_prefix false: each question runs its image and prompt again
  unshared_b1     batch 1, share_prefix false: what lmms-eval's llava_hf does (its generate_until asserts batch
                  size 1 and re-encodes the image for every question). lmms-eval itself does not run here: its
                  llava_hf needs decord and accelerate beside a CUDA build of torch.
The generations of every contestant are compared with the first's.

    python benchmarks/shared_image.py --images 6 --repeats 3
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common import REPO, RESULTS, Contention, add_load_arguments, git_commit, idle_waiter, machine, median, wait_for_quiet
from vs_lm_eval import OUR_PYTHON, TIMED_CLI, _run

OBJECTS = ["dog", "cat", "car", "tree", "person", "chair", "bottle", "cup", "bird", "book", "clock", "bus",
           "horse", "bench", "kite", "phone", "bowl", "sink"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_llava(folder: Path) -> Path:
    """LLaVA-1.5's image geometry with a small vision tower and SmolLM2-135M's language model shape (random weights)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from lmm_lightning.assets import smollm2_folder

    if (folder / "config.json").exists():
        return folder
    smollm = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(smollm)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    text = AutoConfig.from_pretrained(smollm)
    text.vocab_size = len(tokenizer)
    vision = CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4)
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_task(folder: Path, images: int, max_new_tokens: int) -> Path:
    """POPE's prompt and columns over `images` pictures, 18 questions each (documents of one image side by side)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(images):
        path = folder / f"image{i}.jpg"
        Image.fromarray((rng.random((480, 640, 3)) * 255).astype("uint8")).save(path, quality=90)
        for j, thing in enumerate(OBJECTS):
            rows.append({"question": f"Is there a {thing} in the image?", "answer": "yes" if j % 2 else "no", "image": str(path),
                         "image_source": f"image{i}"})
    (folder / "pope_style.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "pope_style.yaml").write_text(
        "task: pope_style\ndataset_path: json\ndata_files: pope_style.jsonl\noutput_type: generate_until\n"
        "doc_to_visual: image\n"
        "doc_to_text: \"{{ question.strip() }}\\nAnswer the question using a single word or phrase.\"\n"
        f"doc_to_target: answer\ngeneration_kwargs:\n  max_new_tokens: {max_new_tokens}\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    return folder


def run_ours(model: Path, task_dir: Path, batch_size: int, share: bool, threads: int, output: Path) -> dict[str, Any]:
    args = [
        "predict", "--model", "lmm_lightning.models.HFVisionLM", "--model.pretrained", str(model),
        "--model.share_prefix", "true" if share else "false",
        "--data", "lmm_lightning.data.BenchmarkDataModule", "--data.tasks", "[pope_style]", "--data.include_path", str(task_dir),
        "--data.batch_size", str(batch_size), "--data.num_workers", "1", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false", "--evaluation.output_dir", str(output), "--evaluation.bootstrap_iters", "1000",
    ]
    wall, timing = _run([OUR_PYTHON, str(TIMED_CLI), *args], threads, output.with_suffix(".log"))
    samples = [json.loads(line) for line in (output / "samples_pope_style.jsonl").read_text().splitlines()]
    return {"wall_s": wall, **timing, "texts": {s["doc_id"]: s["resps"][0][0] for s in samples}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=18)
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-dir", default=str(REPO / "benchmarks" / "results" / "llava_geometry"), help="where the built model is kept")
    add_load_arguments(parser)
    args = parser.parse_args()
    model = build_llava(Path(args.model_dir))
    load = wait_for_quiet(args.max_load, args.max_wait)
    print(f"machine: {machine()}; commit {git_commit()}; load at start {load:.2f}", flush=True)
    wait = idle_waiter(args)
    contestants = {
        "shared": (args.batch_size, True),
        "unshared": (args.batch_size, False),
        "unshared_b1": (1, False),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contestants}
    with tempfile.TemporaryDirectory() as workdir:
        task_dir = write_task(Path(workdir) / "task", args.images, args.max_new_tokens)
        for i in range(args.repeats):
            for name, (batch_size, share) in contestants.items():
                wait()
                with Contention() as seen:
                    row = run_ours(model, task_dir, batch_size, share, args.threads, Path(workdir) / f"{name}_{i}")
                runs[name].append({**row, **seen.as_dict()})
                print(f"{name} run {i}: phase {row['phase_s']:.2f} s", flush=True)
    reference = runs["shared"][0]["texts"]
    summary: dict[str, Any] = {"images": args.images, "questions": len(reference), "batch_size": args.batch_size,
                               "max_new_tokens": args.max_new_tokens, "threads": args.threads}
    for name, rows in runs.items():
        phase = median([r["phase_s"] for r in rows])
        summary[name] = {
            "phase_s": [r["phase_s"] for r in rows], "median_phase_s": phase, "requests_per_s": rows[0]["requests"] / phase,
            "model_s": median([r["model_s"] for r in rows]), "median_wall_s": median([r["wall_s"] for r in rows]),
            "identical_generations": sum(rows[0]["texts"][d] == t for d, t in reference.items()),
            "load_1min": [r["load_1min"] for r in rows], "others_cores": [r["others_cores"] for r in rows],
        }
    for name in runs:
        s = summary[name]
        ratio = s["requests_per_s"] / summary["unshared_b1"]["requests_per_s"]
        print(f"{name:>12}: phase {s['median_phase_s']:.2f} s ({s['requests_per_s']:.2f} req/s, x{ratio:.2f} unshared batch 1) | "
              f"model {s['model_s']:.2f} s | identical generations {s['identical_generations']}/{len(reference)}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "shared_image.json").write_text(json.dumps({"machine": machine(), "commit": git_commit(), "argv": sys.argv[1:], **summary}, indent=2))


if __name__ == "__main__":
    main()
