"""HFVisionLM with videos: through the processor's `videos=` (the tiny Qwen2-VL's own video tokens and temporal
patches) or as frames (each an image, for a model without a video processor), chosen by `video_input`."""

import numpy as np
import pytest
import torch
from PIL import Image

from lmm_lightning.data.video import FrameSampling, Video
from lmm_lightning.errors import InputError
from lmm_lightning.data.datamodule import RequestBatch
from lmm_lightning.models.hf_vision import HFVisionLM, MixedVideoShapes
from lmm_lightning.requests import GenerationSpec, Request, RequestType
from tests.fixtures.vision import (
    TinyOnevisionWithVideos, TinyQwen2VLWithVideos, build_tiny_llava, build_tiny_llava_onevision, build_tiny_qwen2_vl,
)


def video(first: int, n: int = 6) -> Video:
    """`n` frames with a diagonal gradient that shifts frame by frame (solid frames would all look alike)."""
    grid = np.add.outer(np.arange(40), np.arange(48))
    frames = [Image.fromarray(((grid * 3 + first + 17 * i) % 256).astype(np.uint8)).convert("RGB") for i in range(n)]
    return Video(frames, [i / 2 for i in range(n)], n / 2, f"video{first}")


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> HFVisionLM:
    model = TinyQwen2VLWithVideos(str(build_tiny_qwen2_vl(tmp_path_factory.mktemp("qwen_video"))))
    model.configure_model()
    return model


@pytest.fixture(scope="module")
def llava(tmp_path_factory) -> HFVisionLM:
    model = HFVisionLM(str(build_tiny_llava(tmp_path_factory.mktemp("llava_video"))))
    model.configure_model()
    return model


@pytest.fixture(scope="module")
def onevision(tmp_path_factory) -> HFVisionLM:
    model = TinyOnevisionWithVideos(str(build_tiny_llava_onevision(tmp_path_factory.mktemp("onevision"))))
    model.configure_model()
    return model


def choices(n: int = 2) -> list[Request]:
    return [Request(i, "t", 0, RequestType.LOGLIKELIHOOD, "what happens in the video?", [" red", " blue"][i], choice_index=i) for i in range(n)]


def generation(uid: int = 0) -> Request:
    return Request(uid, "t", uid, RequestType.GENERATE_UNTIL, "what happens?", generation=GenerationSpec(max_new_tokens=4))


def test_qwen2_vl_takes_the_video_as_a_video(qwen):
    assert qwen.takes_videos
    images, videos = qwen.media([video(0)])
    assert images == [] and len(videos) == 1
    row = qwen.encode(qwen.prompt("q", 0, 1), images, videos)
    assert "pixel_values" not in row and row["video_grid_thw"].tolist() == [[3, 6, 8]]  # 6 frames in pairs, 24x32
    n_video_tokens = int((row["input_ids"] == qwen.processor.video_token_id).sum())
    assert n_video_tokens == 3 * 6 * 8 // 4  # grid_t * grid_h * grid_w / merge_size**2


def test_the_video_content_and_its_frame_order_change_the_scores(qwen):
    a = [r.logprob for r in qwen.loglikelihood(choices(), [[video(0)]] * 2)]
    b = [r.logprob for r in qwen.loglikelihood(choices(), [[video(90)]] * 2)]
    flipped = video(0)
    flipped.frames.reverse()
    c = [r.logprob for r in qwen.loglikelihood(choices(), [[flipped]] * 2)]
    assert a != pytest.approx(b) and a != pytest.approx(c)


def test_batched_video_answers_equal_one_at_a_time(qwen):
    visuals = [[video(0)], [video(90, n=4)], [video(30, n=5)]]
    requests = [generation(i) for i in range(3)]
    together = [r.text for r in qwen.generate_until(requests, visuals)]
    alone = [qwen.generate_until([r], [v])[0].text for r, v in zip(requests, visuals)]
    assert together == alone
    scored = [r.logprob for r in qwen.loglikelihood(choices(), [visuals[1]] * 2)]
    assert [qwen.loglikelihood([r], [visuals[1]])[0].logprob for r in choices()] == pytest.approx(scored, abs=1e-4)


def test_frames_as_images_for_a_model_without_a_video_processor(llava):
    assert not llava.takes_videos and llava.frame_sampling() is None
    clip = video(0, n=3)
    images, videos = llava.media([clip])
    assert videos == [] and images == clip.frames
    assert llava.prompt("q", 3).count("<image>") == 3
    as_video = llava.generate_until([generation()], [[clip]])
    as_images = llava.generate_until([generation()], [list(clip.frames)])
    assert as_video == as_images


def test_frames_mode_on_a_video_model(tmp_path):
    model = TinyQwen2VLWithVideos(str(build_tiny_qwen2_vl(tmp_path / "q")), video_input="frames")
    model.configure_model()
    images, videos = model.media([video(0, n=2)])
    assert len(images) == 2 and videos == []
    row = model.encode(model.prompt("q", 2), images, videos)
    assert row["image_grid_thw"].shape[0] == 2 and "pixel_values_videos" not in row


def test_the_models_own_frame_choice(qwen):
    assert qwen.frame_sampling() == FrameSampling(count=None, fps=2.0, max_frames=16)  # its video processor's fps


def test_video_input_is_checked():
    with pytest.raises(InputError, match="model.video_input"):
        HFVisionLM("/nonexistent", video_input="clips")


def test_a_forced_video_mode_without_a_video_token_is_an_actionable_error(llava):
    llava.hparams.video_input, llava.hparams.use_chat_template = "video", False
    try:
        with pytest.raises(InputError, match="video_input frames"):
            llava.prompt("q", 0, 1)
    finally:
        llava.hparams.video_input, llava.hparams.use_chat_template = "auto", True


def test_llava_onevision_takes_the_video_as_pooled_frames(onevision):
    assert onevision.takes_videos and onevision.frame_sampling() == FrameSampling(count=6)  # its video processor's num_frames
    row = onevision.encode(onevision.prompt("q", 0, 1), *onevision.media([video(0, n=5)]))
    assert tuple(row["pixel_values_videos"].shape) == (1, 5, 3, 32, 32)
    assert int((row["input_ids"] == onevision.processor.video_token_id).sum()) == 5 * 2 * 2 + 1  # 2x2 pooled a frame, a newline


def test_llava_onevision_video_scores(onevision):
    visuals = [[video(0, n=5)], [video(90, n=3)]]
    shared = [r.logprob for r in onevision.loglikelihood(choices(), [visuals[0]] * 2)]
    onevision.hparams.reuse_context = False
    try:
        separate = [r.logprob for r in onevision.loglikelihood(choices(), [visuals[0]] * 2)]
    finally:
        onevision.hparams.reuse_context = True
    assert shared == pytest.approx(separate, abs=1e-4)  # the video's context run once, then each choice on its cache
    assert shared != pytest.approx([r.logprob for r in onevision.loglikelihood(choices(), [visuals[1]] * 2)])
    requests = [generation(0), generation(1), generation(2)]
    visuals.append([video(30, n=5)])
    with pytest.raises(MixedVideoShapes):  # 5 and 3 frames cannot be stacked in one tensor
        onevision.generate_until(requests, visuals)
    together = [r.text for r in onevision.answer(RequestBatch(requests, [False] * 3, visuals))]  # alike videos batched
    assert together == [onevision.generate_until([r], [v])[0].text for r, v in zip(requests, visuals)]
