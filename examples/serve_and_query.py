"""Serve a compiled model with the OpenAI-compatible server and query it with the official ``openai`` client.

    python examples/serve_and_query.py                          # compile a tiny Llama built in code, serve it
    python examples/serve_and_query.py --artifact path/to/model-npu --port 8000

The same server runs from the command line with ``optimum-npu serve ARTIFACT --port 8000``. Here it
runs on a background thread of this script: a completion, a streamed chat answer, the simulated NPU
timings of each, and a few lines of ``/metrics``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import httpx2
from openai import OpenAI

from optimum_npu import NPUModelForCausalLM
from optimum_npu.models.tiny import save_causal_lm
from optimum_npu.serving.server import NPUServer, ServerOptions

#: The byte-level tiny tokenizer has no chat template; a real model's tokenizer brings its own.
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, help="a compiled artifact (default: compile a tiny Llama)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()

    artifact = args.artifact
    if artifact is None:
        work = Path(tempfile.mkdtemp(prefix="optimum-npu-serve-"))
        checkpoint = save_causal_lm(work / "checkpoint", "LlamaForCausalLM", size="tiny")
        model = NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config={
            "max_seq_len": 128, "batch_size": 4, "decoder_batch_sizes": [1, 2, 4], "prefill_chunk_size": 16})
        artifact = work / "model-npu"
        model.save_pretrained(artifact)
        model.release()

    server = NPUServer(artifact, ServerOptions(port=args.port, served_model_name="npu-model", log_level="warning",
                                               chat_template=CHAT_TEMPLATE))
    server.start_background()
    try:
        client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        completion = client.completions.create(model="npu-model", prompt="The NPU", max_tokens=args.max_tokens,
                                               temperature=0)
        timing = completion.model_extra["npu"][0]
        print(f"completion: {completion.choices[0].text!r} ({completion.usage.completion_tokens} tokens, "
              f"finish {completion.choices[0].finish_reason})")
        print(f"  simulated TTFT {timing['simulated_ttft_s'] * 1e6:.1f} us, "
              f"ITL {sum(timing['simulated_itl_s']) / max(len(timing['simulated_itl_s']), 1) * 1e6:.1f} us")
        streamed = []
        for chunk in client.chat.completions.create(model="npu-model", messages=[{"role": "user", "content": "Hi"}],
                                                    max_tokens=args.max_tokens, temperature=0, stream=True,
                                                    stream_options={"include_usage": True}):
            if chunk.choices:
                streamed.append(chunk.choices[0].delta.content or "")
            elif chunk.usage:
                print(f"chat (streamed in {len(streamed)} chunks): {''.join(streamed)!r}, "
                      f"{chunk.usage.total_tokens} tokens in all")
        metrics = httpx2.get(f"{server.url}/metrics").text.splitlines()
        print("\n".join(line for line in metrics if line.startswith(("vllm:generation_tokens_total",
                                                                      "optimum_npu:bucket_steps_total"))))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
