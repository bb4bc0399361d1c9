"""The ``export``, ``generate``, ``profile`` and ``demo`` subcommands (the family comes from the family registry)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
from pathlib import Path


def compile_knob_names() -> list[str]:
    """The knobs of ``NPUDecoderConfig`` that are flags of their own (``quantization`` has three flags)."""
    from optimum_npu.cli.config_flags import config_fields
    from optimum_npu.models.decoder.npu_config import NPUDecoderConfig

    return [f.name for f in config_fields(NPUDecoderConfig, skip=("quantization",))]


def add_compile_options(parser: argparse.ArgumentParser) -> None:
    """One flag per compile knob of ``NPUDecoderConfig``, generated from the dataclass (``cli/config_flags.py``)."""
    from optimum_npu.cli.config_flags import add_config_flags
    from optimum_npu.models.decoder.npu_config import NPUDecoderConfig
    from optimum_npu.planner.commands import add_quantization_options

    group = parser.add_argument_group("compile knobs (see NPUDecoderConfig; unset = derived from the model)")
    add_config_flags(group, NPUDecoderConfig, skip=("quantization",))
    add_quantization_options(group)


def _npu_config_from_args(args: argparse.Namespace) -> dict:
    from optimum_npu.cli.config_flags import knobs_from_args
    from optimum_npu.planner.commands import quantization_knob

    knobs = knobs_from_args(args, compile_knob_names())
    quantization = quantization_knob(args)
    return {**knobs, "quantization": quantization} if quantization else knobs


def add_generation_options(parser: argparse.ArgumentParser) -> None:
    from optimum_npu.cli.config_flags import add_config_flags
    from optimum_npu.models.decoder.npu_config import NPUDecoderConfig

    # the runtime options of NPUDecoderConfig, generated from the dataclass; ``profile`` is the profile command,
    # ``collectives="torch.distributed"`` needs one process per rank (torchrun, docs/reference.md)
    add_config_flags(parser.add_argument_group("runtime options (see NPUDecoderConfig)"), NPUDecoderConfig,
                     skip=("profile", "collectives"), runtime=True)
    group = parser.add_argument_group("generation")
    group.add_argument("--prompt", action="append", help="a prompt; repeat for a batch (default: 'Hello')")
    group.add_argument("--prompt-file", type=Path, help="a text file of prompts, one per line (added to --prompt)")
    group.add_argument("--chat", action="store_true", help="wrap each prompt as a user message in the tokenizer's "
                                                           "chat template")
    group.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate per prompt (default 32)")
    group.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    group.add_argument("--temperature", type=float, help="sampling temperature")
    group.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    group.add_argument("--top-p", type=float, help="nucleus sampling probability mass")
    group.add_argument("--repetition-penalty", type=float, help="penalty > 1 discourages repeated tokens")
    group.add_argument("--seed", type=int, default=0, help="random seed for sampling (default 0)")
    group.add_argument("--stream", action="store_true", help="print tokens as they are generated (one prompt only)")
    group.add_argument("--stats-json", type=Path, help="also write the simulated NPU figures to this JSON file")
    group.add_argument("--tokenizer", help="tokenizer directory or Hub id (default: the artifact's own files)")


def _generate(model, tokenizer, args: argparse.Namespace, reference=None) -> None:
    """Generates from ``--prompt``s, prints text and NPU figures; compares greedy tokens with ``reference``."""
    import torch
    from transformers import TextStreamer

    torch.manual_seed(args.seed)
    prompts = _prompts(args)
    if args.stream and len(prompts) > 1:
        raise ValueError(f"--stream prints one sequence as it is generated, but {len(prompts)} prompts were given: "
                         "give one prompt, or leave --stream out to print each completion at the end")
    texts = prompts
    if args.chat:
        if not tokenizer.chat_template:
            raise ValueError("--chat needs a chat template, and this tokenizer has none: leave --chat out or pass "
                             "--tokenizer with one")
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts]
    inputs = tokenizer(texts, return_tensors="pt", padding=True)
    options = {k: getattr(args, k) for k in ("temperature", "top_k", "top_p", "repetition_penalty")
               if getattr(args, k) is not None}
    streamer = TextStreamer(tokenizer, skip_prompt=True) if args.stream else None
    output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=args.do_sample,
                            streamer=streamer, **options)
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    if streamer is None:
        for prompt, text in zip(prompts, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            shown = text if text.replace("\n", "").isprintable() else f"{text!r} (not printable text: shown as repr)"
            print(f"--- prompt: {prompt!r}\n{shown}")
    if reference is not None and not args.do_sample:
        expected = reference.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False, **options)
        same = expected.shape == output.shape and bool((expected == output).all())
        print(f"greedy tokens vs eager Transformers on the same model: {'identical' if same else 'DIFFERENT'}")
    print(model.npu_stats)
    if args.stats_json:
        args.stats_json.write_text(json.dumps(model.npu_stats.to_dict(), indent=1))


def _prompts(args: argparse.Namespace) -> list[str]:
    """``--prompt``s then the lines of ``--prompt-file`` (blank lines skipped); default ``["Hello"]``."""
    prompts = list(args.prompt or [])
    if args.prompt_file is not None:
        try:
            prompts += [line for line in args.prompt_file.read_text().splitlines() if line.strip()]
        except OSError as err:
            raise ValueError(f"--prompt-file {args.prompt_file}: cannot read it ({err.strerror})") from None
    return prompts or ["Hello"]


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
    options = {"visual_buckets": args.visual_buckets, "pipeline_config": getattr(args, "pipeline_config", None)}
    npu_config = family.export_config(_npu_config_from_args(args), options)
    with _cache_hits() as hits:
        model = family.model_class.from_pretrained(path, export=True, npu_config=npu_config)
    model.save_pretrained(args.output)
    for hit in hits:
        print(f"reused the compiled artifact from the compile cache ({hit}); OPTIMUM_NPU_DISABLE_CACHE=1 recompiles")
    print(f"{'wrote' if hits else 'compiled'} {family.summary(model)} into {args.output}")


@contextlib.contextmanager
def _cache_hits():
    """Collects the compile cache's hit reports (``compile cache hit <key> (<root>) ...``) while exporting."""
    hits: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("compile cache hit "):
                hits.append("key " + message.removeprefix("compile cache hit ").split(" in ")[0])

    cache_logger = logging.getLogger("optimum_npu.hub.cache")
    handler, level = Collect(logging.INFO), cache_logger.level
    cache_logger.addHandler(handler)
    cache_logger.setLevel(logging.INFO)
    try:
        yield hits
    finally:
        cache_logger.removeHandler(handler)
        cache_logger.setLevel(level)


