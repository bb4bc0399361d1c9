"""Security (issue #9, items 4 and 7): an artifact's npu_config.json is untrusted input, and generate()
refuses token ids and masks the graphs cannot take.

Attacker model: whoever publishes a Hub repo controls every byte of the artifact and can re-sign the
manifest (``write_manifest(root)`` after editing). Each test builds one malicious artifact from a tiny
compiled model, loads it, and checks it is refused with a message that names the knob, the value and the
fix, before anything large is allocated.
"""

from __future__ import annotations

import copy
import gc
import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch

import optimum_npu.device.spec as spec_module
import optimum_npu.models.decoder.npu_config as npu_config_module
from optimum_npu import NPUModelForCausalLM
from optimum_npu.compile.artifact import graph_path, write_manifest
from optimum_npu.device.device import get_device
from optimum_npu.device.spec import PRESETS, NPUSpec
from optimum_npu.runtime import BlockManager, Sequence
from optimum_npu.models.tiny import save_causal_lm
from optimum_npu.schema import NPU_CONFIG_FILE

#: Tiny Llama: 2 layers, 2 kv heads, head_dim 16, vocab 259, max_position_embeddings 1024.
BASE = {"max_seq_len": 64, "batch_size": 2, "prefill_chunk_size": 16, "kvcache_block_size": 16}
VOCAB = 259
ATOM = PRESETS["atom"]


# ---- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny Llama compiled once for the module and saved (4 blocks per sequence, 8 blocks in the pool)."""
    checkpoint = save_causal_lm(tmp_path_factory.mktemp("hf") / "ckpt", "LlamaForCausalLM")
    model = NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config=BASE, compile_cache=False)
    target = tmp_path_factory.mktemp("saved") / "artifact"
    try:
        model.save_pretrained(target)
    finally:
        model.release()
    stored = json.loads((target / NPU_CONFIG_FILE).read_text())
    assert stored["kvcache_num_blocks"] == 8 and stored["graphs"] == ["prefill", "decoder_batch_1", "decoder_batch_2"]
    return target


@pytest.fixture
def copy_dir(saved, tmp_path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "evil"))


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def tamper(root: Path, **knobs) -> Path:
    """Sets npu_config.json keys and re-signs the manifest, as an attacker can."""
    edit_json(root / NPU_CONFIG_FILE, lambda data: data.update(knobs))
    write_manifest(root)
    return root


def device_used() -> int:
    gc.collect()
    return get_device(ATOM, 0).memory.used


def refused(root: Path, *fragments: str, error=ValueError, seconds: float = 30.0, **kwargs) -> str:
    """Loads ``root``, which must be refused with ``error`` naming every fragment; nothing stays reserved.

    ``seconds`` is a bound against work that grows faster than the input (a quadratic pass over 300k names takes
    hours), not a speed measurement: it is loose enough for a loaded 2-core machine."""
    before = device_used()
    start = time.perf_counter()
    model = None
    try:
        with pytest.raises(error) as err:
            model = NPUModelForCausalLM.from_pretrained(root, **kwargs)
    finally:
        if model is not None:
            model.release()
    elapsed = time.perf_counter() - start
    message = str(err.value)
    assert not isinstance(err.value, RecursionError)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert elapsed < seconds, f"refusal took {elapsed:.1f}s"
    assert device_used() == before
    return message


def set_kv_shape(root: Path, rows: int) -> None:
    """Gives every KV cache input of every graph ``rows`` blocks (graphs consistent with a matching knob)."""
    for name in json.loads((root / NPU_CONFIG_FILE).read_text())["graphs"]:
        def change(graph):
            for spec in graph["inputs"]:
                if spec["kind"] == "kv_cache":
                    spec["shape"][0] = rows
        edit_json(graph_path(root, name), change)


# ---- attacks on npu_config.json knobs ---------------------------------------------------------
def test_max_seq_len_larger_than_the_graphs_cache(copy_dir):
    # the graphs hold 4 blocks of 16 per sequence; a max_seq_len of 128 used to generate past them silently
    message = refused(tamper(copy_dir, max_seq_len=128), "max_seq_len=128", "'block_table'", "[1, 4]", "[1, 8]",
                      "recompile")
    assert "npu_config.json" in message


def test_max_seq_len_beyond_the_models_positions(copy_dir):
    refused(tamper(copy_dir, max_seq_len=2048, kvcache_num_blocks=256),
            "max_seq_len=2048 exceeds the model's max_position_embeddings=1024", "re-download")


