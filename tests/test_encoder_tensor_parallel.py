"""Text encoders split over two devices (``tensor_parallel_size=2``) give the one-device outputs."""

from __future__ import annotations

import pytest
import torch

from optimum_npu import NPUEncoderModel
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.schema import ALL_REDUCE
from encoder_fixtures import GRID, SMALL_GRID
from test_encoders import assert_same_outputs, random_batch


@pytest.mark.parametrize("architecture", ["BertModel",
                                          pytest.param("DistilBertForQuestionAnswering", marks=pytest.mark.slow)])
def test_tensor_parallel_2_equals_one_device(encoders, architecture, tmp_path):
    one, _, root = encoders[architecture]
    grid = GRID if architecture == "BertModel" else SMALL_GRID
    two = NPUEncoderModel.from_pretrained(root.parent / "hf", export=True, compile_cache=False,
                                          npu_config={**grid, "tensor_parallel_size": 2, "device": 2})
    try:
        two.save_pretrained(tmp_path / "tp2")
        assert sorted(p.name for p in (tmp_path / "tp2").glob("*.safetensors")) == [
            "model-tp0-of-2.safetensors", "model-tp1-of-2.safetensors"]
        engine = two._runtime.engine
        assert [device.name.split()[0] for device in engine.devices] == ["npu:2", "npu:3"]
        graph = engine.graphs[two.npu_graphs[0]]
        assert sum(node.op == ALL_REDUCE for node in graph.nodes) == 2 * 2   # attention output + FFN, 2 layers
        assert engine.memory["weights"] < one._runtime.engine.memory["weights"]   # each device holds its shard
        for rows, width in ((1, 5), (3, 12), (6, 30)):
            batch = random_batch(rows, width, seed=rows * width)
            if "DistilBert" in architecture:
                batch.pop("token_type_ids")
            assert_same_outputs(two(**batch), one(**batch), batch["attention_mask"], atol=1e-5)
    finally:
        two.release()


def test_tensor_parallelism_is_refused_where_it_is_not_compiled(tmp_path):
    from optimum_npu import NPUModelForImageClassification
    from optimum_npu.models.encoder.tiny_vision import save_vision

    checkpoint = save_vision("ResNetForImageClassification", tmp_path / "hf")
    with pytest.raises(NPUConfigError, match="tensor_parallel_size=2: vision encoders run on one device"):
        NPUModelForImageClassification.from_pretrained(checkpoint, export=True, compile_cache=False,
                                                       npu_config={"tensor_parallel_size": 2})
