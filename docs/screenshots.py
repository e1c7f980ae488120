"""The README's two pictures, from a real run: the results plot written next to results.json, and what
TensorBoard's Images tab shows for the run (the `scores/all` figure, read back from the event file).

    lmm-lightning predict --config configs/demo.yaml --trainer.logger lightning.pytorch.loggers.TensorBoardLogger \
        --trainer.logger.save_dir /tmp/shots/tb --trainer.logger.name demo --evaluation.output_dir /tmp/shots/demo
    python docs/screenshots.py /tmp/shots/demo /tmp/shots/tb/demo/version_0 docs/images
"""

import argparse
import shutil
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def tensorboard_image(log_dir: Path, tag: str = "scores/all") -> bytes:
    """The last image logged under `tag` in the event files of `log_dir`, as the PNG TensorBoard serves."""
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    if tag not in events.Tags()["images"]:
        raise SystemExit(f"{log_dir}: no image {tag!r}; images there: {events.Tags()['images']}")
    return events.Images(tag)[-1].encoded_image_string


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a results folder (results.json, results.png)")
    p.add_argument("log_dir", type=Path, help="the run's TensorBoard log folder")
    p.add_argument("out", type=Path)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.run / "results.png", args.out / "results_plot.png")
    (args.out / "tensorboard_scores.png").write_bytes(tensorboard_image(args.log_dir))
    print(f"wrote {args.out / 'results_plot.png'} and {args.out / 'tensorboard_scores.png'}")


if __name__ == "__main__":
    main()