def test_billion_kv_blocks_refused_before_any_allocation(copy_dir, monkeypatch):
    def no_zeros(*args, **kwargs):
        raise AssertionError("torch.zeros ran before the KV cache size was checked")

    tamper(copy_dir, kvcache_num_blocks=10**9)
    monkeypatch.setattr(torch, "zeros", no_zeros)
    message = refused(copy_dir, "kvcache_num_blocks=1000000000", "of KV cache per device", "TiB",
                      "one 'atom' device has", "re-download", seconds=1.0)
    assert "npu_config.json" in message


def test_kv_blocks_that_disagree_with_the_graphs(copy_dir):
    refused(tamper(copy_dir, kvcache_num_blocks=9), "'key_cache_0'", "[8, 2, 16, 16]", "[9, 2, 16, 16]",
            "kvcache_num_blocks=9")


def test_huge_consistent_kv_cache_with_a_forged_spec_is_bounded_by_host_memory(copy_dir, monkeypatch):
    # knobs, graphs and spec all agree on a 4 TiB cache: the host check refuses before torch.zeros
    def no_zeros(*args, **kwargs):
        raise AssertionError("torch.zeros ran for a cache larger than the host")

    set_kv_shape(copy_dir, 10**9)
    spec = ATOM.to_dict() | {"name": "forged", "dram_bytes": 10**18}
    tamper(copy_dir, kvcache_num_blocks=10**9, npu_spec=spec)
    monkeypatch.setattr(torch, "zeros", no_zeros)
    refused(copy_dir, "host memory", "KV cache", error=MemoryError, seconds=2.0)


def test_prefill_chunk_that_disagrees_with_the_prefill_graph(copy_dir):
    refused(tamper(copy_dir, prefill_chunk_size=32), "graph 'prefill'", "'input_ids'", "[1, 16]", "[1, 32]")


def test_decode_graph_whose_batch_disagrees_with_its_name(copy_dir):
    # decoder_batch_2.graph.json replaced by the batch-1 graph: inputs [1, 1] where [2, 1] is implied
    graph = json.loads(graph_path(copy_dir, "decoder_batch_1").read_text())
    graph["name"] = "decoder_batch_2"
    graph_path(copy_dir, "decoder_batch_2").write_text(json.dumps(graph))
    write_manifest(copy_dir)
    refused(copy_dir, "graph 'decoder_batch_2'", "[1, 1]", "[2, 1]")


@pytest.mark.parametrize("count", [10**6, 300_000])
def test_huge_graph_lists_refused_quickly(copy_dir, count):
    # 10**6 names exceed the size bound of npu_config.json; 300k fit in it and reach the graph list check
    message = refused(tamper(copy_dir, graphs=["prefill"] * count))
    assert "graphs" in message or "over the limit" in message


def test_duplicate_graph_names(copy_dir):
    refused(tamper(copy_dir, graphs=["prefill", "prefill", "decoder_batch_1"]), "graphs=", "each once",
            "decoder_batch_sizes=[1, 2]")


def test_graph_list_with_an_extra_graph(copy_dir):
    names = ["prefill", "decoder_batch_1", "decoder_batch_2"]
    graph_path(copy_dir, "decoder_batch_3").write_text(graph_path(copy_dir, "decoder_batch_2").read_text())
    refused(tamper(copy_dir, graphs=names + ["decoder_batch_3"]), "graphs lists 4 graphs", "exactly 3")


def test_graph_list_missing_a_decode_graph(copy_dir):
    refused(tamper(copy_dir, graphs=["prefill", "decoder_batch_1"]), "graphs lists 2 graphs",
            "decoder_batch_2")


def test_deeply_nested_npu_config_is_a_clean_error(copy_dir):
    text = (copy_dir / NPU_CONFIG_FILE).read_text()
    deep = "[" * 200_000 + "]" * 200_000
    (copy_dir / NPU_CONFIG_FILE).write_text(text.replace('"max_seq_len": 64', f'"max_seq_len": {deep}'))
    write_manifest(copy_dir)
    message = refused(copy_dir)
    assert "deep" in message or "nested" in message


def test_moderately_nested_knob_is_refused_by_type(copy_dir):
    nested = 1
    for _ in range(20):
        nested = [nested]
    message = refused(tamper(copy_dir, max_seq_len=nested), "max_seq_len")
    assert "integer" in message or "nested" in message


