"""The Hub and the compile cache: upload artifacts, render model cards, reuse compiled artifacts.

Nothing here knows a model family: the family-specific parts (the card's usage section and
figures, the compile-cache key and its hit check) come from the family registry
(``optimum_npu.models.families``). ``optimum_npu.push_artifact`` puts them together. Pulling
needs nothing here: ``NPUModelForCausalLM.from_pretrained("org/repo")`` downloads the artifact
with ``huggingface_hub.snapshot_download`` and verifies it against its manifest.
"""

from optimum_npu.hub.cache import CompileCache, default_cache_dir
from optimum_npu.hub.cache_key import KEY_VERSION, CacheKey, compute_cache_key
from optimum_npu.hub.cached_compile import compile_with_cache
from optimum_npu.hub.card import CardSection, build_model_card
from optimum_npu.hub.push import HubPushError, upload_artifact

__all__ = ["CompileCache", "compile_with_cache", "default_cache_dir", "CacheKey", "compute_cache_key", "KEY_VERSION",
           "CardSection", "build_model_card", "HubPushError", "upload_artifact"]
