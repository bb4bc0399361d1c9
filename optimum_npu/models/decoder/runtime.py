"""Loading a compiled decoder onto its devices: the artifact's knobs and graphs are checked, the graphs
are loaded on a ``DeviceEngine``, and the HF-free runtime (block manager, step runner, batch session)
is built over them.

The artifact is untrusted: before anything is read or allocated, the graph list must be exactly the
graphs the knobs imply and the memory the knobs imply must fit one device; each graph's bucket
attributes and inputs must then match what the knobs imply (``check_graphs``) before device memory is
reserved.
"""

from __future__ import annotations

from pathlib import Path

from optimum_npu.compile.artifact import ArtifactError, read_graph
from optimum_npu.compile.quantize_kv import SCALE_DTYPE, scale_name
from optimum_npu.compile.weights import load_weights, stored_weight_bytes
from optimum_npu.device.buckets import BUCKET_KEYS
from optimum_npu.device.device import DeviceRegistry
from optimum_npu.device.engine import DeviceEngine
from optimum_npu.device.memory import format_bytes
from optimum_npu.device.profiler import Profiler
from optimum_npu.device.spec import NPUSpec
from optimum_npu.models.decoder.memory_plan import cache_shapes, kv_pool_bytes, plan_memory
from optimum_npu.models.decoder.npu_config import NPUConfigError, NPUDecoderConfig
from optimum_npu.models.decoder.stored_config import STORED_FIX, short_repr, stored_knob_error
from optimum_npu.models.decoder.quantization import kv_cache_dtype
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.runtime import BatchSession, BlockManager, NPUStats, StepRunner
from optimum_npu.schema import weights_file


class DecoderRuntime:
    """A compiled decoder loaded on its devices, with the host runtime over it.

    Args:
        root: the verified artifact directory.
        config: the compile configuration stored in the artifact (with runtime options applied).
        model: the normalised model config.
        spec: the target NPU spec.
        graph_names: graphs to load, as listed in the artifact (``config.buckets()`` names them).
        origin: the file the knobs came from (``.../npu_config.json``), named in errors.
        registry: the device registry the model's devices belong to (``DEFAULT_REGISTRY`` when None).
        profiler: the profiler its calls are recorded on (one is made when ``config.profile`` and none is given).

    Attributes:
        engine: the ``DeviceEngine`` holding the graphs, weights and KV cache.
        blocks: the ``BlockManager`` of the paged KV pool.
        runner: the ``StepRunner`` (prefill chunks and decode steps of sequences).
        batch: the ``BatchSession`` that ``generate()`` drives.
    """

    def __init__(self, root: Path, config: NPUDecoderConfig, model: DecoderModelConfig, spec: NPUSpec,
                 graph_names: list[str], origin: str = "npu_config.json", registry: DeviceRegistry | None = None,
                 profiler: Profiler | None = None):
        if config.enable_prefix_caching and model.has_sliding_layers:
            raise NPUConfigError("enable_prefix_caching=True is not supported for models with sliding-window "
                                 "layers; load with enable_prefix_caching=False")
        self.config = config
        self.model = model
        self.spec = spec
        check_knob_sizes(model, config, spec, origin)
        graph_names = check_graph_list(graph_names, config, origin)
        owner = f"{model.architecture} (max_seq_len={config.max_seq_len}, batch_size={config.batch_size})"
        graphs = {name: read_graph(root, name) for name in graph_names}
        check_graphs(graphs, config, model, origin)
        size = config.tensor_parallel_size
        if config.profile and profiler is None:
            profiler = Profiler()
        self.engine = DeviceEngine(
            graphs, spec, list(config.device_ids), config.dtype, owner=owner, collectives=config.collectives,
            weights=lambda rank: load_weights(root / weights_file(rank, size)),
            weight_bytes=lambda rank: stored_weight_bytes(root / weights_file(rank, size)),
            registry=registry, profiler=profiler, error=ArtifactError)
        self.profiler = profiler
        self.device = self.engine.devices[0]
        self.memory = self.engine.memory
        self.kv_pools = {pool: nbytes // config.tensor_parallel_size
                         for pool, nbytes in kv_pool_bytes(model, config).items()}
        self.blocks = BlockManager(config.kvcache_num_blocks, config.kvcache_block_size,
                                   config.enable_prefix_caching, max_sequences=config.batch_size)
        self.programs = self.engine.programs
        self.costs = self.engine.costs
        self.runner = StepRunner(self.engine, self.blocks, config.max_seq_len, config.blocks_per_sequence,
                                 self.new_stats)
        self.batch = BatchSession(self.runner)

    @property
    def stats(self) -> NPUStats:
        """The simulated figures of the last call (see ``StepRunner.reset_stats``)."""
        return self.runner.stats

    def new_stats(self) -> NPUStats:
        """Empty stats naming this model's devices, memory and KV pool."""
        devices = ", ".join(d.name.split(" ")[0] for d in self.engine.devices)
        return NPUStats(device=f"{devices} ({self.spec.name})" if len(self.engine.devices) > 1 else self.device.name,
                        spec=self.spec.name, memory=dict(self.memory), memory_capacity=self.device.memory.capacity,
                        kv_blocks_total=self.blocks.num_blocks, kv_pools=dict(self.kv_pools),
                        tensor_parallel_size=self.config.tensor_parallel_size)

    def release(self) -> None:
        """Frees this model's memory on its devices (also done when the runtime is garbage collected)."""
        self.engine.release()