@pytest.mark.parametrize(("knob", "value", "fragment"), [
    ("batch_size", True, "batch_size=True"),
    ("max_seq_len", "64", "max_seq_len='64' must be an integer"),
    ("max_seq_len", 64.0, "max_seq_len=64.0 must be an integer"),
    ("kvcache_num_blocks", None, "kvcache_num_blocks=None"),
    ("kvcache_num_blocks", -8, "kvcache_num_blocks=-8"),
    ("kvcache_block_size", 0, "kvcache_block_size=0"),
    ("prefill_chunk_size", None, "prefill_chunk_size=None"),
    ("tensor_parallel_size", 0, "tensor_parallel_size"),
    ("tensor_parallel_size", False, "tensor_parallel_size"),
    ("dtype", "float64", "dtype='float64' is not supported"),
    ("dtype", None, "dtype=None"),
    ("attn_impl", "evil", "attn_impl='evil' is not supported"),
    ("kvcache_partition_len", 16, "kvcache_partition_len=16 only applies to attn_impl='flash_attn'"),
    ("decoder_batch_sizes", [1, 1, 2], "has duplicates"),
    ("decoder_batch_sizes", [1, True], "decoder_batch_sizes entry=True"),
    ("decoder_batch_sizes", "12", "must be a list of batch sizes"),
    ("enable_prefix_caching", "yes", "enable_prefix_caching='yes' must be True or False"),
    ("profile", 1, "profile=1 must be True or False"),
    ("npu", ["atom"], "npu=['atom']"),
    ("npu", "x" * 5000, "printable string of at most 4096"),
    ("collectives", "os.system", "collectives='os.system' is not supported"),
])
def test_stored_knob_types_and_ranges(copy_dir, knob, value, fragment):
    message = refused(tamper(copy_dir, **{knob: value}), fragment, "npu_config.json", "re-download")
    assert knob in message


def test_missing_knob(copy_dir):
    edit_json(copy_dir / NPU_CONFIG_FILE, lambda data: data.pop("kvcache_block_size"))
    write_manifest(copy_dir)
    refused(copy_dir, "['kvcache_block_size'] are missing")


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("dram_bandwidth", math.nan, "dram_bandwidth=nan must be a positive number"),
    ("dram_bytes", math.inf, "dram_bytes=inf must be a positive number"),
    ("dram_bytes", -1, "dram_bytes=-1 must be a positive number"),
    ("host_link_bandwidth", 0, "host_link_bandwidth=0 must be a positive number"),
    ("devices_per_node", True, "devices_per_node=True must be a positive number"),
    ("devices_per_node", 2.5, "devices_per_node=2.5 must be a whole number"),
    ("link_latency_s", "0", "link_latency_s='0' must be a number >= 0"),
    ("peak_flops", {"float16": 1e13, "float32": math.nan}, "peak_flops['float32']=nan"),
    ("name", 7, "name=7 must be a non-empty string"),
])
def test_stored_npu_spec_figures(copy_dir, field, value, fragment):
    spec = ATOM.to_dict() | {field: value}
    refused(tamper(copy_dir, npu_spec=spec), fragment, "npu_spec", "re-download")


def test_npu_spec_from_dict_refuses_non_finite_and_wrong_types():
    for field, value in (("dram_bandwidth", math.inf), ("sram_bytes", math.nan), ("dram_bytes", "16e9"),
                         ("devices_per_node", False)):
        with pytest.raises(ValueError, match=field):
            NPUSpec.from_dict(ATOM.to_dict() | {field: value})
    with pytest.raises(ValueError, match="must be a JSON object"):
        NPUSpec.from_dict(["atom"])


def test_stored_npu_is_never_used_as_a_file_path(copy_dir, tmp_path, monkeypatch):
    # the artifact names a spec file that exists here with other figures: loading must use only npu_spec
    planted = tmp_path / "planted-spec.json"
    planted.write_text(json.dumps(ATOM.to_dict() | {"name": "planted", "dram_bytes": 1}))

    def no_resolve(name):
        raise AssertionError(f"resolve_spec({name!r}) was called at load")

    monkeypatch.setattr(spec_module, "resolve_spec", no_resolve)
    monkeypatch.setattr(npu_config_module, "resolve_spec", no_resolve)
    model = NPUModelForCausalLM.from_pretrained(tamper(copy_dir, npu=str(planted)))
    try:
        assert model.npu_stats.spec == "atom"
        assert model.npu_config.npu == str(planted)
    finally:
        model.release()


@pytest.mark.parametrize(("change", "fragment"), [
    ({"architecture": "__import__"}, "architecture='__import__' is not a supported decoder architecture"),
    ({"architecture": "Qwen2VLForConditionalGeneration"}, "is not a supported decoder architecture"),
    ({"architecture": "MistralForCausalLM"}, "architecture='MistralForCausalLM' differs from config.json"),
    ({"family": "os"}, "family='os' must be 'decoder'"),
])
def test_architecture_and_family_are_registry_keys(copy_dir, change, fragment):
    refused(tamper(copy_dir, **change), fragment)


def test_auto_class_refuses_an_unknown_family(copy_dir):
    from optimum_npu.models.auto import NPUAutoModel

    tamper(copy_dir, family="../../evil")
    with pytest.raises(ValueError, match="family='../../evil' is not one of"):
        NPUAutoModel.from_pretrained(copy_dir)


