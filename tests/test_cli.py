"""The command line, run as a user would (real subprocesses, real files)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from optimum_npu.cli import build_parser
from optimum_npu.models.tiny import save_causal_lm

COMPILE_FLAGS = ["--max-seq-len", "--batch-size", "--decoder-batch-sizes", "--prefill-chunk-size", "--dtype",
                 "--npu", "--kvcache-block-size", "--kvcache-num-blocks", "--attn-impl", "--kvcache-partition-len",
                 "--tensor-parallel-size", "--expert-parallel-size", "--quantization", "--kv-cache", "--group-size"]
GENERATE_FLAGS = ["--prompt", "--prompt-file", "--chat", "--max-new-tokens", "--do-sample", "--temperature", "--top-k",
                  "--top-p", "--repetition-penalty", "--seed", "--stream", "--stats-json", "--device", "--tokenizer",
                  "--enable-prefix-caching"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optimum_npu.cli", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("command, flags", [("export", COMPILE_FLAGS + ["--revision"]),
                                            ("generate", GENERATE_FLAGS)])
def test_help_documents_every_option(command, flags):
    subparser = build_parser()._subparsers._group_actions[0].choices[command]
    help_text = subparser.format_help()
    for flag in flags:
        assert flag in help_text, f"{command} --help does not mention {flag}"
    for action in subparser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} option {action.option_strings} has no help text"


def test_every_compile_knob_has_a_flag():
    """The export flags are generated from NPUDecoderConfig's compile knobs (quantization has its own flags)."""
    import dataclasses

    from optimum_npu.cli.model_commands import _npu_config_from_args, compile_knob_names
    from optimum_npu.models.decoder.npu_config import ATTN_IMPLS, NPUDecoderConfig

    knobs = {f.name for f in dataclasses.fields(NPUDecoderConfig) if not f.metadata.get("runtime")}
    assert set(compile_knob_names()) == knobs - {"quantization"}
    export = build_parser()._subparsers._group_actions[0].choices["export"]
    actions = {a.dest: a for a in export._actions}
    assert knobs - {"quantization"} <= set(actions)
    assert actions["attn_impl"].choices == list(ATTN_IMPLS) and actions["prefill_logits"].choices == ["last", "all"]
    help_text = export.format_help()
    assert "in this release" not in help_text
    args = build_parser().parse_args(["export", "ckpt", "out", "--decoder-batch-sizes", "1,2", "--batch-size", "2",
                                      "--kvcache-num-blocks", "9", "--prefill-logits", "all", "--quantization", "int8"])
    config = _npu_config_from_args(args)
    assert config == {"batch_size": 2, "decoder_batch_sizes": [1, 2], "kvcache_num_blocks": 9, "prefill_logits": "all",
                      "quantization": {"weights": "int8"}}
    NPUDecoderConfig.from_dict(config)  # the flags' values are valid knobs


def test_flags_follow_the_dataclass_without_a_cli_edit():
    """A field added to a config dataclass is a flag at the next parse: named after it, typed from its annotation,
    its docstring ``Args:`` entry as help; runtime options are not compile flags; a type without parser fails."""
    import argparse
    import dataclasses

    from optimum_npu.cli.config_flags import add_config_flags

    @dataclasses.dataclass(frozen=True)
    class Knobs:
        """Knobs.

        Args:
            chunk_size: tokens per chunk,
                said over two lines.
            sizes: graph sizes.
            mode: how to run.
            device: runtime option: where.

        Returns:
            nothing.
        """

        chunk_size: int | None = None
        sizes: tuple[int, ...] | None = None
        mode: str = dataclasses.field(default="a", metadata={"choices": ("a", "b")})
        device: int = dataclasses.field(default=0, metadata={"runtime": True})

    parser = argparse.ArgumentParser()
    assert add_config_flags(parser, Knobs) == ["chunk_size", "sizes", "mode"]
    args = parser.parse_args(["--chunk-size", "8", "--sizes", "1,2", "--mode", "b"])
    assert (args.chunk_size, args.sizes, args.mode) == (8, [1, 2], "b")
    assert parser.parse_args([]).mode is None  # unset: the dataclass default applies
    help_text = " ".join(parser.format_help().split())
    assert "tokens per chunk, said over two lines." in help_text and "how to run. (default a)" in help_text
    assert "--device" not in help_text and "nothing" not in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])

    @dataclasses.dataclass(frozen=True)
    class Odd:
        """Args:
            ratio: a float knob.
        """

        ratio: float = 0.5

    with pytest.raises(TypeError, match="Odd.ratio: no parser for its annotation"):
        add_config_flags(argparse.ArgumentParser(), Odd)


