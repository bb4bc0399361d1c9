"""The ``optimum-npu`` command line: export, generate, profile, a built-in demo, Hub push / compile cache, plan."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,4, got {text!r}") from None


def _add_compile_options(parser: argparse.ArgumentParser) -> None:
    from optimum_npu.device.spec import PRESETS

    group = parser.add_argument_group("compile knobs (see NPUDecoderConfig; unset = derived from the model)")
    group.add_argument("--max-seq-len", type=int, help="longest prompt + generated tokens (default: model limit, "
                                                       "capped at 2048)")
    group.add_argument("--batch-size", type=int, default=1, help="most sequences generated together (default 1)")
    group.add_argument("--decoder-batch-sizes", type=_int_list,
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


def _npu_config_from_args(args: argparse.Namespace) -> dict:
    keys = ("max_seq_len", "batch_size", "decoder_batch_sizes", "prefill_chunk_size", "dtype", "npu",
            "kvcache_block_size", "kvcache_partition_len", "tensor_parallel_size")
    return {key: getattr(args, key) for key in keys if getattr(args, key) is not None}


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
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


def cmd_export(args: argparse.Namespace) -> None:
    from optimum_npu.models.auto import NPUAutoModel, family_of

    hub = {"revision": args.revision} if args.revision else {}
    knobs = _npu_config_from_args(args)
    path, family = family_of(args.model, hub)
    if family == "vlm":  # the flat knobs are the language model's; the visual buckets have their own flag
        npu = knobs.pop("npu", "atom")
        visual = {"max_seq_len": args.visual_buckets} if args.visual_buckets else {}
        knobs = {"visual": visual, "language_model": knobs, "npu": npu}
    elif args.visual_buckets:
        raise ValueError(f"--visual-buckets applies to vision-language models; {args.model} is a {family} model")
    model = NPUAutoModel.from_pretrained(path, export=True, npu_config=knobs)
    model.save_pretrained(args.output)
    print(f"compiled {len(model.npu_graphs)} graphs ({', '.join(model.npu_graphs)}) into {args.output}")


def cmd_generate(args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    from optimum_npu.models.auto import NPUAutoModel, family_of

    _, family = family_of(args.model, {})
    placement = {"device": args.device} if family == "decoder" else {"device_map": {"language_model": args.device}}
    model = NPUAutoModel.from_pretrained(args.model, npu_config=placement)
    tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    _generate(model, tokenizer, args)


def cmd_profile(args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    from optimum_npu import NPUModelForCausalLM

    model = NPUModelForCausalLM.from_pretrained(args.model, npu_config={"device": args.device, "profile": True})
    tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    _generate(model, tokenizer, args)
    path = model.npu_profile.save(args.out)
    print(model.npu_profile.summary())
    print(f"trace written to {path} (open it in https://ui.perfetto.dev)")


def cmd_demo(args: argparse.Namespace) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optimum-npu", description="Compile Hugging Face models for a simulated "
                                     "NPU, run them, and read what the hardware would spend.")
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="compile an HF checkpoint into an NPU artifact",
                                 description="Compile an HF causal-LM checkpoint (directory or Hub id) into a "
                                             "bucketed NPU artifact directory.")
    export.add_argument("model", help="HF checkpoint directory or Hub repo id")
    export.add_argument("output", type=Path, help="directory to write the compiled artifact to")
    export.add_argument("--revision", help="Hub revision (branch, tag or commit) of the checkpoint")
    export.add_argument("--visual-buckets", type=_int_list,
                        help="vision-language models: visual encoder buckets in patches, e.g. 1024,3136,16384 "
                             "(the other knobs apply to the language model)")
    _add_compile_options(export)
    export.set_defaults(func=cmd_export)

    generate = commands.add_parser("generate", help="generate text with a compiled artifact",
                                   description="Load a compiled artifact and generate; prints the text and the "
                                               "simulated NPU figures (TTFT, decode time, graphs used, memory).")
    generate.add_argument("model", help="compiled artifact directory")
    generate.add_argument("--device", type=int, default=0, help="simulated device id to run on (default 0)")
    _add_generation_options(generate)
    generate.set_defaults(func=cmd_generate)

    profile = commands.add_parser("profile", help="generate with a compiled artifact and write a profiler trace",
                                  description="Load a compiled artifact with the profiler on, generate, print the "
                                              "time per category (Neural Engine, Neural DMA, HDMA, Sync, Host) and "
                                              "write a Chrome-trace / Perfetto JSON of every op on each device.")
    profile.add_argument("model", help="compiled artifact directory")
    profile.add_argument("--out", type=Path, default=Path("npu_trace.json"),
                         help="trace file to write (default npu_trace.json); open it in https://ui.perfetto.dev")
    profile.add_argument("--device", type=int, default=0, help="simulated device id to run on (default 0)")
    _add_generation_options(profile)
    profile.set_defaults(func=cmd_profile)

    demo = commands.add_parser("demo", help="build a small model in code, compile, generate, print NPU figures",
                               description="The main job on a built-in default model (nothing is downloaded): "
                                           "build a random-weight model, compile it, save, reload, generate.")
    demo.add_argument("--architecture", default="LlamaForCausalLM",
                      choices=["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"],
                      help="architecture of the built-in model (default LlamaForCausalLM)")
    demo.add_argument("--output", type=Path, help="where to save the compiled artifact (default: a temp dir)")
    _add_compile_options(demo)
    _add_generation_options(demo)
    demo.set_defaults(func=cmd_demo, max_seq_len=256, batch_size=4, prefill_chunk_size=32)

    from optimum_npu.hub.commands import add_hub_commands

    add_hub_commands(commands)  # push, cache

    from optimum_npu.planner.commands import add_plan_command

    add_plan_command(commands)  # plan

    from optimum_npu.serving.commands import add_serving_commands

    add_serving_commands(commands)  # serve
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, MemoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
