"""The ``optimum-npu plan`` subcommand (registered by ``cli.build_parser`` through ``add_plan_command``)."""

from __future__ import annotations

import argparse
import json

from optimum_npu.compile.quantization_config import QuantizationConfig


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1 like 1,2,4, got {text!r}")
    return values


def add_quantization_options(group) -> None:
    """``--quantization``, ``--kv-cache`` and ``--group-size``: the ``quantization`` knob on a command line."""
    from optimum_npu.compile.quantization_config import KV_CACHE_FORMATS, WEIGHT_FORMATS

    group.add_argument("--quantization", choices=WEIGHT_FORMATS, help="quantize the linear weights (default: none)")
    group.add_argument("--kv-cache", choices=KV_CACHE_FORMATS, help="store the KV cache in fp8 (default: dtype)")
    group.add_argument("--group-size", type=int, help="input features per int8/int4 scale (default 128)")


def quantization_knob(args: argparse.Namespace) -> dict | None:
    """The ``quantization`` knob the options of ``add_quantization_options`` give, or None."""
    knob = {key: value for key, value in (("weights", args.quantization), ("kv_cache", args.kv_cache),
                                          ("group_size", args.group_size)) if value is not None}
    return knob or None


#: ``optimum-npu plan`` options a seq2seq plan takes, and those it refuses (decoder-only or not supported yet).
SEQ2SEQ_OPTIONS = ("max_seq_len", "batch_size", "decoder_batch_sizes", "prefill_chunk_size", "dtype",
                   "kvcache_block_size", "kvcache_partition_len")
SEQ2SEQ_REFUSED = {"quantization": "--quantization", "kv_cache": "--kv-cache",
                   "expert_parallel": "--expert-parallel", "expert_tensor_parallel": "--expert-tensor-parallel",
                   "context_len": "--context-len", "kvcache_num_blocks": "--kvcache-num-blocks",
                   "attn_impl": "--attn-impl", "group_size": "--group-size"}


def seq2seq_knobs(args: argparse.Namespace) -> dict:
    """The seq2seq compile knobs of the command line; options that do not apply are refused by name."""
    from optimum_npu.models.decoder.npu_config import NPUConfigError

    given = [flag for key, flag in SEQ2SEQ_REFUSED.items() if getattr(args, key, None)]
    sizes = args.tensor_parallel_size or [1]
    if len(sizes) > 1:   # one split per plan (each size is its own capture)
        given.append(f"--tensor-parallel-size {','.join(map(str, sizes))} (give one size)")
    if given:
        raise NPUConfigError(f"{', '.join(given)} do(es) not apply to an encoder-decoder plan (one tensor-parallel "
                             "size, no quantization, decode at the longest context); leave them out")
    knobs = {key: getattr(args, key) for key in SEQ2SEQ_OPTIONS if getattr(args, key) is not None}
    return {**knobs, "tensor_parallel_size": sizes[0]}


def cmd_plan(args: argparse.Namespace) -> None:
    from optimum_npu.planner import format_table, plan, to_json
    from optimum_npu.planner.diffusion_plan import PLAN_TARGETS, diffusion_plan_table, is_diffusion_model

    if is_diffusion_model(args.model):   # a Diffusers pipeline: seconds per image (plan-image has every option)
        npus = tuple(args.npu.split(",")) if args.npu else PLAN_TARGETS
        print(diffusion_plan_table(args.model, npus, tensor_parallel_size=(args.tensor_parallel_size or [1])[0],
                                   dtype=args.dtype or "bfloat16"))
        return
    # seq2seq planning (T5, BART, Pegasus, Whisper): memory, encoder / decode latency, Whisper's real-time factor
    from optimum_npu.planner.seq2seq_plan import is_seq2seq_model, seq2seq_plan_records, seq2seq_plan_table

    if is_seq2seq_model(args.model):
        targets = tuple(args.npu.split(",")) if args.npu else PLAN_TARGETS
        if args.json:
            print(json.dumps(seq2seq_plan_records(args.model, targets, seq2seq_knobs(args)), indent=1))
        else:
            print(seq2seq_plan_table(args.model, targets, seq2seq_knobs(args)))
        return
    args.tensor_parallel_size = args.tensor_parallel_size or [1, 2, 4, 8]

    keys = ("max_seq_len", "batch_size", "decoder_batch_sizes", "prefill_chunk_size", "dtype", "npu",
            "kvcache_block_size", "kvcache_num_blocks", "attn_impl", "kvcache_partition_len")
    knobs = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    knobs.setdefault("npu", "atom")
    quantization = quantization_knob(args)
    if quantization:
        knobs["quantization"] = quantization
    if args.expert_tensor_parallel:
        knobs["expert_tensor_parallel"] = True
    results = plan(args.model, knobs, tensor_parallel_sizes=args.tensor_parallel_size,
                   prompt_lengths=args.prompt_lengths, decode_context_len=args.context_len,
                   expert_parallel=args.expert_parallel)
    if args.json:
        print(to_json(results))
        return
    knobs_used = next((r.npu_config for r in results if r.valid), None) or knobs
    shown = ", ".join(f"{k}={knobs_used[k]}" for k in ("dtype", "max_seq_len", "batch_size", "prefill_chunk_size",
                                                        "attn_impl") if knobs_used.get(k) is not None)
    if quantization:
        shown += f", quantization: {QuantizationConfig.from_dict(quantization).label()}"
    if args.expert_tensor_parallel:
        shown += ", experts split by intermediate size"
    print(format_table(results, title=f"{args.model} ({results[0].architecture}) on {results[0].npu}: {shown}"))


