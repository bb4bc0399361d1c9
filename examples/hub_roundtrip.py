"""Share a compiled model through the Hub: compile, save, push (with a model card), pull, generate.

    python examples/hub_roundtrip.py --repo-id my-org/tiny-llama-npu              # huggingface.co, HF_TOKEN
    python examples/hub_roundtrip.py --repo-id my-org/x --endpoint http://127.0.0.1:8000 --token hf_...

Without ``--model`` a random-weight Llama and a byte-level tokenizer are built in code. The
pulled artifact is verified against its manifest and must generate the same tokens as the
local one. ``--endpoint`` points at another Hub-compatible server (it sets ``HF_ENDPOINT``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo-id", required=True, help="Hub repository 'namespace/name' to push to")
    parser.add_argument("--endpoint", help="Hub URL (default: $HF_ENDPOINT or https://huggingface.co)")
    parser.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or the stored login)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="branch to push to and pull from (default main)")
    parser.add_argument("--model", help="HF checkpoint directory or Hub id (default: build a tiny Llama in code)")
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--prefill-chunk-size", type=int, default=32)
    parser.add_argument("--npu", default="atom", help="target NPU preset or JSON spec file")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.endpoint:  # read by huggingface_hub when it is imported, so set it first
        os.environ["HF_ENDPOINT"] = args.endpoint.rstrip("/")

    import torch
    from transformers import AutoTokenizer

    from optimum_npu import NPUModelForCausalLM
    from optimum_npu.models.tiny import save_causal_lm

    work = Path(tempfile.mkdtemp(prefix="optimum-npu-hub-"))
    checkpoint = args.model or save_causal_lm(work / "checkpoint", "LlamaForCausalLM", size="tiny")
    model = NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config={
        "max_seq_len": args.max_seq_len, "batch_size": args.batch_size,
        "prefill_chunk_size": args.prefill_chunk_size, "npu": args.npu})
    model.save_pretrained(work / "model-npu")
    local = NPUModelForCausalLM.from_pretrained(work / "model-npu")

    commit = local.push_to_hub(args.repo_id, token=args.token, private=args.private or None, revision=args.revision,
                               base_model=args.model if args.model and not Path(args.model).exists() else None)
    print(f"pushed: {commit.commit_url}")

    pulled = NPUModelForCausalLM.from_pretrained(args.repo_id, revision=args.revision, token=args.token,
                                                 cache_dir=work / "hub-cache")
    print(f"pulled and verified: {pulled.artifact_dir}")
    tokenizer = AutoTokenizer.from_pretrained(pulled.artifact_dir, padding_side="left")
    inputs = tokenizer(["Hello", "The NPU compiles static shapes"][: args.batch_size], return_tensors="pt",
                       padding=True)
    expected = local.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    output = pulled.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    same = bool(torch.equal(expected, output))
    print(f"greedy tokens, pulled vs local artifact: {'identical' if same else 'DIFFERENT'}")
    print(pulled.npu_stats)
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
