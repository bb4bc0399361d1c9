"""HF-free host runtime: sequences, the KV block manager, the step runner, the sampler and stats.

It imports only ``device`` and ``schema`` (never ``models`` or transformers): a server, an offline
API and ``NPUModelForCausalLM.generate()`` are all clients of it.
"""

from optimum_npu.runtime.block_manager import BlockManager, KVCacheFullError
from optimum_npu.runtime.runner import StepRunner
from optimum_npu.runtime.sampler import Sampler
from optimum_npu.runtime.sequence import SamplingParams, Sequence, SequenceStatus
from optimum_npu.runtime.session import BatchSession
from optimum_npu.runtime.stats import NPUStats, StepRecord

__all__ = ["BatchSession", "BlockManager", "KVCacheFullError", "NPUStats", "Sampler", "SamplingParams", "Sequence",
           "SequenceStatus", "StepRecord", "StepRunner"]
