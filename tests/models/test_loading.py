"""models/loading.py: the `from_pretrained` options of the text and the vision model, checked before any weights load."""

import doctest
from types import SimpleNamespace

import pytest
import torch

import lmm_lightning.models.loading as loading
from lmm_lightning.errors import InputError
from lmm_lightning.models.loading import pretrained_options, torch_dtype


def test_docstring_examples_run():
    results = doctest.testmod(loading)
    assert results.attempted > 0 and results.failed == 0


def test_options_name_the_dtype_and_only_a_chosen_attention(tiny_model):
    hparams = SimpleNamespace(pretrained=str(tiny_model), dtype="float16", trust_remote_code=False, attn_implementation=None)
    assert pretrained_options(hparams) == (str(tiny_model), {"dtype": torch.float16, "trust_remote_code": False})
    hparams.attn_implementation = "eager"
    assert pretrained_options(hparams)[1]["attn_implementation"] == "eager"
    with pytest.raises(InputError, match=r"model.dtype: expected one of \['bfloat16', 'float16', 'float32'\], got 'float8'"):
        torch_dtype("float8")
