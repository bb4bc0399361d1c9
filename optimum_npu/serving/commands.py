"""``optimum-npu serve``: the CLI subcommand (registered by ``optimum_npu.cli``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_serving_commands(subparsers) -> None:
    """Adds ``serve`` to the CLI's subcommands."""
    serve = subparsers.add_parser(
        "serve", help="serve a compiled model with an OpenAI-compatible HTTP API",
        description="Serve a compiled decoder, text or vision-language (artifact directory or Hub repo id) on "
                    "/v1/completions, /v1/chat/completions, /v1/models, /tokenize, /detokenize, /metrics, /health, with continuous "
                    "batching over its compiled buckets and simulated-NPU timings.")
    serve.add_argument("model", help="compiled artifact directory or Hub repo id")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every endpoint but /health")
    serve.add_argument("--served-model-name", help="the model name clients send (default: the MODEL argument)")
    serve.add_argument("--chat-template", type=Path, help="Jinja chat template file (default: the tokenizer's)")
    serve.add_argument("--tokenizer", help="tokenizer directory or id (default: the artifact's)")
    serve.add_argument("--device", type=int, help="simulated device id to load on")
    serve.add_argument("--num-kv-blocks", type=int, help="KV blocks to use (default: the compiled pool)")
    serve.add_argument("--max-num-batched-tokens", type=int,
                       help="tokens per scheduler step (default: a prefill chunk + the largest decode batch)")
    serve.add_argument("--no-prefix-caching", action="store_true", help="do not reuse cached prompt blocks")
    serve.add_argument("--profile-dir", type=Path, default=Path("npu_profiles"),
                       help="where POST /stop_profile writes Perfetto traces (default ./npu_profiles)")
    serve.add_argument("--grace-period", type=float, default=10.0,
                       help="seconds running requests get to finish on SIGINT/SIGTERM (default 10)")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> None:
    from optimum_npu.serving.server import NPUServer, ServerOptions   # FastAPI/uvicorn only when serving

    template = None
    if args.chat_template is not None:
        try:
            template = args.chat_template.read_text()
        except OSError as err:
            raise ValueError(f"--chat-template {args.chat_template}: cannot read it ({err.strerror})") from None
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} is not a port number; use 1-65535")
    options = ServerOptions(host=args.host, port=args.port, api_key=args.api_key,
                            served_model_name=args.served_model_name, chat_template=template,
                            tokenizer=args.tokenizer, device=args.device, num_kv_blocks=args.num_kv_blocks,
                            max_num_batched_tokens=args.max_num_batched_tokens,
                            enable_prefix_caching=not args.no_prefix_caching, profile_dir=args.profile_dir,
                            grace_period_s=args.grace_period)
    NPUServer(args.model, options).run()