#: Files any of which makes a folder loadable by ``AutoTokenizer``.
TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def _load_for_run(args: argparse.Namespace, profile: bool = False):
    from transformers import AutoTokenizer

    path, family = _family(args.model, {})
    source = args.tokenizer or path
    if args.tokenizer is None and not any((path / name).is_file() for name in TOKENIZER_MARKERS):
        raise ValueError(f"{args.model} holds no tokenizer files ({', '.join(TOKENIZER_MARKERS[:2])}...), so prompts "
                         "cannot be encoded: pass --tokenizer DIR_OR_HUB_ID (e.g. the source checkpoint), or "
                         "recompile with the tokenizer shipped (export from a checkpoint folder that has one, or "
                         "from_model(..., tokenizer_dir=...))")
    device = 0 if args.device is None else args.device
    placement = family.placement(device, profile, bool(args.enable_prefix_caching))
    model = family.model_class.from_pretrained(path, npu_config=placement)
    return model, AutoTokenizer.from_pretrained(source, padding_side="left")


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
    with tempfile.TemporaryDirectory(prefix="optimum-npu-demo-") as tmp:
        tokenizer.save_pretrained(tmp)
        model = NPUModelForCausalLM.from_model(hf_model, npu_config=_npu_config_from_args(args), tokenizer_dir=tmp)
        target = args.output or Path(tmp) / "model-npu"  # without --output nothing is left behind
        model.save_pretrained(target)
        kept = f"saved in {target}" if args.output else "in a temporary folder removed at the end (--output keeps it)"
        print(f"compiled graphs {', '.join(model.npu_graphs)}: {kept}")
        model.release()
        reloaded = NPUModelForCausalLM.from_pretrained(target)
        try:
            print("(random weights: the text is noise, shown as repr; the figures are what the demo shows)")
            _generate(reloaded, tokenizer, args, reference=hf_model)
        finally:
            reloaded.release()