def expected_graph_names(config: NPUDecoderConfig) -> list[str]:
    """The graphs the knobs imply: ``prefill`` and one ``decoder_batch_<n>`` per decode batch size."""
    return list(config.buckets())


def check_graph_list(names, config: NPUDecoderConfig, origin: str) -> list[str]:
    """The artifact's graph list, which must be exactly the graphs the knobs imply (bounded before any look)."""
    expected = expected_graph_names(config)
    if not isinstance(names, list):
        raise stored_knob_error(origin, f"graphs={short_repr(names)} must be a list of graph names")
    if len(names) != len(expected):
        raise stored_knob_error(origin, f"graphs lists {len(names)} graphs but the knobs (decoder_batch_sizes="
                                        f"{list(config.decoder_batch_sizes)}) imply exactly {len(expected)}: "
                                        f"{expected}")
    if any(not isinstance(name, str) for name in names) or len(set(names)) != len(names) or \
            set(names) != set(expected):
        raise stored_knob_error(origin, f"graphs={short_repr(names, 300)} must be exactly {expected} (each once), "
                                        f"as decoder_batch_sizes={list(config.decoder_batch_sizes)} implies")
    return expected


def check_knob_sizes(model: DecoderModelConfig, config: NPUDecoderConfig, spec: NPUSpec, origin: str) -> None:
    """Refuses knobs whose memory (from shapes alone, as the compile-time fit check) exceeds one device."""
    request = plan_memory(model, config)
    total = sum(request.values())
    if total <= spec.dram_bytes:
        return
    pools = {pool: nbytes // config.tensor_parallel_size for pool, nbytes in kv_pool_bytes(model, config).items()}
    device = f"one {spec.name!r} device has {format_bytes(spec.dram_bytes)}"
    if pools["paged"] >= max(pools["sliding"], request["weights"], request["workspace"]):
        message = (f"kvcache_num_blocks={config.kvcache_num_blocks} (blocks of kvcache_block_size="
                   f"{config.kvcache_block_size} tokens) needs {format_bytes(pools['paged'])} of KV cache per device")
    elif pools["sliding"] >= max(request["weights"], request["workspace"]):
        message = (f"batch_size={config.batch_size} needs {format_bytes(pools['sliding'])} of sliding-window rings "
                   "per device")
    else:
        message = (f"the knobs need {format_bytes(total)} per device ("
                   + ", ".join(f"{k} {format_bytes(v)}" for k, v in request.items()) + ")")
    raise ArtifactError(f"{origin}: {message} but {device}, and a compiled artifact always fits its device; "
                        f"{STORED_FIX}")


#: Per-graph inputs beyond the caches: name -> shape for a graph of ``batch`` rows of ``seq`` tokens.
def _expected_inputs(config: NPUDecoderConfig, model: DecoderModelConfig, batch: int, seq: int,
                     every_position: bool = False) -> dict:
    return {"input_ids": ((batch, seq), "int64"), "positions": ((batch, seq), "int64"),
            "block_table": ((batch, config.blocks_per_sequence), "int32"), "slots": ((batch,), "int64"),
            "logits_index": ((batch, seq) if every_position else (batch,), "int64"), "rope_positions": ((3, batch, seq), "int64"),
            "visual_embeds": ((batch, seq, model.hidden_size), config.dtype), "visual_mask": ((batch, seq), "bool"),
            "deepstack_embeds": ((model.deepstack_layers, batch, seq, model.hidden_size), config.dtype)}


REQUIRED_INPUTS = ("input_ids", "positions", "block_table", "slots", "logits_index")


def expected_caches(model: DecoderModelConfig, config: NPUDecoderConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) of every cache input of one rank: each layer's key and value cache, and their scales
    when the cache is fp8 (``quantization.kv_cache``)."""
    tp = config.tensor_parallel_size
    dtype = kv_cache_dtype(config.quantization, config.dtype)
    caches = {}
    for layer, shape in enumerate(cache_shapes(model, config)):
        shape = (shape[0], shape[1] // tp, *shape[2:])
        for name in (f"key_cache_{layer}", f"value_cache_{layer}"):
            caches[name] = (shape, dtype)
            if dtype != config.dtype:
                caches[scale_name(name)] = (shape[:-1], SCALE_DTYPE)
    return caches


def check_graphs(graphs: dict, config: NPUDecoderConfig, model: DecoderModelConfig, origin: str) -> None:
    """Each graph's inputs (tokens, positions, block table, KV caches) must have the shapes the knobs imply:
    prefill [1, prefill_chunk_size], decoder_batch_<n> [n, 1]; caches [num_blocks, kv_heads / tp, block, head_dim]
    or sliding rings [batch_size, kv_heads / tp, window, head_dim]; logits [batch, vocab_size]; and its bucket
    attributes (kind, batch, tokens) must be the ones the knobs give its name (``config.buckets()``)."""
    buckets = config.buckets()
    tp = config.tensor_parallel_size
    caches = expected_caches(model, config)
    for name, graph in graphs.items():
        where = f"graph {name!r} of the artifact"
        bucket = buckets[name]
        batch, seq = bucket.batch, bucket.tokens
        every_position = bucket.kind == "prefill_all"   # logits of every token: [batch, seq, vocab]
        expected = _expected_inputs(config, model, batch, seq, every_position)
        seen_caches = set()
        for spec in graph.inputs:
            if spec.kind == "kv_cache":
                want = caches.get(spec.name, (None, None))
                seen_caches.add(spec.name)
            elif spec.kind == "input":
                want = expected.get(spec.name, (None, None))
            else:
                continue
            if want[0] is None:
                raise ArtifactError(f"{where}: input {short_repr(spec.name)} ({spec.kind}) is not one this model's "
                                    f"graphs take; {STORED_FIX}")
            if tuple(spec.shape) != tuple(want[0]) or spec.dtype != want[1]:
                raise ArtifactError(
                    f"{where}: input {spec.name!r} is {short_repr(list(spec.shape))} {short_repr(spec.dtype)} but the "
                    f"knobs in {origin} (batch {batch} x {seq} tokens, max_seq_len={config.max_seq_len}, "
                    f"kvcache_num_blocks={config.kvcache_num_blocks}, kvcache_block_size={config.kvcache_block_size}, "
                    f"tensor_parallel_size={tp}, dtype={config.dtype}) imply {list(want[0])} {want[1]}; {STORED_FIX}")
        names = {spec.name for spec in graph.inputs}
        missing = [n for n in REQUIRED_INPUTS if n not in names] + sorted(set(caches) - seen_caches)
        if missing:
            raise ArtifactError(f"{where}: inputs {missing[:8]} are missing; {STORED_FIX}")
        described = {key: graph.attributes.get(key) for key in BUCKET_KEYS}
        if described != bucket.attributes():
            raise ArtifactError(f"{where}: its attributes describe the bucket {short_repr(described, 200)} but the "
                                f"knobs imply {bucket.attributes()}; {STORED_FIX}")
        for output in graph.outputs[:1]:  # the logits
            node = next((n for n in graph.nodes if n.name == output), None)
            shape = node.meta.get("shape") if node is not None and isinstance(node.meta, dict) else None
            want = (batch, seq, model.vocab_size) if every_position else (batch, model.vocab_size)
            if isinstance(shape, (list, tuple)) and tuple(shape) != want:
                raise ArtifactError(f"{where}: its logits are {short_repr(list(shape))} but config.json implies "
                                    f"{list(want)} (vocab_size={model.vocab_size}); {STORED_FIX}")
