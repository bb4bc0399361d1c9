"""A graph file is data, never code: each attack of the security review, built as an attacker
would (edit a graph of a real compiled artifact, re-sign the manifest), is refused before any
code runs, and a fuzzer finds no mutation that escapes validation or leaks a raw exception."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.compile.artifact import write_manifest
from optimum_npu.compile.weights import load_weights
from optimum_npu.device.executor import Program
from optimum_npu.models.tiny import save_causal_lm
from optimum_npu.schema import ALLOWED_OPS, ALLOWED_STRINGS, Graph, GraphFormatError
from tampering import edit_graph

BASE = {"max_seq_len": 32, "batch_size": 2, "prefill_chunk_size": 8}
PROMPT = torch.tensor([[1, 40, 41, 42, 43]])


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    checkpoint = save_causal_lm(tmp_path_factory.mktemp("hf") / "ckpt", "LlamaForCausalLM")
    model = NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config=BASE)
    saved = tmp_path_factory.mktemp("saved") / "artifact"
    try:
        model.save_pretrained(saved)
    finally:
        model.release()
    return saved


@pytest.fixture
def attack(saved, tmp_path, monkeypatch):
    """(copy of the artifact, marker path that a successful attack would create); cwd is a scratch dir."""
    copy = Path(shutil.copytree(saved, tmp_path / "copy"))
    marker = tmp_path / "PWNED"
    monkeypatch.chdir(tmp_path)
    return copy, marker


def load_and_generate(root: Path):
    model = NPUModelForCausalLM.from_pretrained(root)
    try:
        return model.generate(PROMPT, max_new_tokens=2, do_sample=False)
    finally:
        model.release()


def first_node_with_args(doc: dict) -> dict:
    return next(n for n in doc["nodes"] if n["op"] == "aten.linear.default")


# ---- 1. code execution through keyword-argument names -----------------------------------------
def shell(marker: Path) -> str:
    return f"__import__('os').system('touch {marker}')"


def test_kwarg_name_with_python_source_is_refused(attack):
    copy, marker = attack
    payload = f'")\n{shell(marker)}\ndict(z'

    edit_graph(copy, "decoder_batch_1", lambda doc: first_node_with_args(doc)["kwargs"].update({payload: 1}))
    with pytest.raises(GraphFormatError) as err:
        load_and_generate(copy)
    assert "keyword argument" in str(err.value) and "is not an argument of this operator" in str(err.value)
    assert "aten.linear.default" in str(err.value)
    assert not marker.exists()


def test_kwarg_that_is_a_real_argument_of_another_op_is_refused(attack):
    copy, marker = attack
    edit_graph(copy, "prefill", lambda doc: first_node_with_args(doc)["kwargs"].update({"approximate": "tanh"}))
    with pytest.raises(GraphFormatError, match=r"keyword argument 'approximate' is not an argument"):
        load_and_generate(copy)


@pytest.mark.parametrize("field", ["node", "input", "output", "ref"])
def test_names_with_python_source_are_refused(attack, field):
    copy, marker = attack
    payload = f"x; {shell(marker)}"

    def edit(doc):
        if field == "node":
            doc["nodes"][3]["name"] = payload
        elif field == "input":
            doc["inputs"][0]["name"] = payload
        elif field == "output":
            doc["outputs"][0] = payload
        else:
            first_node_with_args(doc)["args"][0] = {"ref": payload}

    edit_graph(copy, "prefill", edit)
    with pytest.raises(GraphFormatError) as err:
        load_and_generate(copy)
    assert payload[:20] in str(err.value) or "not defined" in str(err.value) or "undefined" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["class", "__init__", "__builtins__", "None", "x-y", "1abc", "a" * 300, ""])
def test_keywords_dunders_and_non_identifiers_are_not_names(attack, name):
    copy, _ = attack
    edit_graph(copy, "prefill", lambda doc: doc["nodes"][2].update(name=name))
    with pytest.raises(GraphFormatError, match="names are identifiers"):
        NPUModelForCausalLM.from_pretrained(copy)


def test_string_arguments_are_limited_to_the_allowed_set(attack):
    copy, marker = attack
    edit_graph(copy, "prefill", lambda doc: first_node_with_args(doc)["args"].append(shell(marker)))
    with pytest.raises(GraphFormatError, match="string argument .* is not allowed"):
        load_and_generate(copy)
    assert not marker.exists()


# ---- 2. file, process, storage and random-state operators -------------------------------------
FORBIDDEN = ["aten.from_file.default", "aten.set_.source_Storage", "aten.set_.source_Storage_storage_offset",
             "aten._local_scalar_dense.default", "aten.normal_.default", "aten.bernoulli_.float",
             "aten.uniform_.default", "aten.random_.default", "aten.empty_strided.default", "aten.as_strided.default",
             "aten.save.default", "aten.item.default", "aten.resize_.default",
             "aten._make_per_tensor_quantized_tensor.default", "aten.rand.default", "aten.seed.default"]


def test_no_dangerous_operator_is_in_the_allow_list():
    dangerous = ("from_file", "storage", "set_", "_local_scalar_dense", "item", "rand", "normal", "bernoulli",
                 "uniform", "random", "seed", "dropout", "multinomial", "exponential", "as_strided", "resize",
                 "from_blob", "data_ptr", "save", "load", "_unsafe", "empty", "index_put", "_foreach")
    offenders = [op for op in ALLOWED_OPS if op != "getitem" and any(word in op.split(".")[1] for word in dangerous)]
    assert offenders == []
    assert all(op == "getitem" or op.split(".")[0] in ("aten", "npu") for op in ALLOWED_OPS)
    assert all("__" not in op and not op.split(".")[-1].startswith("_") for op in ALLOWED_OPS)


@pytest.mark.parametrize("op", FORBIDDEN)
def test_file_storage_and_random_operators_are_refused(attack, op):
    copy, marker = attack

    def edit(doc):
        node = first_node_with_args(doc)
        node["op"] = op
        node["args"] = [str(marker) if False else 0, True, 4096]
        node["kwargs"] = {}

    edit_graph(copy, "prefill", edit)
    with pytest.raises(GraphFormatError, match="is not allowed in a graph"):
        load_and_generate(copy)
    assert not marker.exists()


def test_from_file_cannot_write_a_pth_file(attack, tmp_path):
    """The reported attack: a graph writing into a directory through aten.from_file."""
    copy, marker = attack
    site = tmp_path / "site-packages"
    site.mkdir()

    def edit(doc):
        node = first_node_with_args(doc)
        node.update(op="aten.from_file.default", args=[], kwargs={"filename": str(site / "evil.pth"),
                                                                 "shared": True, "size": 64})

    edit_graph(copy, "prefill", edit)
    with pytest.raises(GraphFormatError):
        load_and_generate(copy)
    assert list(site.iterdir()) == []


# ---- 3. attribute traversal --------------------------------------------------------------------
TRAVERSALS = ["aten.__init__.__globals__", "aten.__class__.__base__", "npu.__dict__.get", "aten.mm.__func__",
              "aten.linear.default.__globals__", "getitem.__self__", "__builtins__.eval", "aten._ops.default",
              "torch.ops.aten.mm", "builtins.exec.default", "os.system.default", "aten.linear", "aten.linear.Tensor",
              "npu.paged_attention._op", "aten.mm.default ", "ATEN.mm.default"]


@pytest.mark.parametrize("op", TRAVERSALS)
def test_attribute_traversal_strings_are_refused(attack, op):
    copy, _ = attack
    edit_graph(copy, "decoder_batch_1", lambda doc: first_node_with_args(doc).update(op=op))
    with pytest.raises(GraphFormatError, match="not in the operator allow-list"):
        NPUModelForCausalLM.from_pretrained(copy)


def test_every_allowed_op_is_a_plain_torch_operator():
    from optimum_npu.device.executor import resolve_op

    for op in ALLOWED_OPS:
        fn = resolve_op(op, {})
        assert op == "getitem" or isinstance(fn, torch._ops.OpOverload), op


def test_allowed_keyword_names_are_in_each_operators_schema():
    import optimum_npu.device.kernels  # noqa: F401  (registers the npu operators)
    from optimum_npu.device.executor import resolve_op

    for op, names in ALLOWED_OPS.items():
        if op == "getitem":
            assert names == ()
            continue
        schema_names = {argument.name for argument in resolve_op(op, {})._schema.arguments}
        assert set(names) <= schema_names, (op, set(names) - schema_names)


# ---- 7 (graph part). bounded documents --------------------------------------------------------
def test_deeply_nested_graph_is_refused_before_parsing(attack):
    copy, _ = attack
    path = copy / "graphs" / "prefill.graph.json"
    doc = json.loads(path.read_text())
    text = json.dumps(doc)[:-1] + ', "attributes": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path.write_text(text)
    write_manifest(copy)
    with pytest.raises(GraphFormatError, match="nested 10000[01] levels deep"):
        NPUModelForCausalLM.from_pretrained(copy)


def test_graph_with_too_many_nodes_is_refused_before_building(attack, monkeypatch):
    import optimum_npu.schema_checks as checks

    copy, _ = attack
    monkeypatch.setattr(checks, "MAX_GRAPH_NODES", 50)  # the real bound (200k nodes) is a 100 MB file
    with pytest.raises(GraphFormatError, match="over the limits of 50"):
        NPUModelForCausalLM.from_pretrained(copy)


# ---- fuzzing ------------------------------------------------------------------------------------
def _mutations(rng: random.Random, marker: Path):
    """A stream of (description, edit) pairs that damage a graph document in varied ways."""
    evil_strings = [f"__import__('os').system('touch {marker}')", "aten.from_file.default", "__globals__",
                    "../../../etc/passwd", "\x00", "class", "a" * 1000, str(marker), "tanh", "float32"]
    evil_values = [None, True, -1, 0, 2**62, 2**70, 1e308, float("nan"), [], [[[]]], {}, {"ref": "nope"},
                   {"dtype": "float80"}, {"float": "1e9"}, {"layout": "sparse_coo"}, {"a": 1, "b": 2}, "tanh",
                   evil_strings[0]]

    def pick_node(doc):
        return rng.choice(doc["nodes"])

    def mutate_name(doc):
        target = rng.choice(["node", "input", "output"])
        value = rng.choice(evil_strings + ["ok_name", "x"])
        if target == "node":
            pick_node(doc)["name"] = value
        elif target == "input":
            rng.choice(doc["inputs"])["name"] = value
        else:
            doc["outputs"][0] = value

    def mutate_op(doc):
        pick_node(doc)["op"] = rng.choice(evil_strings + list(ALLOWED_OPS) + ["aten.mm.default.__call__"])

    def mutate_kwargs(doc):
        node = pick_node(doc)
        node["kwargs"][rng.choice(evil_strings + ["dtype", "approximate", "device"])] = rng.choice(evil_values)

    def mutate_arg(doc):
        node = pick_node(doc)
        if node["args"]:
            node["args"][rng.randrange(len(node["args"]))] = rng.choice(evil_values)
        else:
            node["args"].append(rng.choice(evil_values))

    def mutate_shape(doc):
        spec = rng.choice(doc["inputs"])
        spec["shape"] = rng.choice([[], [0], [-1], [2**41], [1] * 9, ["3"], [1.5], [2, 2], spec["shape"][::-1]])

    def mutate_meta(doc):
        pick_node(doc)["meta"] = rng.choice([{}, {"shape": [-1], "dtype": "float32"}, {"shape": [1]},
                                             {"tuple": [{}] * 3}, {"evil": 1}, {"placement": "moon"}, []])

    def mutate_structure(doc):
        key = rng.choice(["nodes", "inputs", "outputs", "attributes", "mutated_inputs", "name", "format_version"])
        doc[key] = rng.choice(evil_values + [[{}], {"x": [1]}, "prefill", "../x"])

    def swap_nodes(doc):
        i, j = rng.randrange(len(doc["nodes"])), rng.randrange(len(doc["nodes"]))
        doc["nodes"][i], doc["nodes"][j] = doc["nodes"][j], doc["nodes"][i]

    def nest(doc):
        node = pick_node(doc)
        node["args"] = [node["args"]] * rng.randint(1, 3)

    kinds = [mutate_name, mutate_op, mutate_kwargs, mutate_arg, mutate_shape, mutate_meta, mutate_structure,
             swap_nodes, nest]
    while True:
        edits = [rng.choice(kinds) for _ in range(rng.randint(1, 3))]
        yield "+".join(e.__name__ for e in edits), edits


def _run_graph(graph: Graph, weights: dict) -> None:
    """Runs a graph that passed validation on small real inputs (sizes bounded like the device does)."""
    tensors = []
    for spec in graph.inputs:
        if spec.kind == "weight":
            tensor = weights.get(spec.source)
            if tensor is None or tuple(tensor.shape) != spec.shape:
                return  # the loader refuses unknown or reshaped weights (ArtifactError) before running
            tensors.append(tensor)
        else:
            if torch.Size(spec.shape).numel() > 1 << 22:
                return  # the device refuses a reservation this large before allocating
            tensors.append(torch.zeros(spec.shape, dtype=getattr(torch, spec.dtype)))
    Program(graph)(*tensors)


def test_fuzzed_graphs_are_refused_or_harmless(saved, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    weights = load_weights(saved / "model.safetensors")
    original = json.loads((saved / "graphs" / "decoder_batch_1.graph.json").read_text())
    rng = random.Random(1234)
    stream = _mutations(rng, marker)
    outcomes = {"refused": 0, "ran": 0, "failed cleanly": 0}
    for _ in range(300):
        description, edits = next(stream)
        doc = json.loads(json.dumps(original))
        for edit in edits:
            try:
                edit(doc)
            except (TypeError, KeyError, IndexError, AttributeError):
                pass  # an earlier edit made this one inapplicable
        try:
            text = json.dumps(doc)
        except ValueError:
            continue
        try:
            graph = Graph.from_json(text)
        except GraphFormatError:
            outcomes["refused"] += 1
            continue
        except Exception as err:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{description}: validation leaked {type(err).__name__}: {err}")
        try:
            _run_graph(graph, weights)
            outcomes["ran"] += 1
        except Exception as err:  # noqa: BLE001
            if not type(err).__module__.startswith("optimum_npu"):
                pytest.fail(f"{description}: running leaked {type(err).__module__}.{type(err).__name__}: {err}")
            outcomes["failed cleanly"] += 1
        assert not marker.exists(), description
    assert sorted(os.listdir(tmp_path)) == []
    assert outcomes["refused"] > 150 and outcomes["ran"] > 5, outcomes
    assert ALLOWED_STRINGS  # the fuzzer's string pool covers the allowed strings too


def test_stored_shapes_are_proved_at_load(attack):
    """A graph that under-declares a node's size (to dodge the workspace reservation) is refused."""
    copy, _ = attack

    def edit(doc):
        node = first_node_with_args(doc)
        node["meta"] = {"shape": [1, 1], "dtype": node["meta"]["dtype"]}

    edit_graph(copy, "prefill", edit)
    with pytest.raises(GraphFormatError, match=r"declares .* but computes"):
        NPUModelForCausalLM.from_pretrained(copy)


def test_a_proven_graph_vouches_only_for_its_own_bytes(attack):
    """Loading proves each graph once per process (keyed by the file's sha256): the same name with other bytes,
    even after the original was proven, is proven again and refused."""
    from optimum_npu.compile.artifact import read_graph

    copy, _ = attack
    read_graph(copy, "decoder_batch_1")  # proven (or already proven by the export's load)

    def edit(doc):
        node = first_node_with_args(doc)
        node["meta"] = {"shape": [1, 1], "dtype": node["meta"]["dtype"]}

    edit_graph(copy, "decoder_batch_1", edit)
    with pytest.raises(GraphFormatError, match=r"declares .* but computes"):
        read_graph(copy, "decoder_batch_1")


def test_graph_file_holding_another_graph_is_refused(attack):
    copy, _ = attack
    shutil.copy(copy / "graphs" / "decoder_batch_2.graph.json", copy / "graphs" / "decoder_batch_1.graph.json")
    write_manifest(copy)
    with pytest.raises(ValueError, match="holds graph 'decoder_batch_2', not 'decoder_batch_1'"):
        NPUModelForCausalLM.from_pretrained(copy)
