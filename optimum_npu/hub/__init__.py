"""The Hub: push compiled artifacts with a model card, and the compile cache (local and on the Hub).

Pulling needs nothing here: ``NPUModelForCausalLM.from_pretrained("org/repo")`` downloads the
artifact with ``huggingface_hub.snapshot_download`` and verifies it against its manifest.
"""

from optimum_npu.hub.cache import CompileCache, compile_with_cache, default_cache_dir
from optimum_npu.hub.cache_key import KEY_VERSION, CacheKey, compute_cache_key
from optimum_npu.hub.card import build_model_card
from optimum_npu.hub.figures import measure_figures
from optimum_npu.hub.push import HubPushError, push_artifact

__all__ = ["CompileCache", "compile_with_cache", "default_cache_dir", "CacheKey", "compute_cache_key", "KEY_VERSION",
           "build_model_card", "measure_figures", "HubPushError", "push_artifact"]
