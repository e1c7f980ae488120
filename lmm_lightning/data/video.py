"""Videos for video benchmarks: which frames to take (`FrameSampling`), and decoding them with PyAV (FFmpeg's own
decoder, not OpenCV's capture loop) into PIL images with their timestamps. Decoding happens where the document's
visuals are read: in the data loader workers, never up front.

A video is a path or the bytes of an mp4/webm/mkv/..., or a folder of frame images (sorted by name).
Frame choice follows lmms-eval's `read_video_pyav` where it has one: `count` frames spread uniformly from the first
to the last (`numpy.linspace(0, total - 1, count)`, cast to int); with `fps`, one frame every 1/fps seconds.

    >>> frame_indices(total=100, fps_of_video=25.0, sampling=FrameSampling(count=5))
    [0, 24, 49, 74, 99]
    >>> frame_indices(total=100, fps_of_video=25.0, sampling=FrameSampling(count=None, fps=2.0))
    [0, 12, 25, 38, 50, 62, 75, 88]
"""

import io
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
from PIL import Image

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class VideoError(ValueError):
    """A video that cannot be read: missing, corrupt, or without a video stream."""


@dataclass(frozen=True)
class FrameSampling:
    """Which frames of a video a model sees: `count` spread uniformly over the whole video, or (count None) one every
    1/`fps` seconds; `max_frames` caps either (uniformly re-spread when over)."""

    count: Optional[int] = 8
    fps: Optional[float] = None
    max_frames: Optional[int] = None

    def __post_init__(self) -> None:
        if self.count is None and self.fps is None:
            raise ValueError("FrameSampling: give count (frames per video) or fps (frames per second)")
        if self.count is not None and self.count < 1:
            raise ValueError(f"FrameSampling: count must be at least 1, got {self.count}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"FrameSampling: fps must be positive, got {self.fps}")


@dataclass(frozen=True)
class Clip:
    """A part of a video: frames from `start` to `end` seconds only (MVBench's bounded questions); either may be None
    (from the beginning, to the end). A `doc_to_visual` function returns one where a bare path would mean the whole."""

    path: str
    start: Optional[float] = None
    end: Optional[float] = None
    fps: Optional[float] = None  # the frame rate of a folder of frames (a video file's own rate is read from it)


@dataclass
class Video:
    """Decoded frames of one video, with the time of each frame in seconds (None for a folder of frames without a
    frame rate) and the video's length."""

    frames: list[Image.Image]
    timestamps: list[Optional[float]]
    duration: Optional[float]
    source: str


def uniform(total: int, count: int) -> list[int]:
    """`count` indices from 0 to total - 1 inclusive, evenly spread (all of them when there are fewer)."""
    if total <= count:
        return list(range(total))
    return np.linspace(0, total - 1, count, dtype=int).tolist()


def frame_indices(total: int, fps_of_video: Optional[float], sampling: FrameSampling) -> list[int]:
    """The frame indices `sampling` takes from a video of `total` frames at `fps_of_video`."""
    if total <= 0:
        return []
    if sampling.count is not None or not fps_of_video:
        indices = uniform(total, sampling.count or total)
    else:
        step = fps_of_video / sampling.fps
        indices = sorted({min(total - 1, int(round(k * step))) for k in range(int(np.ceil(total / step)))})
    if sampling.max_frames is not None and len(indices) > sampling.max_frames:
        indices = [indices[i] for i in uniform(len(indices), sampling.max_frames)]
    return indices


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says: its frame count, frame rate and length (None where it does not say)."""

    total_frames: int
    fps: Optional[float]
    duration: Optional[float]

    def frame_times(self, sampling: "FrameSampling") -> list[Optional[float]]:
        """The time in seconds of each frame `sampling` takes, as `decode` will take them."""
        return [index / self.fps if self.fps else None for index in frame_indices(self.total_frames, self.fps, sampling)]


def probe(source: Union[str, Path, bytes, Clip]) -> VideoInfo:
    """The header of a video (no frame decoded; a folder of frames is counted): cheap enough to check every video of
    a benchmark before any model loads. Raises `VideoError` naming the video when it cannot be read."""
    source = source.path if isinstance(source, Clip) else source
    if not isinstance(source, (bytes, bytearray)) and Path(source).is_dir():
        return VideoInfo(len(_frame_files(Path(source))), None, None)
    with _opened(source, "read") as (_, _, info):
        pass
    if info.total_frames <= 0:
        raise VideoError(f"{describe(source)}: holds no frame")
    return info


@contextmanager
def _opened(source: Union[str, Path, bytes], action: str) -> Iterator[tuple[Any, Any, VideoInfo]]:
    """A video file or its bytes opened with PyAV: its container, first video stream and header. Whatever FFmpeg
    raises, there or in the caller's block, becomes one `VideoError` naming the video ("cannot <action> video")."""
    import av

    name = describe(source)
    if not isinstance(source, (bytes, bytearray)) and not Path(source).is_file():
        raise VideoError(f"{name}: no such video file")
    try:
        with av.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)) as container:
            if not container.streams.video:
                raise VideoError(f"{name}: has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            total = stream.frames or _count_frames(container, stream)
            duration = float(stream.duration * stream.time_base) if stream.duration else (total / fps if fps else None)
            yield container, stream, VideoInfo(total, fps, duration)
    except VideoError:
        raise
    except Exception as err:  # noqa: BLE001 - FFmpeg's many errors become one that names the video
        raise VideoError(f"{name}: cannot {action} video: {type(err).__name__}: {err}") from None


def describe(source: Any) -> str:
    """A short name for errors: the path, or the size of in-memory bytes."""
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes of video>"
    return str(source)


def clip_range(total: int, fps: Optional[float], clip: Optional[Clip]) -> range:
    """The frame indices a clip covers: from round(start * fps) to round(end * fps), within the video.

    >>> clip_range(100, 10.0, Clip("v.mp4", start=2.0, end=5.0)), clip_range(100, 10.0, None)
    (range(20, 51), range(0, 100))
    """
    if clip is None or not fps:
        return range(total)
    first = max(0, int(round(clip.start * fps))) if clip.start is not None else 0
    last = min(total - 1, int(round(clip.end * fps))) if clip.end is not None else total - 1
    return range(min(first, total - 1), max(first, last) + 1)


def decode(source: Union[str, Path, bytes, Clip], sampling: FrameSampling = FrameSampling()) -> Video:
    """The frames `sampling` takes from `source` (a video file, its bytes, a folder of frames, or a `Clip` of one)."""
    clip = source if isinstance(source, Clip) else None
    source = clip.path if clip is not None else source
    if not isinstance(source, (bytes, bytearray)) and Path(source).is_dir():
        return _decode_folder(Path(source), sampling, clip)
    name = describe(source)
    with _opened(source, "decode") as (container, stream, info):
        stream.thread_type = "AUTO"  # set before any frame is decoded
        fps, total = info.fps, info.total_frames
        span = clip_range(total, fps, clip)
        wanted = sorted({span[i] for i in frame_indices(len(span), fps, sampling)})
        taken = _by_seeking(container, stream, wanted, fps) if _worth_seeking(wanted, fps) else None
        taken = taken if taken is not None else _in_order(container, stream, set(wanted))
        frames = [frame.to_image() for _, frame in taken]
        times = [float(frame.time) if frame.time is not None else (index / fps if fps else None) for index, frame in taken]
    if not frames:
        raise VideoError(f"{name}: no frame could be decoded")
    return Video(frames, times, info.duration, name)


SEEK_GAP_S = 2.0  # frames further apart than this are reached by seeking to the keyframe before them, not by decoding on


def _worth_seeking(wanted: list[int], fps: Optional[float]) -> bool:
    """Whether any two frames taken are more than SEEK_GAP_S apart (a long video, a few frames)."""
    return bool(fps) and any(b - a > SEEK_GAP_S * fps for a, b in zip([-1] + wanted, wanted))


def _in_order(container: Any, stream: Any, wanted: set[int]) -> list[tuple[int, Any]]:
    """Every frame decoded from the first, the wanted ones kept (lmms-eval's `read_video_pyav` reads them so)."""
    taken = []
    container.seek(0)
    for index, frame in enumerate(container.decode(stream)):
        if index in wanted:
            taken.append((index, frame))
        if index >= max(wanted, default=-1):
            break
    return taken


def _by_seeking(container: Any, stream: Any, wanted: list[int], fps: float) -> Optional[list[tuple[int, Any]]]:
    """The wanted frames reached by seeking to the keyframe before each one (when it is far from the last taken) and
    decoding on to it; a frame's index is its presentation time x fps, counted from the first frame. The same frames as
    `_in_order` for a constant frame rate; None (read in order instead) where the timestamps cannot say which frame is
    which: no timestamps, or a seek that lands past its frame."""
    container.seek(0)
    first = next(container.decode(stream), None)
    if first is None or first.pts is None:
        return None
    time_base = float(stream.time_base)
    index_of = lambda frame: int(round((frame.pts - first.pts) * time_base * fps))
    taken: list[tuple[int, Any]] = []
    frames, current = None, -1
    for target in wanted:
        if frames is None or target - current > SEEK_GAP_S * fps:
            container.seek(first.pts + int(target / fps / time_base), stream=stream, backward=True, any_frame=False)
            frames, current = container.decode(stream), None
        for frame in frames:
            if frame.pts is None:
                return None
            if current is None and index_of(frame) > target:
                return None  # landed past the frame wanted: the keyframe before it is not where the seek went
            current = index_of(frame)
            if current >= target:
                taken.append((target, frame))
                break
        else:
            break  # the video ended early (its header overstated the frames): what was taken stands
    return taken


def _count_frames(container: Any, stream: Any) -> int:
    """Frames of a stream whose header does not say (some webm/mkv files): counted by demuxing, not decoding."""
    count = sum(1 for packet in container.demux(stream) if packet.size)
    return count


def _frame_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise VideoError(f"{folder}: a folder of frames, but no {'/'.join(FRAME_SUFFIXES)} file in it")
    return files


def _decode_folder(folder: Path, sampling: FrameSampling, clip: Optional[Clip] = None) -> Video:
    """A folder's frames in name order; a clip with the folder's `fps` bounds them (frame i at i / fps seconds)."""
    files = _frame_files(folder)
    fps = clip.fps if clip is not None else None
    span = clip_range(len(files), fps, clip)
    chosen = [span[i] for i in frame_indices(len(span), fps, sampling)]
    frames = []
    for index in chosen:
        try:
            with Image.open(files[index]) as image:
                frames.append(image.convert("RGB"))
        except OSError as err:
            raise VideoError(f"{files[index]}: cannot read frame: {err}") from None
    times = [index / fps if fps else None for index in chosen]
    return Video(frames, times, len(files) / fps if fps else None, str(folder))
