"""The ``export``, ``generate``, ``profile`` and ``demo`` subcommands (the family comes from the family registry)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,4, got {text!r}") from None


def add_compile_options(parser: argparse.ArgumentParser) -> None:
    from optimum_npu.device.spec import PRESETS
    from optimum_npu.planner.commands import add_quantization_options

    group = parser.add_argument_group("compile knobs (see NPUDecoderConfig; unset = derived from the model)")
    group.add_argument("--max-seq-len", type=int, help="longest prompt + generated tokens (default: model limit, "
                                                       "capped at 2048)")
    group.add_argument("--batch-size", type=int, default=1, help="most sequences generated together (default 1)")
    group.add_argument("--decoder-batch-sizes", type=int_list,
                       help="decode graphs to compile, comma separated, e.g. 1,2,4 (default: powers of two up "
                            "to --batch-size)")
    group.add_argument("--prefill-chunk-size", type=int, help="tokens per prefill graph call (default 128)")
    group.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                       help="weight and compute dtype (default: the checkpoint's)")
    group.add_argument("--npu", default="atom", help=f"target NPU: a preset ({', '.join(sorted(PRESETS))}) or a "
                                                     "JSON spec file (default atom)")
    group.add_argument("--kvcache-block-size", type=int, help="tokens per KV-cache block (default: max seq len)")
    group.add_argument("--kvcache-partition-len", type=int, help="flash-attention partition length for decode")
    group.add_argument("--tensor-parallel-size", type=int, default=1, help="devices to split the model across "
                                                                           "(1 in this release)")
    add_quantization_options(group)


def _npu_config_from_args(args: argparse.Namespace) -> dict:
    keys = ("max_seq_len", "batch_size", "decoder_batch_sizes", "prefill_chunk_size", "dtype", "npu",
            "kvcache_block_size", "kvcache_partition_len", "tensor_parallel_size")
    from optimum_npu.planner.commands import quantization_knob

    knobs = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    quantization = quantization_knob(args)
    return {**knobs, "quantization": quantization} if quantization else knobs


def add_generation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generation")
    group.add_argument("--prompt", action="append", help="a prompt; repeat for a batch (default: 'Hello')")
    group.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate per prompt (default 32)")
    group.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    group.add_argument("--temperature", type=float, help="sampling temperature")
    group.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    group.add_argument("--top-p", type=float, help="nucleus sampling probability mass")
    group.add_argument("--repetition-penalty", type=float, help="penalty > 1 discourages repeated tokens")
    group.add_argument("--seed", type=int, default=0, help="random seed for sampling (default 0)")
    group.add_argument("--stream", action="store_true", help="print tokens as they are generated (batch of 1)")
    group.add_argument("--stats-json", type=Path, help="also write the simulated NPU figures to this JSON file")


def _generate(model, tokenizer, args: argparse.Namespace, reference=None) -> None:
    """Generates from ``--prompt``s, prints text and NPU figures; compares greedy tokens with ``reference``."""
    import torch
    from transformers import TextStreamer

    torch.manual_seed(args.seed)
    prompts = args.prompt or ["Hello"]
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    options = {k: getattr(args, k) for k in ("temperature", "top_k", "top_p", "repetition_penalty")
               if getattr(args, k) is not None}
    streamer = TextStreamer(tokenizer, skip_prompt=True) if args.stream and len(prompts) == 1 else None
    output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=args.do_sample,
                            streamer=streamer, **options)
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    if streamer is None:
        for prompt, text in zip(prompts, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            print(f"--- prompt: {prompt!r}\n{text}")
    if reference is not None and not args.do_sample:
        expected = reference.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False, **options)
        same = expected.shape == output.shape and bool((expected == output).all())
        print(f"greedy tokens vs eager Transformers on the same model: {'identical' if same else 'DIFFERENT'}")
    print(model.npu_stats)
    if args.stats_json:
        args.stats_json.write_text(json.dumps(model.npu_stats.to_dict(), indent=1))


def _family(model: str, hub: dict):
    """The checkpoint or artifact's local path and family entry, or a ValueError naming what is supported."""
    from optimum_npu.models.auto import family_of
    from optimum_npu.models.registry import supported_architectures

    path, family = family_of(model, hub)
    if family is None:
        raise ValueError(f"{model} is not a supported model; supported architectures: "
                         f"{', '.join(supported_architectures())}")
    return path, family


def cmd_export(args: argparse.Namespace) -> None:
    path, family = _family(args.model, {"revision": args.revision} if args.revision else {})
    npu_config = family.export_config(_npu_config_from_args(args), {"visual_buckets": args.visual_buckets})
    model = family.model_class.from_pretrained(path, export=True, npu_config=npu_config)
    model.save_pretrained(args.output)
    print(f"compiled {family.summary(model)} into {args.output}")


def _load_for_run(args: argparse.Namespace, profile: bool = False):
    from transformers import AutoTokenizer

    path, family = _family(args.model, {})
    model = family.model_class.from_pretrained(path, npu_config=family.placement(args.device, profile))
    return model, AutoTokenizer.from_pretrained(path, padding_side="left")


def cmd_generate(args: argparse.Namespace) -> None:
    model, tokenizer = _load_for_run(args)
    _generate(model, tokenizer, args)


def cmd_profile(args: argparse.Namespace) -> None:
    model, tokenizer = _load_for_run(args, profile=True)
    _generate(model, tokenizer, args)
    path = model.npu_profile.save(args.out)
    print(model.npu_profile.summary())
    print(f"trace written to {path} (open it in https://ui.perfetto.dev)")


def cmd_demo(args: argparse.Namespace) -> None:
    if getattr(args, "task", "generation") == "embeddings":
        from optimum_npu.cli.embeddings_demo import cmd_embeddings_demo

        return cmd_embeddings_demo(args)
    from optimum_npu import NPUModelForCausalLM
    from optimum_npu.models.tiny import build_causal_lm, build_tokenizer

    hf_model = build_causal_lm(args.architecture, size="demo")
    tokenizer = build_tokenizer()
    # three prompts of different lengths: left-padded, prefilled one by one, decoded on the batch-4 graph
    args.prompt = args.prompt or ["Hello", "The simulated NPU compiles static shapes.",
                                  "A third prompt, long enough to need two prefill chunks of thirty-two tokens."]
    params = sum(p.numel() for p in hf_model.parameters())
    print(f"built a random-weight {args.architecture} ({params / 1e6:.1f}M parameters) in code")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        model = NPUModelForCausalLM.from_model(hf_model, npu_config=_npu_config_from_args(args), tokenizer_dir=tmp)
    target = args.output or Path(tempfile.mkdtemp(prefix="optimum-npu-demo-")) / "model-npu"
    model.save_pretrained(target)
    print(f"compiled graphs {', '.join(model.npu_graphs)} -> {target}")
    reloaded = NPUModelForCausalLM.from_pretrained(target)
    print("(random weights: the text is noise; the figures are what the demo shows)")
    _generate(reloaded, tokenizer, args, reference=hf_model)
