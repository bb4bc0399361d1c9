"""Encoder family: parity with eager Transformers per task and bucket, padding, splitting, refusals, artifacts."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import transformers

from optimum_npu import (NPUAutoModel, NPUAutoModelForMaskedLM, NPUEncoderModel, NPUModelForFeatureExtraction,
                         NPUModelForMaskedLM, NPUModelForSequenceClassification)
from optimum_npu.compile.artifact import ArtifactError
from optimum_npu.hub.card import build_model_card
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.encoder.runtime import EncoderInputError
from encoder_fixtures import CASES
from tampering import resign

from optimum_npu.models.encoder.tiny import VOCAB, save_encoder

def random_batch(rows: int, width: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, len(VOCAB), (rows, width), generator=generator)
    mask = torch.ones_like(ids)
    for row in range(1, rows, 2):    # every other row padded at the end
        mask[row, max(1, width - 1 - row):] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def assert_same_outputs(npu_out, eager_out, mask: torch.Tensor, atol: float = 1e-4) -> None:
    for name, value in npu_out.items():
        expected = eager_out[name]
        assert value.shape == expected.shape, name
        if value.dim() >= 2 and value.shape[:2] == mask.shape:   # per token: compare the real tokens
            value, expected = value[mask.bool()], expected[mask.bool()]
        torch.testing.assert_close(value, expected, atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("architecture", CASES)
def test_outputs_equal_eager_on_several_buckets(encoders, architecture):
    npu, eager, _ = encoders[architecture]
    npu.npu_stats.reset()
    batches = npu.npu_config.batch_sizes
    for rows, width, seq in ((1, 5, 8), (4, 8, 8), (3, 12, 32), (2, 32, 32)):
        batch = random_batch(rows, width, seed=rows * width)
        if "DistilBert" in architecture:
            batch.pop("token_type_ids")
        with torch.no_grad():
            expected = eager(**batch)
        assert_same_outputs(npu(**batch), expected, batch["attention_mask"])
        assert npu.npu_stats.calls[-1].bucket.name == f"encoder_b{min(b for b in batches if b >= rows)}_s{seq}"
    assert list(npu(**batch).keys()) == [k for k in expected.keys() if k in npu._runtime.outputs]


def test_a_batch_larger_than_the_largest_bucket_is_split(encoders):
    npu, eager, _ = encoders["BertModel"]
    batch = random_batch(10, 7, seed=1)
    npu.npu_stats.reset()
    with torch.no_grad():
        assert_same_outputs(npu(**batch), eager(**batch), batch["attention_mask"])
    assert [call.bucket.name for call in npu.npu_stats.calls] == ["encoder_b4_s8"] * 3   # 4 + 4 + 2 rows
    real = int(batch["attention_mask"].sum())
    assert npu.npu_stats.padding_waste == pytest.approx(1 - real / (3 * 4 * 8))
    assert npu.npu_stats.buckets_used == {"encoder_b4_s8": 3} and npu.npu_stats.sequences == 10


def test_padding_does_not_change_the_outputs(encoders):
    npu, _, _ = encoders["RobertaForSequenceClassification"]
    alone = random_batch(1, 6, seed=3)
    padded = {name: torch.cat([t, torch.zeros(1, 20, dtype=t.dtype)], 1) for name, t in alone.items()}
    padded["input_ids"][:, 6:] = 0
    torch.testing.assert_close(npu(**padded).logits, npu(**alone).logits, atol=1e-5, rtol=0)
    assert npu.npu_stats.calls[-2].bucket.name == "encoder_b4_s32"


def test_an_input_longer_than_the_largest_bucket_is_refused_or_truncated(encoders):
    npu, eager, _ = encoders["BertModel"]
    batch = random_batch(2, 40, seed=4)
    with pytest.raises(EncoderInputError, match=r"40 tokens .* largest compiled sequence bucket is 32 .*bucket >= 40 "
                                                r"\(e.g. 64"):
        npu(**batch)
    out = npu(**batch, truncation=True)
    cut = {name: t[:, :32] for name, t in batch.items()}
    with torch.no_grad():
        assert_same_outputs(out, eager(**cut), cut["attention_mask"])


def test_bad_inputs_are_refused_before_any_graph_runs(encoders, monkeypatch):
    npu, _, _ = encoders["BertModel"]
    monkeypatch.setattr(npu._runtime.engine, "run", lambda *a, **k: pytest.fail("a graph ran"))
    with pytest.raises(EncoderInputError, match="outside the model's token ids"):
        npu(input_ids=torch.tensor([[1, len(VOCAB)]]))
    with pytest.raises(EncoderInputError, match="attention_mask must be a tensor of the shape"):
        npu(input_ids=torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(EncoderInputError, match="integer tensor"):
        npu(input_ids=torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"forward\(\) got \['output_hidden_states'\], which the compiled graphs"):
        npu(input_ids=torch.tensor([[1, 2]]), output_hidden_states=True)


def test_the_loaded_artifact_never_calls_the_hf_forward(encoders, monkeypatch):
    for architecture in CASES:
        monkeypatch.setattr(getattr(transformers, architecture), "forward",
                            lambda *a, **k: pytest.fail("HF forward called"))
    for architecture in ("XLMRobertaForMaskedLM", "DistilBertForQuestionAnswering"):
        reloaded = NPUEncoderModel.from_pretrained(encoders[architecture][2])
        try:
            reloaded(**{k: v for k, v in random_batch(2, 9, 5).items() if k in reloaded._runtime.input_names
                        or k == "attention_mask"})
        finally:
            reloaded.release()


def test_auto_classes_and_task_classes_dispatch_on_the_stored_task(encoders):
    _, _, root = encoders["XLMRobertaForMaskedLM"]
    for loader in (NPUAutoModel, NPUAutoModelForMaskedLM, NPUModelForMaskedLM):
        model = loader.from_pretrained(root)
        assert type(model) is NPUModelForMaskedLM
        model.release()
    with pytest.raises(ValueError, match="fill-mask model .*load it with NPUModelForMaskedLM"):
        NPUModelForFeatureExtraction.from_pretrained(root)
    with pytest.raises(ValueError, match="family encoder.* is not supported by NPUAutoModelForCausalLM"):
        __import__("optimum_npu").NPUAutoModelForCausalLM.from_pretrained(root)


def test_a_task_class_compiles_its_task_from_a_bare_checkpoint(tmp_path):
    checkpoint = save_encoder("BertModel", tmp_path / "hf")
    model = NPUModelForSequenceClassification.from_pretrained(checkpoint, export=True, compile_cache=False,
                                                              npu_config={"seq_lens": [8], "batch_sizes": [1]})
    try:
        assert model.npu_graphs == ["encoder_b1_s8"] and model(input_ids=torch.tensor([[2, 7, 3]])).logits.shape == (1, 3)
        assert json.loads((model.artifact_dir / "config.json").read_text())["architectures"] == \
            ["BertForSequenceClassification"]
    finally:
        model.release()


def test_knob_errors_name_the_knob_and_the_fix(tmp_path):
    checkpoint = save_encoder("BertModel", tmp_path / "hf")
    for knobs, message in (({"tensor_parallel_size": 16}, r"tensor_parallel_size=16 is invalid: .* 1 to 8"),
                           ({"seq_lens": [8, 8]}, "lists a size twice"),
                           ({"seq_lens": [4096]}, r"longer than the model's 130 positions"),
                           ({"batch_size": 4}, r"unknown encoder knobs \['batch_size'\]")):
        with pytest.raises(NPUConfigError, match=message):
            NPUEncoderModel.from_pretrained(checkpoint, export=True, npu_config=knobs, compile_cache=False)


def test_a_tampered_task_is_refused(encoders, tmp_path):
    _, _, root = encoders["BertModel"]
    copy = tmp_path / "copy"
    NPUEncoderModel.from_pretrained(root).save_pretrained(copy)   # released on collection below
    document = json.loads((copy / "npu_config.json").read_text())
    document["task"] = "fill-mask"
    (copy / "npu_config.json").write_text(json.dumps(document))
    resign(copy)
    with pytest.raises(NPUConfigError, match="task='fill-mask' must be 'feature-extraction' for BertModel"):
        NPUEncoderModel.from_pretrained(copy)
    (copy / "graphs" / "encoder_b1_s8.graph.json").write_text("{}")
    with pytest.raises(ArtifactError, match="truncated or modified"):
        NPUEncoderModel.from_pretrained(copy)


def test_second_export_is_a_verified_cache_hit(tmp_path, caplog):
    checkpoint = save_encoder("DistilBertForSequenceClassification", tmp_path / "hf")
    knobs = {"seq_lens": [8], "batch_sizes": [2]}
    caplog.set_level(logging.INFO, logger="optimum_npu.hub.cache")
    first = NPUEncoderModel.from_pretrained(checkpoint, export=True, npu_config=knobs, compile_cache=tmp_path / "c")
    second = NPUEncoderModel.from_pretrained(checkpoint, export=True, npu_config=knobs, compile_cache=tmp_path / "c")
    try:
        assert "compile cache miss" in caplog.text and "compile cache hit" in caplog.text
        ids = torch.tensor([[2, 9, 11, 3]])
        torch.testing.assert_close(first(input_ids=ids).logits, second(input_ids=ids).logits, atol=0, rtol=0)
    finally:
        first.release()
        second.release()


def test_model_card_names_the_task_pipeline(encoders):
    tags = {cls.__name__: cls.card_section("org/x").pipeline_tag for cls in {type(m) for m, _, _ in encoders.values()}}
    assert tags == {"NPUModelForFeatureExtraction": "feature-extraction",
                    "NPUModelForSequenceClassification": "text-classification", "NPUModelForMaskedLM": "fill-mask",
                    "NPUModelForQuestionAnswering": "question-answering",
                    "NPUModelForTokenClassification": "token-classification"}
    npu, _, root = encoders["XLMRobertaForMaskedLM"]
    card = str(build_model_card(root, npu.card_section("org/x"), repo_id="org/x"))
    assert "pipeline_tag: fill-mask" in card and "NPUModelForMaskedLM.from_pretrained(\"org/x\")" in card


def test_profile_and_device_are_runtime_options(encoders):
    _, _, root = encoders["BertForTokenClassification"]
    model = NPUEncoderModel.from_pretrained(root, npu_config={"profile": True, "device": 3})
    try:
        model(input_ids=torch.tensor([[2, 8, 9, 3]]))
        assert model._runtime.engine.devices[0].name.startswith("npu:3 ") and model.npu_profile.devices
        call = model.npu_stats.calls[-1]
        assert sum(model.npu_profile.totals().values()) == pytest.approx(call.seconds, rel=1e-6)
    finally:
        model.release()
    with pytest.raises(NPUConfigError, match=r"npu_config \['seq_lens'\] differ from the compiled artifact's knobs"):
        NPUEncoderModel.from_pretrained(root, npu_config={"seq_lens": [64]})


def test_cli_export_compiles_an_encoder_checkpoint(tmp_path, capsys):
    from optimum_npu.cli import main

    checkpoint = save_encoder("DistilBertModel", tmp_path / "hf")
    assert main(["export", str(checkpoint), str(tmp_path / "out"), "--max-seq-len", "16", "--decoder-batch-sizes",
                 "1,2"]) == 0
    assert "2 graphs (encoder_b1_s16, encoder_b2_s16)" in capsys.readouterr().out
    model = NPUAutoModel.from_pretrained(tmp_path / "out")
    try:
        assert type(model) is NPUModelForFeatureExtraction and model(input_ids=torch.tensor([[2, 5, 3]])).last_hidden_state.shape \
            == (1, 3, 32)
    finally:
        model.release()
    assert main(["export", str(checkpoint), str(tmp_path / "bad"), "--prefill-chunk-size", "8"]) == 2
    assert "['prefill_chunk_size'] apply to decoders" in capsys.readouterr().err


def test_generate_on_an_encoder_says_what_to_call_instead(encoders, capsys):
    from optimum_npu.cli import main

    _, _, root = encoders["BertModel"]
    assert main(["generate", str(root), "--max-new-tokens", "2"]) == 2
    assert "it does not generate text; call the model" in capsys.readouterr().err
