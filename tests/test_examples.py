"""Every script in ``examples/`` documents itself with ``--help`` and runs end to end on a tiny model.

A new example must add its tiny-settings run to ``TINY_RUNS`` (the test fails otherwise).
"""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from hub_fixtures import hub, hub_server, new_repo_id  # noqa: F401  (fixtures)
from hub_server import TOKEN
from serving_fixtures import free_port

from optimum_npu.schema import MANIFEST_FILE

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))

pytestmark = pytest.mark.slow  # each example runs in a subprocess and compiles its model


def run_text_generation(tmp_path: Path, hub) -> None:
    result = run_script("text_generation.py", "--output", str(tmp_path / "artifact"), "--max-new-tokens", "3")
    assert result.stdout.count("' -> [") == 2  # two prompts, their generated token ids
    assert "decoder_batch_2 x2" in result.stdout and "TTFT" in result.stdout
    assert (tmp_path / "artifact" / MANIFEST_FILE).is_file()


def run_hub_roundtrip(tmp_path: Path, hub) -> None:
    repo = new_repo_id("example")
    result = run_script("hub_roundtrip.py", "--repo-id", repo, "--endpoint", hub.endpoint, "--token", TOKEN,
                        "--private", "--max-seq-len", "64", "--prefill-chunk-size", "16", "--max-new-tokens", "4")
    assert "greedy tokens, pulled vs local artifact: identical" in result.stdout
    assert f"pushed: {hub.endpoint}/{repo}/commit/" in result.stdout
    stored = hub.state.repos[repo]
    files = stored.resolve("main").files
    assert stored.private and {"README.md", MANIFEST_FILE, "graphs/prefill.graph.json"} <= set(files)


def run_image_to_text(tmp_path: Path, hub) -> None:
    artifact = tmp_path / "artifact"
    result = run_script("image_to_text.py", "--output", str(artifact), "--visual-buckets", "64,256",
                        "--max-new-tokens", "3")
    generated = re.search(r"generated token ids: \[([\d, ]*)\]", result.stdout)
    assert generated and len(generated.group(1).split(",")) == 3
    assert "patches->bucket: 16->64, 140->256" in result.stdout and "TTFT" in result.stdout
    assert sorted(p.name for p in (artifact / "visual" / "graphs").iterdir()) == ["visual_256.graph.json",
                                                                                 "visual_64.graph.json"]
    assert (artifact / MANIFEST_FILE).is_file() and (artifact / "preprocessor_config.json").is_file()


def run_serve_and_query(tmp_path: Path, hub) -> None:
    result = run_script("serve_and_query.py", "--port", str(free_port()), "--max-tokens", "5")
    assert "(5 tokens, finish length)" in result.stdout and "simulated TTFT" in result.stdout
    assert re.search(r'vllm:generation_tokens_total\{model_name="npu-model"\} 10\.0', result.stdout)
    assert 'optimum_npu:bucket_steps_total{graph="prefill"' in result.stdout


def run_moe_expert_parallel(tmp_path: Path, hub) -> None:
    result = run_script("moe_expert_parallel.py", "--max-new-tokens", "4")
    assert "greedy tokens, 2 devices vs eager Transformers: identical" in result.stdout
    assert "activated per decode step, load imbalance" in result.stdout


def run_sentence_embeddings(tmp_path: Path, hub) -> None:
    result = run_script("sentence_embeddings.py", "--model", "tiny", "--seq-lens", "8,16", "--batch-sizes", "1,4",
                        "--output", str(tmp_path / "artifact"))
    assert result.stdout.count("' -> '") == 3 and "compiled 4 bucket graphs" in result.stdout
    assert "8 sequences in 3 calls" in result.stdout and "encoder_b4_s8" in result.stdout
    assert (tmp_path / "artifact" / MANIFEST_FILE).is_file() and (tmp_path / "artifact" / "vocab.txt").is_file()


# ---- seq2seq family ----
def run_translation(tmp_path: Path, hub) -> None:
    result = run_script("translation.py", "--output", str(tmp_path / "artifact"), "--max-new-tokens", "4")
    assert result.stdout.count("' -> '") == 4 and "encoder_b2_s16" in result.stdout and "beam copies" in result.stdout
    assert (tmp_path / "artifact" / MANIFEST_FILE).is_file()


def run_speech_recognition(tmp_path: Path, hub) -> None:
    result = run_script("speech_recognition.py")
    assert "2.5 s of audio ->" in result.stdout and "encoder_b1_s100" in result.stdout


def run_text_to_image(tmp_path: Path, hub) -> None:   # diffusion family
    result = run_script("text_to_image.py", "--output", str(tmp_path / "image.png"), "--steps", "2",
                        "--artifact", str(tmp_path / "artifact"))
    assert "(32x32)" in result.stdout and "per denoising step" in result.stdout
    assert (tmp_path / "image.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "artifact" / "unet" / "graphs" / "unet_b2_h32_w32.graph.json").is_file()
def run_image_classification(tmp_path: Path, hub) -> None:
    result = run_script("image_classification.py", "--architecture", "ResNetForImageClassification", "--compare",
                        "--output", str(tmp_path / "artifact"))
    lines = [line for line in result.stdout.splitlines() if line.startswith("image ")]
    assert len(lines) == 6 and all(line.split(" -> ")[1].split(" | eager: ")[0] == line.split(" | eager: ")[1]
                                   for line in lines)   # same label and score as the eager pipeline
    assert "6 images in 2 calls" in result.stdout and "image_b4_px32" in result.stdout
    assert (tmp_path / "artifact" / "preprocessor_config.json").is_file()


TINY_RUNS = {"text_generation.py": run_text_generation, "hub_roundtrip.py": run_hub_roundtrip,
             "image_to_text.py": run_image_to_text, "serve_and_query.py": run_serve_and_query,
             "moe_expert_parallel.py": run_moe_expert_parallel, "sentence_embeddings.py": run_sentence_embeddings,
             "translation.py": run_translation, "speech_recognition.py": run_speech_recognition,
             "text_to_image.py": run_text_to_image,
             "image_classification.py": run_image_classification}


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"{name} failed:\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Subprocesses inherit os.environ: keep their compile cache out of the user's home."""
    monkeypatch.setenv("OPTIMUM_NPU_CACHE", str(tmp_path / "compile-cache"))


def test_every_example_has_a_tiny_run():
    assert EXAMPLES, "examples/ has no scripts"
    assert sorted(TINY_RUNS) == EXAMPLES, "add the new example's tiny-settings run to TINY_RUNS"


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_help(name, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
    assert exit_info.value.code == 0
    first_doc_line = (ROOT / "examples" / name).read_text().split('"""')[1].strip().splitlines()[0]
    assert out.getvalue().startswith("usage:") and first_doc_line in out.getvalue()


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_on_a_tiny_model(name, tmp_path, hub):
    TINY_RUNS[name](tmp_path, hub)
