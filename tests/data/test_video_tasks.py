"""Video tasks through the data module: every video checked at set-up (a missing or corrupt one is one error naming the
file and the document, before any model loads), frames decoded in the data loader workers as `data.video_frames` /
`video_fps` / `max_video_frames` or the model ask, and the frames part of each request's key."""

import json
from pathlib import Path

import pytest

from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.data.video import Clip, FrameSampling, Video, frame_indices
from lmm_lightning.errors import InputError
from lmm_lightning.evaluation.store import request_keys
from tests.fixtures.video_files import level, write_frames, write_video_task


def batches(datamodule: BenchmarkDataModule) -> list:
    datamodule.connect(batch_size=datamodule.batch_size)
    return list(datamodule.predict_dataloader())


def setup(task: Path, **kwargs) -> BenchmarkDataModule:
    datamodule = BenchmarkDataModule([str(task)], batch_size=2, **kwargs)
    datamodule.setup("predict")
    return datamodule


def test_frames_are_decoded_in_the_workers_as_lmms_eval_picks_them(tmp_path):
    task = write_video_task(tmp_path, frames=20)
    for workers in (0, 2):
        datamodule = setup(task, video_frames=5, num_workers=workers)
        seen = {}
        for batch in batches(datamodule):
            for request, visuals in zip(batch.requests, batch.visuals):
                (video,) = visuals
                assert isinstance(video, Video)
                seen[request.doc_id] = [level(frame, 40 * (request.doc_id // 2)) for frame in video.frames]
                assert video.timestamps == pytest.approx([i / 10 for i in frame_indices(20, 10.0, FrameSampling(count=5))])
        assert seen == {doc: [0, 4, 9, 14, 19] for doc in range(6)}  # numpy.linspace(0, 19, 5).astype(int)


def test_fps_and_a_cap(tmp_path):
    task = write_video_task(tmp_path, n_videos=1, questions_per_video=1, frames=20)
    (batch,) = batches(setup(task, video_fps=2.0))
    assert [level(f) for f in batch.visuals[0][0].frames] == [0, 5, 10, 15]  # one frame every 0.5 s at 10 fps
    (batch,) = batches(setup(task, video_fps=10.0, max_video_frames=3))
    assert [level(f) for f in batch.visuals[0][0].frames] == [0, 9, 19]


@pytest.mark.parametrize("option,value", [("video_frames", 0), ("video_frames", "all"), ("video_fps", -1.0), ("max_video_frames", 0)])
def test_bad_video_options_are_one_error_naming_the_option(tmp_path, option, value):
    with pytest.raises(InputError, match=f"data.{option}"):
        BenchmarkDataModule([str(write_video_task(tmp_path))], **{option: value})


def test_a_missing_video_names_the_file_and_the_document_at_setup(tmp_path):
    task = write_video_task(tmp_path)
    (tmp_path / "videos" / "clip1.mp4").unlink()
    with pytest.raises(InputError, match=r"document 2: video .*clip1.mp4: no such video file") as err:
        setup(task)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupt_video_is_an_error_at_setup(tmp_path, damage):
    task = write_video_task(tmp_path)
    path = tmp_path / "videos" / "clip2.mp4"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 3], "garbage": b"\x00\x01not a video" * 50, "empty": b""}[damage])
    with pytest.raises(InputError, match=r"document 4: video .*clip2.mp4"):
        setup(task)


def test_a_video_under_another_suffix_and_a_frames_folder(tmp_path):
    task = write_video_task(tmp_path, n_videos=2, questions_per_video=1, frames=12)
    videos = tmp_path / "videos"
    (videos / "clip0.mp4").rename(videos / "clip0.MP4")  # Video-MME ships some .mp4 of its list as .MP4 or .mkv
    (videos / "clip1.mp4").unlink()
    write_frames(videos / "clip1", frames=12, first_level=40)
    rows = [json.loads(line) for line in (tmp_path / "tiny_video.jsonl").read_text().splitlines()]
    rows[1]["video"] = "clip1"
    (tmp_path / "tiny_video.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second = [v[0] for b in batches(setup(task, video_frames=4)) for v in b.visuals]
    assert [level(f) for f in first.frames] == [0, 3, 7, 11]
    assert [level(f, 40) for f in second.frames] == [0, 3, 7, 11] and second.timestamps == [None] * 4


def clip_visual(doc, kwargs):
    """A task function: the first second of the video, found through the video folder the task hands over."""
    assert Path(kwargs["video_dir"]).is_dir()
    return [Clip(doc["video"], start=0.0, end=1.0)]


def test_a_function_returns_a_clip_and_gets_the_video_folder(tmp_path):
    task = write_video_task(tmp_path, n_videos=1, questions_per_video=1, frames=30)
    (tmp_path / "utils.py").write_text("from tests.data.test_video_tasks import clip_visual\n")
    text = task.read_text().replace("doc_to_visual: video", "doc_to_visual: !function utils.clip_visual")
    task.write_text(text + "lmms_eval_specific_kwargs:\n  default:\n    pre_prompt: ''\n")
    (batch,) = batches(setup(task, video_frames=3))
    assert [level(f) for f in batch.visuals[0][0].frames] == [0, 5, 10]  # frames 0..10 (0 s to 1 s) only


def test_the_frames_taken_are_part_of_the_request_keys(tmp_path):
    task = write_video_task(tmp_path)
    keys = lambda dm: request_keys(dm.requests, dm.tasks, "model")
    eight, four, again = setup(task), setup(task, video_frames=4), setup(task)
    assert keys(eight) == keys(again) and not set(keys(eight)) & set(keys(four))
    model_choice = setup(task, video_frames="model")
    model_choice.connect(frame_sampling=FrameSampling(count=4))
    assert keys(model_choice) == keys(four)


def test_a_video_gone_after_setup_is_an_error_naming_it_and_the_document(tmp_path):
    task = write_video_task(tmp_path)
    datamodule = setup(task)
    (tmp_path / "videos" / "clip2.mp4").unlink()  # removed while the run goes on
    with pytest.raises(InputError, match=r"task 'tiny_video', doc_id [45]: cannot load its video: VideoError: .*clip2.mp4: no such video file"):
        batches(datamodule)


def folder_clip_visual(doc, kwargs):
    """A task function: seconds 1 to 2 of a folder of frames at 10 frames a second (relative to the video folder)."""
    return [Clip("frames", start=1.0, end=2.0, fps=10.0)]


def test_a_clip_of_a_frame_folder_keeps_its_frame_rate_through_the_loader(tmp_path):
    task = write_video_task(tmp_path, n_videos=1, questions_per_video=1)
    write_frames(tmp_path / "videos" / "frames", frames=30)
    (tmp_path / "utils.py").write_text("from tests.data.test_video_tasks import folder_clip_visual\n")
    text = task.read_text().replace("doc_to_visual: video", "doc_to_visual: !function utils.folder_clip_visual")
    task.write_text(text + "lmms_eval_specific_kwargs:\n  default:\n    pre_prompt: ''\n")
    (batch,) = batches(setup(task, video_frames=3))
    assert [level(f) for f in batch.visuals[0][0].frames] == [10, 15, 20]  # frames 10..20 only
