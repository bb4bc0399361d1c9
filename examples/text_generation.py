"""Text generation on the simulated NPU: compile, save, reload, generate, read the NPU figures.

    python examples/text_generation.py                       # a small Llama built in code
    python examples/text_generation.py --model path/to/hf-checkpoint --max-seq-len 1024

With ``--model`` the checkpoint must be a supported causal LM directory (or Hub id) with a
tokenizer; without it a random-weight model and a byte-level tokenizer are built in code.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

from optimum_npu import NPUModelForCausalLM
from optimum_npu.models.tiny import save_causal_lm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="HF checkpoint directory or Hub id (default: build a tiny Llama in code)")
    parser.add_argument("--output", type=Path, help="where to save the compiled artifact (default: a temp dir)")
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--prefill-chunk-size", type=int, default=32)
    parser.add_argument("--npu", default="atom", help="target NPU preset or JSON spec file")
    parser.add_argument("--prompt", action="append", help="prompt(s); repeat for a batch")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="optimum-npu-example-"))
    checkpoint = args.model or save_causal_lm(work / "checkpoint", "LlamaForCausalLM", size="tiny")
    output = args.output or work / "model-npu"

    model = NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config={
        "max_seq_len": args.max_seq_len, "batch_size": args.batch_size,
        "prefill_chunk_size": args.prefill_chunk_size, "npu": args.npu})
    model.save_pretrained(output)
    model = NPUModelForCausalLM.from_pretrained(output)          # reload: no recompilation

    tokenizer = AutoTokenizer.from_pretrained(output, padding_side="left")
    prompts = args.prompt or ["Hello", "The NPU compiles static shapes"][: args.batch_size]
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    output_ids = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    for prompt, ids in zip(prompts, output_ids[:, inputs["input_ids"].shape[1]:]):
        print(f"{prompt!r} -> {ids.tolist()}")
    print(model.npu_stats)


if __name__ == "__main__":
    main()
