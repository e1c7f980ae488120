"""Video decoding against videos the tests encode with PyAV: frame i is a solid grey of level 8 * i, so each decoded
frame says which frame it is, and its timestamp must be i / fps."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lmm_lightning.data.video import FrameSampling, VideoError, decode, frame_indices

from tests.fixtures.video_files import FPS, level, write_video

av = pytest.importorskip("av")


@pytest.mark.parametrize("suffix,codec", [(".mp4", "mpeg4"), (".mkv", "mpeg4"), (".webm", "libvpx")])
def test_uniform_frames_are_the_ones_lmms_eval_takes_with_their_timestamps(tmp_path, suffix, codec):
    try:
        path = write_video(tmp_path / f"v{suffix}", codec=codec)
    except (av.error.FFmpegError, ValueError) as err:
        pytest.skip(f"this PyAV build cannot encode {codec}: {err}")
    video = decode(path, FrameSampling(count=4))
    expected = np.linspace(0, 29, 4, dtype=int).tolist()  # lmms-eval read_video_pyav's choice: [0, 9, 19, 29]
    assert [level(f) for f in video.frames] == expected
    assert video.timestamps == pytest.approx([i / FPS for i in expected], abs=1e-6)
    assert video.duration == pytest.approx(3.0, abs=0.15) and video.source == str(path)


def test_frames_by_rate_and_capped(tmp_path):
    path = write_video(tmp_path / "v.mp4", frames=30)
    by_rate = decode(path, FrameSampling(count=None, fps=2.0))  # one every 0.5 s of a 3 s video
    assert [level(f) for f in by_rate.frames] == [0, 5, 10, 15, 20, 25]
    capped = decode(path, FrameSampling(count=None, fps=5.0, max_frames=3))
    assert len(capped.frames) == 3 and [level(f) for f in capped.frames] == [0, 14, 28]
    assert [level(f) for f in decode(path.read_bytes(), FrameSampling(count=2)).frames] == [0, 29]  # bytes too


def test_a_short_video_gives_all_its_frames():
    assert frame_indices(3, 10.0, FrameSampling(count=8)) == [0, 1, 2]
    assert frame_indices(0, 10.0, FrameSampling(count=8)) == []


def test_a_folder_of_frames_is_a_video(tmp_path):
    for i in range(10):
        Image.new("RGB", (8, 8), (8 * i,) * 3).save(tmp_path / f"frame_{i:03d}.png")
    video = decode(tmp_path, FrameSampling(count=3))
    assert [level(f) for f in video.frames] == [0, 4, 9] and video.timestamps == [None] * 3


def test_missing_corrupt_and_empty_videos_are_one_clear_error(tmp_path):
    with pytest.raises(VideoError, match=r"nothere\.mp4: no such video file"):
        decode(tmp_path / "nothere.mp4")
    torn = tmp_path / "torn.mp4"
    torn.write_bytes(write_video(tmp_path / "whole.mp4").read_bytes()[:200])
    with pytest.raises(VideoError, match=r"torn\.mp4: (cannot decode video|no frame could be decoded|has no video stream)"):
        decode(torn)
    with pytest.raises(VideoError, match="cannot decode video"):
        decode(b"not a video at all")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="a folder of frames, but no"):
        decode(tmp_path / "empty")


def test_sampling_needs_a_count_or_a_rate():
    with pytest.raises(ValueError, match="give count"):
        FrameSampling(count=None)
    with pytest.raises(ValueError, match="count must be at least 1"):
        FrameSampling(count=0)


@pytest.mark.parametrize("suffix,codec,gop", [(".mp4", "mpeg4", 12), (".mp4", "libx264", 50), (".mkv", "mpeg4", 7), (".webm", "libvpx", 30)])
def test_seeking_takes_the_frames_decoding_in_order_takes(tmp_path, monkeypatch, suffix, codec, gop):
    """A 20 s video, 8 frames: reached by seeking to the keyframe before each; the same frames as reading them all."""
    from lmm_lightning.data import video as video_module
    from tests.fixtures.video_files import frame_number, write_numbered_video

    try:
        path = write_numbered_video(tmp_path / f"long{suffix}", frames=500, gop=gop, codec=codec)
    except (av.error.FFmpegError, ValueError) as err:
        pytest.skip(f"this PyAV build cannot encode {codec}: {err}")
    for sampling in (FrameSampling(count=8), FrameSampling(count=None, fps=0.3), FrameSampling(count=3)):
        seeking = decode(path, sampling)
        monkeypatch.setattr(video_module, "_worth_seeking", lambda wanted, fps: False)
        in_order = decode(path, sampling)
        monkeypatch.undo()
        expected = frame_indices(500, 25.0, sampling)
        assert [frame_number(f) for f in in_order.frames] == expected
        assert [frame_number(f) for f in seeking.frames] == expected
        assert seeking.timestamps == in_order.timestamps == pytest.approx([i / 25 for i in expected])


def test_a_clip_of_a_frame_folder_at_its_frame_rate(tmp_path):
    from lmm_lightning.data.video import Clip
    from tests.fixtures.video_files import write_frames

    folder = write_frames(tmp_path / "frames", frames=30)  # 10 s at 3 fps
    video = decode(Clip(str(folder), start=2.0, end=5.0, fps=3.0), FrameSampling(count=4))
    assert [level(f) for f in video.frames] == [6, 9, 12, 15]  # frames 6..15 (2 s to 5 s)
    assert video.timestamps == pytest.approx([2.0, 3.0, 4.0, 5.0]) and video.duration == 10.0
