"""Encoder-decoder LMs (T5, BART) on the NPU against eager Transformers: generate() tokens and logits (greedy and
beam search, batch 1 and a padded batch of 3), encoder buckets, the artifact round trip, tampering, the auto
class and the text pipelines."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers
from transformers import AutoTokenizer

from optimum_npu.compile.artifact import ArtifactError
from optimum_npu import NPUAutoModelForSeq2SeqLM, NPUAutoModelForSpeechSeq2Seq
from optimum_npu.models.auto import NPUAutoModel
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.seq2seq.modeling import NPUModelForSeq2SeqLM
from tampering import edit_graph, resign

from seq2seq_fixtures import ARCHITECTURES

TEXTS = ["translate english to german: the cat sat on the mat .", "hello world",
         "summarize: the big red car is fast and the sun is hot ."]


def _generate(model, tokenizer, texts, **kwargs):
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    return model.generate(**batch, max_new_tokens=12, min_new_tokens=8, do_sample=False, output_logits=True,
                          return_dict_in_generate=True, **kwargs)


#: Pegasus (a BART-like pre-norm layout) runs in the whole suite; T5 and BART in the quick tier too.
QUICK = [a if not a.startswith("Pegasus") else pytest.param(a, marks=pytest.mark.slow) for a in ARCHITECTURES]


@pytest.mark.parametrize("architecture", QUICK)
@pytest.mark.parametrize("num_beams", [1, 2])
@pytest.mark.parametrize("rows", [pytest.param(1, marks=pytest.mark.slow), 3])   # 1 row: also in the bucket test
def test_generate_matches_eager(seq2seq_models, architecture, num_beams, rows):
    npu, eager, artifact = seq2seq_models[architecture]
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    texts = TEXTS[-rows:]
    want = _generate(eager, tokenizer, texts, num_beams=num_beams)
    got = _generate(npu, tokenizer, texts, num_beams=num_beams)
    assert torch.equal(got.sequences, want.sequences)
    # a real continuation, not one repeated id (tiny random Pegasus does repeat one: its logits are still compared)
    assert len(set(want.sequences.flatten().tolist())) > (2 if architecture.startswith("Pegasus") else 4)
    worst = max((a - b).abs().max().item() for a, b in zip(got.logits, want.logits))
    scale = max(b.abs().max().item() for b in want.logits)         # tiny T5's logits reach ~40 (wide init)
    assert worst < 1e-4 * max(1.0, scale)
    assert npu.npu_stats.decoder.decode_steps == len(got.logits) - 1
    if num_beams > 1:
        assert npu.npu_stats.beam_copy_s > 0                           # parents swapped: blocks copied on device


@pytest.mark.parametrize("architecture", QUICK)
def test_inputs_land_in_their_encoder_bucket(seq2seq_models, architecture):
    npu, eager, artifact = seq2seq_models[architecture]
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    for text, bucket in (("hello world", "encoder_b4_s8"), (TEXTS[2], "encoder_b4_s16")):
        want = _generate(eager, tokenizer, [text])
        got = _generate(npu, tokenizer, [text])
        assert torch.equal(got.sequences, want.sequences)
        assert npu.npu_stats.encoder.buckets_used == {bucket: 1}
    stats = npu.npu_stats
    assert stats.encoder_s > 0 and stats.cross_kv_s > 0 and stats.decode_s_per_token > 0
    assert stats.kv_pools["cross"] > 0 and stats.kv_pools["paged"] > 0   # cross K/V sized as a pool of its own


def test_weights_are_stored_once(seq2seq_models):
    """The shared embedding (encoder, decoder and LM head of tiny T5) is one tensor in the file, however many graphs
    bind it: the stored elements are exactly the model's distinct parameters."""
    from safetensors import safe_open

    _, eager, artifact = seq2seq_models["T5ForConditionalGeneration"]
    with safe_open(str(artifact / "model.safetensors"), framework="pt") as handle:
        stored = sum(handle.get_tensor(key).numel() for key in handle.keys())
    assert eager.shared.weight is eager.lm_head.weight
    assert stored == sum(p.numel() for p in eager.parameters())