def test_help_and_version_do_not_load_torch():
    """Parsing the command line imports no model stack (``optimum-npu --help`` answers at once)."""
    probe = ("import sys, contextlib, io\nimport optimum_npu.cli as cli\n"
             "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
             "    cli.build_parser().parse_args(['--version'])\n"
             "print(out.getvalue().strip(), sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    from optimum_npu import __version__

    assert result.returncode == 0 and result.stdout.strip() == f"optimum-npu {__version__} []", result


@pytest.mark.slow
def test_export_then_generate(tmp_path, capsys):
    from optimum_npu.cli import main

    checkpoint = save_causal_lm(tmp_path / "ckpt", "Qwen3ForCausalLM")
    artifact = tmp_path / "qwen3-npu"
    exported = run_cli("export", str(checkpoint), str(artifact), "--max-seq-len", "64", "--batch-size", "2",
                       "--decoder-batch-sizes", "1,2", "--prefill-chunk-size", "16")
    assert exported.returncode == 0, exported.stderr
    assert "compiling graphs" in exported.stderr  # the progress bar over graphs
    assert sorted(p.name for p in (artifact / "graphs").iterdir()) == [
        "decoder_batch_1.graph.json", "decoder_batch_2.graph.json", "prefill.graph.json"]

    stats_file = tmp_path / "stats.json"
    generated = run_cli("generate", str(artifact), "--prompt", "Hello", "--prompt", "a longer prompt here",
                        "--max-new-tokens", "5", "--stats-json", str(stats_file))
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.count("--- prompt:") == 2
    stats = json.loads(stats_file.read_text())
    assert stats["buckets"] == {"prefill": 3, "decoder_batch_2": 4}  # 5 + 20 tokens -> 1 + 2 chunks of 16
    assert stats["sequences"] == 2 and stats["ttft_ms"] > 0 and stats["tokens_per_s"] > 0

    # the second export runs in this process (one interpreter start less); it reads the cache the subprocess filled
    assert main(["export", str(checkpoint), str(tmp_path / "again"), "--max-seq-len", "64", "--batch-size", "2",
                 "--decoder-batch-sizes", "1,2", "--prefill-chunk-size", "16"]) == 0
    again = capsys.readouterr()
    assert "reused the compiled artifact from the compile cache (key " in again.out
    assert "compiling graphs" not in again.err


@pytest.mark.slow
def test_bad_knob_is_a_clean_error(tmp_path, capsys):
    """In process (``main`` is the console script's entry point): the exit status and stderr a user sees."""
    from optimum_npu.cli import main

    checkpoint = save_causal_lm(tmp_path / "ckpt", "LlamaForCausalLM")
    returncode = main(["export", str(checkpoint), str(tmp_path / "out"), "--batch-size", "2",
                       "--decoder-batch-sizes", "1,4"])
    stderr = capsys.readouterr().err
    assert returncode == 2
    assert "decoder_batch_sizes entry 4 is larger than batch_size=2" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_export_and_generate_a_vision_language_checkpoint(tmp_path, capsys):
    from optimum_npu.models.vlm.tiny import save_vlm

    checkpoint = save_vlm(tmp_path / "vlm")
    artifact = tmp_path / "vlm-npu"
    exported = run_cli("export", str(checkpoint), str(artifact), "--max-seq-len", "128", "--batch-size", "1",
                       "--prefill-chunk-size", "32", "--visual-buckets", "64,256")
    assert exported.returncode == 0, exported.stderr
    assert sorted(p.name for p in (artifact / "visual" / "graphs").iterdir()) == [
        "visual_256.graph.json", "visual_64.graph.json"]
    generated = run_cli("generate", str(artifact), "--prompt", "hello", "--max-new-tokens", "3", "--device", "5")
    assert generated.returncode == 0, generated.stderr
    assert "npu:5" in generated.stdout and "decoder_batch_1 x2" in generated.stdout
    from optimum_npu.cli import main   # the refusal in process: one interpreter start less

    wrong = main(["export", str(save_causal_lm(tmp_path / "llm", "LlamaForCausalLM")), str(tmp_path / "x"),
                  "--visual-buckets", "64"])
    assert wrong == 2 and "--visual-buckets applies to vision-language models" in capsys.readouterr().err


def test_generate_options_prompt_file_prefix_caching_and_stream_refusal(llama, tmp_path, capsys):
    from optimum_npu.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("A shared system prompt, long enough to fill a block or two of tokens. Hi\n\n"
                       "A shared system prompt, long enough to fill a block or two of tokens. Bye\n")
    assert main(["generate", str(llama.artifact), "--prompt-file", str(prompts), "--max-new-tokens", "3",
                 "--enable-prefix-caching", "--device", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- prompt:") == 2 and "npu:3" in out
    assert main(["generate", str(llama.artifact), "--prompt", "a", "--prompt", "b", "--stream"]) == 2
    assert "--stream prints one sequence" in capsys.readouterr().err
    assert main(["generate", str(llama.artifact), "--prompt-file", str(tmp_path / "missing.txt")]) == 2
    assert "--prompt-file" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_leaves_nothing_behind_and_prints_only_text(tmp_path, monkeypatch, capsys):
    """The README's main command: compiles, reloads, matches eager Transformers, removes its temporary folder."""
    import tempfile

    from optimum_npu.cli import main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "greedy tokens vs eager Transformers on the same model: identical" in out
    assert "removed at the end" in out and list(tmp_path.iterdir()) == []
    assert all(ch.isprintable() or ch == "\n" for ch in out), "non-printable bytes reached the terminal"


def test_generate_runtime_options_follow_the_dataclass():
    """``generate``'s runtime flags are NPUDecoderConfig's runtime fields (help from its docstring): ``--device``
    takes one id or one id per rank, ``--enable-prefix-caching`` is a switch; unset flags leave the defaults."""
    import dataclasses

    from optimum_npu.models.decoder.npu_config import NPUDecoderConfig

    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    runtime = {f.name for f in dataclasses.fields(NPUDecoderConfig) if f.metadata.get("runtime")}
    flags = {action.dest for action in generate._actions}
    assert runtime - {"profile", "collectives"} <= flags and not {"profile", "collectives"} & flags
    help_text = " ".join(generate.format_help().split())
    assert "the simulated device id of the first rank (the ranks use consecutive ids), or one id per rank" in help_text
    assert generate.parse_args(["art", "--device", "3"]).device == 3
    assert generate.parse_args(["art", "--device", "0,2"]).device == (0, 2)
    unset = generate.parse_args(["art"])
    assert unset.device is None and unset.enable_prefix_caching is None
    assert generate.parse_args(["art", "--enable-prefix-caching"]).enable_prefix_caching is True
    with pytest.raises(SystemExit):
        generate.parse_args(["art", "--device", "x"])
