from lmm_lightning.models.base import EvalModule
from lmm_lightning.models.hf_causal import HFCausalLM
from lmm_lightning.models.hf_vision import HFVisionLM
from lmm_lightning.models.openai_api import OpenAIModel

__all__ = ["EvalModule", "HFCausalLM", "HFVisionLM", "OpenAIModel"]