def test_loaded_artifact_never_runs_the_hf_forward(seq2seq_models, monkeypatch):
    npu, eager, artifact = seq2seq_models["BartForConditionalGeneration"]
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    want = _generate(eager, tokenizer, TEXTS[:2], num_beams=2).sequences

    def trap(*args, **kwargs):
        raise AssertionError("the HF forward ran")

    for cls in (transformers.BartForConditionalGeneration, transformers.models.bart.modeling_bart.BartEncoder,
                transformers.models.bart.modeling_bart.BartDecoder, transformers.T5ForConditionalGeneration):
        monkeypatch.setattr(cls, "forward", trap)
    reloaded = NPUModelForSeq2SeqLM.from_pretrained(artifact)
    try:
        assert torch.equal(_generate(reloaded, tokenizer, TEXTS[:2], num_beams=2).sequences, want)
    finally:
        reloaded.release()


def test_tampered_artifact_is_refused(seq2seq_models, tmp_path):
    _, _, artifact = seq2seq_models["T5ForConditionalGeneration"]
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    graph = copy / "graphs" / "prefill.graph.json"
    graph.write_text(graph.read_text().replace('"cross_mask"', '"cross_maskX"', 1))
    with pytest.raises(ArtifactError, match="manifest"):
        NPUModelForSeq2SeqLM.from_pretrained(copy)
    # an attacker who re-signs: a cache input of another shape is caught before anything is reserved
    shutil.rmtree(copy)
    shutil.copytree(artifact, copy)
    config = json.loads((copy / "npu_config.json").read_text())
    config["alignment_heads"] = [[7, 0]]
    (copy / "npu_config.json").write_text(json.dumps(config))
    resign(copy)
    with pytest.raises(NPUConfigError, match="alignment_heads"):
        NPUModelForSeq2SeqLM.from_pretrained(copy)

    def widen(doc):
        for spec in doc["inputs"]:
            if spec["name"] == "cross_mask":
                spec["shape"][1] += 1

    shutil.rmtree(copy)
    shutil.copytree(artifact, copy)
    edit_graph(copy, "decoder_batch_1", widen)
    with pytest.raises(NPUConfigError, match="decoder_batch_1"):
        NPUModelForSeq2SeqLM.from_pretrained(copy)


def test_auto_class_loads_the_family(seq2seq_models):
    npu, eager, artifact = seq2seq_models["T5ForConditionalGeneration"]
    with pytest.raises(ValueError, match="load it with NPUModelForSeq2SeqLM"):
        NPUAutoModelForSpeechSeq2Seq.from_pretrained(artifact)
    auto = NPUAutoModelForSeq2SeqLM.from_pretrained(artifact)
    assert type(auto) is NPUModelForSeq2SeqLM
    auto.release()
    auto = NPUAutoModel.from_pretrained(artifact)
    try:
        assert type(auto) is NPUModelForSeq2SeqLM
        tokenizer = AutoTokenizer.from_pretrained(artifact)
        assert torch.equal(_generate(auto, tokenizer, TEXTS[:1]).sequences, _generate(eager, tokenizer, TEXTS[:1]).sequences)
    finally:
        auto.release()


@pytest.mark.parametrize("architecture", QUICK)
def test_sampling_matches_eager_with_the_same_seed(seq2seq_models, architecture):
    npu, eager, artifact = seq2seq_models[architecture]
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    runs = []
    for model in (eager, npu):
        torch.manual_seed(7)
        runs.append(model.generate(**batch, do_sample=True, top_k=20, temperature=1.3, max_new_tokens=10,
                                   min_new_tokens=10, num_return_sequences=2))
    assert torch.equal(runs[0], runs[1]) and runs[1].shape[0] == 6


def test_requests_beyond_the_envelope_are_refused_before_compute(seq2seq_models):
    npu, _, artifact = seq2seq_models["T5ForConditionalGeneration"]
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with pytest.raises(ValueError, match="batch_size=8"):
        npu.generate(**batch, num_beams=3, max_new_tokens=4)
    with pytest.raises(ValueError, match="max_seq_len=32"):
        npu.generate(**batch, max_new_tokens=40)
    long = tokenizer([" ".join(["the"] * 30)], return_tensors="pt")
    with pytest.raises(ValueError, match="largest compiled sequence bucket is 16"):
        npu.generate(**long, max_new_tokens=4)
