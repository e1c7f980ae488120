from lmm_lightning.models.base import EvalModule
from lmm_lightning.models.hf_causal import HFCausalLM

__all__ = ["EvalModule", "HFCausalLM"]
