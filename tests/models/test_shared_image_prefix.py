"""Questions on one image: the image and the prompt before the question run once, the answers unchanged."""

import pytest

from lmm_lightning.requests import GenerationSpec, Request, RequestType
from tests.models.test_hf_vision import images, load

OBJECTS = ["dog", "cat", "car", "tree"]


@pytest.fixture(scope="module")
def tiny_llava_folder(tmp_path_factory):
    from tests.fixtures.vision import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava_prefix"))


def pope_like(n_images: int, shares: bool = True):
    """Four questions per image, POPE's template; documents on one picture carry its key (`Request.shares`)."""
    spec = GenerationSpec(until=("\n",), max_new_tokens=6)
    pictures = images(n_images, seed=3)
    requests, visuals = [], []
    for i, picture in enumerate(pictures):
        for j, thing in enumerate(OBJECTS):
            doc = len(requests)
            context = f"Is there a {thing} in the image? Answer the question using a single word or phrase."
            key = f"picture{i}" if shares else ""
            requests.append(Request(doc, "pope", doc, RequestType.GENERATE_UNTIL, context, generation=spec, shares=key))
            visuals.append([picture])
    return requests, visuals


@pytest.mark.parametrize("chat", [True, False])
def test_questions_on_one_image_share_its_encoding_and_answer_as_alone(tiny_llava_folder, chat):
    shared = load(tiny_llava_folder, use_chat_template=chat)
    alone = load(tiny_llava_folder, use_chat_template=chat, share_prefix=False)
    requests, visuals = pope_like(3)
    towers = []
    tower = shared.model.model.vision_tower
    hook = tower.register_forward_pre_hook(lambda module, args, kwargs: towers.append((args or [kwargs["pixel_values"]])[0].shape[0]), with_kwargs=True)
    got = [r.text for r in shared.generate_until(requests, visuals)]
    hook.remove()
    assert towers == [3]  # one pass of the vision tower, one image each, for 12 questions
    want = [alone.generate_until([r], [v])[0].text for r, v in zip(requests, visuals)]
    assert got == want
    unshared = [r.text for r in alone.generate_until(requests, visuals)]
    assert unshared == want


def test_different_images_never_share_a_prefix(tiny_llava_folder):
    shared = load(tiny_llava_folder)
    requests, visuals = pope_like(2, shares=False)  # no keys: only the rows of one document may share
    prompts = []
    hook = shared.model.register_forward_pre_hook(lambda module, args, kwargs: prompts.append(kwargs["input_ids"].shape), with_kwargs=True)
    got = [r.text for r in shared.generate_until(requests, visuals)]
    hook.remove()
    alone = load(tiny_llava_folder, share_prefix=False)
    assert got == [alone.generate_until([r], [v])[0].text for r, v in zip(requests, visuals)]
    assert prompts[0][0] == len(requests)  # no shared prefix forward: the first forward is the whole batch
