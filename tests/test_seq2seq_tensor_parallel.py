"""Encoder-decoder models split over two simulated devices (``tensor_parallel_size=2``) against the same model on
one device and eager Transformers: T5, BART and Whisper tokens (greedy and beam search) and logits, each rank's
weights, self-attention pool and cross-attention slots halved, the all-reduces in ``npu_stats``, and refusals."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from transformers import AutoTokenizer

from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.seq2seq.estimate import estimate_seq2seq
from optimum_npu.models.seq2seq.modeling import NPUModelForSeq2SeqLM
from optimum_npu.models.seq2seq.speech import NPUModelForSpeechSeq2Seq
from optimum_npu.models.seq2seq.tiny import build_seq2seq
from optimum_npu.models.seq2seq.tiny_whisper import SAMPLING_RATE, build_feature_extractor, build_whisper
from optimum_npu.schema import weights_file

from seq2seq_fixtures import NPU_CONFIG, WHISPER_CONFIG

TEXTS = ["translate english to german: the cat sat on the mat .", "hello world",
         "summarize: the big red car is fast and the sun is hot ."]
T5, BART = "T5ForConditionalGeneration", "BartForConditionalGeneration"


@pytest.fixture(scope="module")
def split_models(request, tmp_path_factory):
    """architecture -> (TP 2 model, TP 1 model, eager model, tokenizer dir); T5's TP 2 artifact saved and reloaded
    (rank files round trip), compiled on first use."""
    made: dict[str, tuple] = {}

    def get(architecture: str):
        if architecture not in made:
            single, eager, artifact = (request.getfixturevalue("whisper") if architecture == "Whisper"
                                       else request.getfixturevalue("seq2seq_models")[architecture])
            cls = NPUModelForSpeechSeq2Seq if architecture == "Whisper" else NPUModelForSeq2SeqLM
            knobs = {**(WHISPER_CONFIG if architecture == "Whisper" else NPU_CONFIG), "tensor_parallel_size": 2,
                     "device": [2, 5]}
            split = cls.from_pretrained(artifact.parent / "hf", export=True, npu_config=knobs, compile_cache=False)
            if architecture == T5:
                saved = tmp_path_factory.mktemp("t5_tp2")
                split.save_pretrained(saved)
                split.release()
                split = cls.from_pretrained(saved, npu_config={"device": [2, 5]})
            made[architecture] = (split, single, eager, artifact)
        return made[architecture]

    yield get
    for split, *_ in made.values():
        split.release()


def _generate(model, tokenizer, texts, **kwargs):
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    return model.generate(**batch, max_new_tokens=12, min_new_tokens=8, do_sample=False, output_logits=True,
                          return_dict_in_generate=True, **kwargs)


def _assert_same(got, single, want) -> None:
    """Tokens identical to one device and to eager; logits within 1e-4 (relative to tiny T5's wide logits)."""
    assert torch.equal(got.sequences, single.sequences) and torch.equal(got.sequences, want.sequences)
    scale = max(1.0, max(b.abs().max().item() for b in want.logits))
    for reference in (single.logits, want.logits):
        assert max((a - b).abs().max().item() for a, b in zip(got.logits, reference)) < 1e-4 * scale


@pytest.mark.parametrize("architecture, num_beams", [pytest.param(T5, 1, marks=pytest.mark.slow), (T5, 2),
                                                     pytest.param(BART, 1, marks=pytest.mark.slow),
                                                     pytest.param(BART, 2, marks=pytest.mark.slow)])
def test_text_models_split_over_two_devices_match_one(split_models, architecture, num_beams):
    split, single, eager, artifact = split_models(architecture)
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    got = _generate(split, tokenizer, TEXTS, num_beams=num_beams)
    _assert_same(got, _generate(single, tokenizer, TEXTS, num_beams=num_beams),
                 _generate(eager, tokenizer, TEXTS, num_beams=num_beams))
    assert len(set(got.sequences.flatten().tolist())) > 4
    # each rank holds half of the heads' self-attention pool and cross-attention keys/values (the mask is whole)
    one, two = single.npu_stats, split.npu_stats
    assert two.kv_pools["paged"] * 2 == one.kv_pools["paged"]
    mask = 4 * NPU_CONFIG["batch_size"] * NPU_CONFIG["encoder_seq_lens"][-1]    # float32 [rows, L], replicated
    assert (two.kv_pools["cross"] - mask) * 2 == one.kv_pools["cross"] - mask
    # the all-reduces after every attention output and second feed-forward projection are in the stats
    assert one.collective_s == 0 and two.collective_s > 0 and "collectives" in str(two)
    assert two.encoder_s > 0 and two.cross_kv_s > 0 and two.decode_s_per_token > two.collective_s / (
        two.decoder.decode_steps + len(two.encoder.calls) + two.decoder.sequences)


def test_each_rank_holds_half_of_the_split_weights(split_models):
    """Attention, relative-attention bias and feed-forward weights are cut in two on each device, the shared
    embedding stays whole and stored once per rank, and the LM head keeps half of the vocabulary."""
    split, single, eager, artifact = split_models(T5)
    with safe_open(str(artifact / "model.safetensors"), framework="pt") as handle:
        full = {key: handle.get_tensor(key) for key in handle.keys()}
    ranks = []
    for rank in range(2):
        with safe_open(str(split.artifact_dir / weights_file(rank, 2)), framework="pt") as handle:
            ranks.append({key: handle.get_tensor(key) for key in handle.keys()})
    halved = {name for name in full if ranks[0][name].shape != full[name].shape}
    for layer_module in ("SelfAttention.q", "SelfAttention.o", "EncDecAttention.k", "DenseReluDense.wi",
                         "DenseReluDense.wo", "SelfAttention.relative_attention_bias"):
        assert any(layer_module in name for name in halved), layer_module
    for name in halved:   # the two halves put together are the one-device tensor
        dim = next(d for d, (a, b) in enumerate(zip(ranks[0][name].shape, full[name].shape)) if a != b)
        assert torch.equal(torch.cat([ranks[0][name], ranks[1][name]], dim), full[name]), name
    assert torch.equal(ranks[0]["lm_head.weight"], full["lm_head.weight"])         # the shared embedding, whole
    vocab = full["lm_head.weight"].shape[0]
    assert ranks[0]["lm_head.weight:vocab_shard"].shape[0] == -(-vocab // 2)         # the logits projection's half
    split_bytes = sum(full[name].nbytes for name in halved)
    stored = [sum(t.nbytes for t in rank.values()) for rank in ranks]
    assert stored[0] == sum(t.nbytes for t in full.values()) - split_bytes // 2 + ranks[0][
        "lm_head.weight:vocab_shard"].nbytes
    assert split.npu_stats.memory["weights"] == stored[0] < single.npu_stats.memory["weights"]
    assert [device.index for device in split._runtime.engine.devices] == [2, 5]


@pytest.mark.slow
@pytest.mark.parametrize("options", [dict(language="de", task="transcribe"), dict(language="en", num_beams=2)])
def test_whisper_split_over_two_devices_matches_one(split_models, options):
    split, single, eager, _ = split_models("Whisper")
    rng = torch.Generator().manual_seed(0)
    clips = [(0.5 * torch.randn(int(seconds * SAMPLING_RATE), generator=rng)).numpy() for seconds in (0.9, 0.5)]
    features = build_feature_extractor()(clips, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features
    kwargs = dict(max_new_tokens=10, return_dict_in_generate=True, output_logits=True, **options)
    got = split.generate(features, **kwargs)
    _assert_same(got, single.generate(features, **kwargs), eager.generate(features, **kwargs))
    stats = split.npu_stats
    assert stats.encoder.buckets_used == {"encoder_b4_s100": 1} and stats.collective_s > 0
    assert stats.kv_pools["paged"] * 2 == single.npu_stats.kv_pools["paged"]


def test_tensor_parallel_refusals():
    """Sizes that do not divide the heads, device lists of the wrong length, and token timestamps are refused
    before anything is captured."""
    t5 = build_seq2seq(T5)   # 4 heads
    with pytest.raises(NPUConfigError, match=r"tensor_parallel_size=3 does not divide the 4 attention heads.*"
                                             r"\[1, 2, 4\]"):
        NPUModelForSeq2SeqLM.from_model(t5, npu_config={**NPU_CONFIG, "tensor_parallel_size": 3}, compile_cache=False)
    with pytest.raises(NPUConfigError, match=r"device=\[0\] must list 2 distinct ids"):
        NPUModelForSeq2SeqLM.from_model(t5, npu_config={**NPU_CONFIG, "tensor_parallel_size": 2, "device": [0]},
                                        compile_cache=False)
    with pytest.raises(NPUConfigError, match="tensor_parallel_size=0 is invalid"):
        NPUModelForSeq2SeqLM.from_model(t5, npu_config={"tensor_parallel_size": 0}, compile_cache=False)
    with pytest.raises(NPUConfigError, match="token_timestamps=True with tensor_parallel_size=2"):
        NPUModelForSpeechSeq2Seq.from_model(build_whisper(), npu_config={**WHISPER_CONFIG, "tensor_parallel_size": 2,
                                                                         "token_timestamps": True}, compile_cache=False)


def test_weightless_estimate_equals_the_split_model(split_models):
    """The planner's meta capture at tensor_parallel_size=2 holds per device what the compiled split model holds."""
    split, single, eager, artifact = split_models(T5)
    config, (estimate,) = estimate_seq2seq(eager.config, {**NPU_CONFIG, "tensor_parallel_size": 2}, ("atom",))
    assert config.to_dict() == split.npu_config.to_dict()
    stats = split.npu_stats
    assert estimate.memory["weights"] == stats.memory["weights"]
    assert estimate.memory["self_attn_kv"] == stats.kv_pools["paged"]
    assert estimate.memory["cross_kv"] == stats.kv_pools["cross"]
