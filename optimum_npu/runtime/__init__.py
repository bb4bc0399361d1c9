"""HF-free host runtime: sequences, the KV block manager, the step runner, the sampler, stats and
the continuous-batching scheduler.

It imports only ``device`` and ``schema`` (never ``models`` or transformers): a server, an offline
API and ``NPUModelForCausalLM.generate()`` are all clients of it.
"""

from optimum_npu.runtime.block_manager import BlockManager, KVCacheFullError
from optimum_npu.runtime.request import Request, RequestTooLongError
from optimum_npu.runtime.runner import StepRunner
from optimum_npu.runtime.sampler import Sampler
from optimum_npu.runtime.scheduler import Scheduler
from optimum_npu.runtime.scheduler_stats import SchedulerStats
from optimum_npu.runtime.sequence import SamplingParams, Sequence, SequenceStatus
from optimum_npu.runtime.session import BatchSession
from optimum_npu.runtime.stats import NPUStats, StepRecord

__all__ = ["BatchSession", "BlockManager", "KVCacheFullError", "NPUStats", "Request", "RequestTooLongError", "Sampler",
           "SamplingParams", "Scheduler", "SchedulerStats", "Sequence", "SequenceStatus", "StepRecord", "StepRunner"]