def test_config_json_with_a_billion_layers(copy_dir):
    edit_json(copy_dir / "config.json", lambda data: data.update(num_hidden_layers=10**9))
    write_manifest(copy_dir)
    refused(copy_dir, "num_hidden_layers=1000000000", "config.json", seconds=2.0)


def test_config_json_with_kv_heads_that_disagree_with_the_graphs(copy_dir):
    edit_json(copy_dir / "config.json", lambda data: data.update(num_key_value_heads=4))
    write_manifest(copy_dir)
    refused(copy_dir, "'key_cache_0'", "[8, 2, 16, 16]", "[8, 4, 16, 16]")


def test_config_json_vocab_that_disagrees_with_the_logits(copy_dir):
    edit_json(copy_dir / "config.json", lambda data: data.update(vocab_size=10_000))
    write_manifest(copy_dir)
    refused(copy_dir, "logits are [1, 259]", "vocab_size=10000")


def test_block_manager_does_not_allocate_per_block():
    start = time.perf_counter()
    manager = BlockManager(num_blocks=10**12, block_size=16, enable_prefix_caching=False)
    first = Sequence(0, list(range(40)))
    manager.allocate(first)
    assert manager.tables[0] == [0, 1, 2] and manager.used_blocks == 3
    manager.free(first)
    manager.allocate(Sequence(1, list(range(20))))
    assert manager.tables[1] == [0, 1]
    assert time.perf_counter() - start < 0.5


def test_untampered_artifact_still_loads_and_generates(saved):
    model = NPUModelForCausalLM.from_pretrained(saved)
    try:
        out = model.generate(torch.tensor([[1, 40, 41, 42]]), max_new_tokens=4, do_sample=False)
        assert out.shape == (1, 8)
    finally:
        model.release()


# ---- generate() input checks ------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(saved):
    loaded = NPUModelForCausalLM.from_pretrained(saved)
    yield loaded
    loaded.release()


IDS = torch.tensor([[1, 40, 41, 42], [1, 50, 51, 52]])


@pytest.mark.parametrize(("input_ids", "mask", "fragments"), [
    (IDS, torch.ones(1, 4, dtype=torch.long), ["attention_mask has shape [1, 4]", "input_ids has shape [2, 4]"]),
    (IDS, torch.ones(2, 5, dtype=torch.long), ["attention_mask has shape [2, 5]"]),
    (IDS.float(), None, ["integer token ids", "torch.float32"]),
    (IDS.bool(), None, ["integer token ids", "torch.bool"]),
    (torch.tensor([[1, 40, -3, 42]]), None, ["input_ids[0, 2]=-3", f"[0, {VOCAB - 1}]"]),
    (torch.tensor([[1, 40, VOCAB, 42]]), None, [f"input_ids[0, 2]={VOCAB}", f"vocab_size={VOCAB}"]),
    (IDS, torch.tensor([[1, 1, 1, 2], [1, 1, 1, 1]]), ["only 0 (padding) and 1 (token)"]),
    (IDS, torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]), ["row 0 of attention_mask is all 0"]),
    (torch.zeros(1, 0, dtype=torch.long), None, ["is empty"]),
])
def test_generate_refuses_bad_inputs(model, no_graph_runs, input_ids, mask, fragments):
    kwargs = {} if mask is None else {"attention_mask": mask}
    with pytest.raises(ValueError) as err:
        model.generate(input_ids, max_new_tokens=2, do_sample=False, **kwargs)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert no_graph_runs == []


@pytest.mark.parametrize(("input_ids", "mask", "fragment"), [
    (IDS, torch.ones(1, 4, dtype=torch.long), "attention_mask has shape [1, 4]"),
    (IDS.float(), None, "integer token ids"),
    (torch.tensor([[1, 40, VOCAB + 7, 42]]), None, f"={VOCAB + 7} is not a token id"),
])
def test_forward_refuses_bad_inputs(model, no_graph_runs, input_ids, mask, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        model(input_ids=input_ids, attention_mask=mask)
    assert no_graph_runs == []


def test_forward_decode_refuses_an_out_of_vocabulary_token(model, no_graph_runs):
    with pytest.raises(ValueError, match="is not a token id"):
        model(input_ids=torch.tensor([[1, 2, -1]]), npu_phase="decode")
    assert no_graph_runs == []


def test_valid_masked_batch_still_generates(model):
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    out = model.generate(IDS, attention_mask=mask, max_new_tokens=2, do_sample=False)
    assert out.shape == (2, 6)
    assert out.dtype == torch.long and int(out.max()) < VOCAB
    assert copy.deepcopy(out).shape == out.shape
