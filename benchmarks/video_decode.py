"""Video decoding cost: frames/s with 0, 2 and 4 data loader workers, and the share of an evaluation spent decoding.

Synthetic H.264 videos (the script encodes them: 640x360, 30 fps, `--seconds` long, a moving pattern so frames differ)
feed a generation task over them through `BenchmarkDataModule`; frames are taken as `data.video_frames` says.

1. Decoding alone: every batch of `predict_dataloader()` drawn, nothing else, with 0 / 2 / 4 workers: frames delivered
   per second (and videos per second), median of the repeats; and with 0 workers reading every frame in order up to
   the last one taken (lmms-eval's `read_video_pyav`) instead of seeking to the keyframe before each.
2. An evaluation: the same batches answered by the tiny Qwen2-VL taking videos (tests/fixtures/vision.py), with 0 workers
   (decoding and the model take turns: the share of the wall time spent waiting for the next batch is the decode share)
   and 2 workers (decoding overlaps the model).

    python benchmarks/video_decode.py --videos 16 --seconds 20 --frames 8 --repeats 3
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import RESULTS, git_commit, machine, median  # noqa: E402
from lmm_lightning.data import BenchmarkDataModule  # noqa: E402
from lmm_lightning.data import video as video_module  # noqa: E402
from tests.fixtures.vision import TinyQwen2VLWithVideos, build_tiny_qwen2_vl  # noqa: E402


def encode(path: Path, seconds: float, fps: int = 30, width: int = 640, height: int = 360, seed: int = 0) -> None:
    """An H.264 video whose pattern moves each frame (keyframe every 2 s, as camera footage often has)."""
    grid = np.add.outer(np.arange(height), np.arange(width))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(2 * fps), "preset": "veryfast"}
        for i in range(int(seconds * fps)):
            level = ((grid + 3 * i + 40 * seed) % 256).astype(np.uint8)
            picture = np.stack([level, np.roll(level, i, axis=1), 255 - level], axis=-1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_task(folder: Path, n_videos: int, seconds: float) -> Path:
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for v in range(n_videos):
        encode(folder / "videos" / f"v{v}.mp4", seconds, seed=v)
        rows.append({"video": f"v{v}.mp4", "question": "What happens in the video?", "answer": "nothing"})
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = folder / "video_decode.yaml"
    task.write_text(
        "task: video_decode\ndataset_path: json\ndata_files: data.jsonl\nvideo_dir: videos\ndoc_to_visual: video\n"
        "doc_to_text: '{{question}}'\ndoc_to_target: answer\ngeneration_kwargs: {max_new_tokens: 4}\n"
        "metric_list: [{metric: exact_match}]\n"
    )
    return task


def datamodule(task: Path, frames: int, workers: int) -> BenchmarkDataModule:
    dm = BenchmarkDataModule([str(task)], batch_size=2, num_workers=workers, video_frames=frames)
    dm.setup("predict")
    dm.connect(batch_size=2)
    return dm


def decode_only(task: Path, frames: int, workers: int, seek: bool = True) -> dict:
    dm = datamodule(task, frames, workers)
    worth_seeking = video_module._worth_seeking
    if not seek:  # every frame decoded in order (workers fork after this, so they read in order too)
        video_module._worth_seeking = lambda wanted, fps: False
    start = time.perf_counter()
    n_frames = n_videos = 0
    for batch in dm.predict_dataloader():
        for visuals in batch.visuals:
            n_videos += len(visuals)
            n_frames += sum(len(v.frames) for v in visuals)
    seconds = time.perf_counter() - start  # worker start-up included: an evaluation pays it too
    video_module._worth_seeking = worth_seeking
    return {"seconds": seconds, "frames": n_frames, "videos": n_videos}


def evaluation(task: Path, frames: int, workers: int, model: TinyQwen2VLWithVideos) -> dict:
    dm = datamodule(task, frames, workers)
    waiting = answering = 0.0
    start = time.perf_counter()
    mark = start
    for batch in dm.predict_dataloader():
        got = time.perf_counter()
        waiting += got - mark
        model.answer(batch)
        mark = time.perf_counter()
        answering += mark - got
    wall = time.perf_counter() - start
    return {"wall": wall, "waiting_for_frames": waiting, "model": answering, "decode_share": waiting / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        task = write_task(folder / "task", args.videos, args.seconds)
        model = TinyQwen2VLWithVideos(str(build_tiny_qwen2_vl(folder / "qwen")))
        model.configure_model()
        runs: dict[str, list] = {}
        for _ in range(args.repeats):  # contestants alternate within each repeat
            runs.setdefault("decode_in_order_0", []).append(decode_only(task, args.frames, 0, seek=False))
            for workers in (0, 2, 4):
                runs.setdefault(f"decode_{workers}", []).append(decode_only(task, args.frames, workers))
            for workers in (0, 2):
                runs.setdefault(f"eval_{workers}", []).append(evaluation(task, args.frames, workers, model))
    summary = {}
    for name in ("in_order_0", "0", "2", "4"):
        rs = runs[f"decode_{name}"]
        seconds = median([r["seconds"] for r in rs])
        summary[f"decode_{name}_workers"] = {"seconds": seconds, "frames_per_s": rs[0]["frames"] / seconds, "videos_per_s": rs[0]["videos"] / seconds}
    for workers in (0, 2):
        rs = runs[f"eval_{workers}"]
        summary[f"eval_{workers}_workers"] = {k: median([r[k] for r in rs]) for k in rs[0]}
    out = {"machine": machine(), "commit": git_commit(), "args": vars(args), "summary": summary, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "video_decode.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