def add_plan_command(commands: argparse._SubParsersAction) -> None:
    """Adds ``optimum-npu plan`` to the CLI's subcommands."""
    from optimum_npu.device.spec import PRESETS
    from optimum_npu.planner.models import BUILTIN_MODELS

    parser = commands.add_parser(
        "plan", help="memory per device, fit, TTFT and decode speed for several tensor-parallel sizes",
        description="Plan a deployment without weights: for each tensor-parallel size, the memory per device and "
                    "whether it fits, the simulated TTFT per prompt length and the time per output token and "
                    "throughput per decode batch. Graphs are captured on a weightless model, so an 8B or 70B "
                    "configuration is planned in seconds. Times include the host-link copies per graph call, "
                    "as model.npu_stats reports them.")
    parser.add_argument("model", help="a config.json path, a model directory, a Hub id, or a built-in shape: "
                                      + ", ".join(sorted(BUILTIN_MODELS)) + "; a Diffusers folder or sd15, sdxl, "
                                      "sd3-medium plans seconds per image (50 steps, guidance; plan-image has "
                                      "every option); an encoder-decoder folder or t5-base, t5-large, "
                                      "bart-large, whisper-small, whisper-large-v3 plans memory, encoder and "
                                      "decode latency (and Whisper's real-time factor) per target")
    parser.add_argument("--tensor-parallel-size", type=_int_list,
                        help="configurations to compare, comma separated (default 1,2,4,8; a pipeline or an "
                             "encoder-decoder model: 1)")
    parser.add_argument("--prompt-lengths", type=_int_list, default=[128, 1024],
                        help="prompt lengths to estimate the TTFT of (default 128,1024)")
    parser.add_argument("--context-len", type=int,
                        help="sequence length of the decode estimate (default: max seq len, the slowest step)")
    parser.add_argument("--expert-parallel", action="store_true",
                        help="spread a mixture-of-experts model's experts over each size's devices "
                             "(expert_parallel_size = tensor_parallel_size; default: experts replicated)")
    parser.add_argument("--expert-tensor-parallel", action="store_true",
                        help="split every routed expert's intermediate size over each size's devices instead "
                             "(an all-reduce after the experts; default: experts replicated)")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per configuration")
    group = parser.add_argument_group("compile knobs (see NPUDecoderConfig; unset = derived from the model)")
    group.add_argument("--npu", help=f"target NPU: a preset ({', '.join(sorted(PRESETS))}) or a JSON spec file "
                                        "(default atom; a Diffusers pipeline: comma-separated, default "
                                        "atom,rngd,a100-80gb,h100-sxm)")
    group.add_argument("--max-seq-len", type=int, help="longest prompt + generated tokens (default: model limit, "
                                                       "capped at 2048)")
    group.add_argument("--batch-size", type=int, default=1, help="most sequences generated together (default 1)")
    group.add_argument("--decoder-batch-sizes", type=_int_list,
                       help="decode graphs, comma separated (default: powers of two up to --batch-size)")
    group.add_argument("--prefill-chunk-size", type=int, help="tokens per prefill graph call (default 128)")
    group.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                       help="weight and compute dtype (default: the checkpoint's)")
    group.add_argument("--kvcache-block-size", type=int, help="tokens per KV-cache block (default: max seq len)")
    group.add_argument("--kvcache-num-blocks", type=int,
                       help="blocks in the paged KV pool (default: enough for --batch-size full sequences)")
    group.add_argument("--attn-impl", choices=["eager", "flash_attn"], help="decode attention kernel")
    group.add_argument("--kvcache-partition-len", type=int, help="flash-attention partition length")
    add_quantization_options(group)
    parser.set_defaults(func=cmd_plan)
