"""The ``optimum-npu push`` and ``optimum-npu cache {list,clear,push,pull}`` subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from optimum_npu.device.memory import format_bytes


def _hub_errors(func):
    """Turns Hub HTTP errors into ValueError so the CLI prints one clean line (exit code 2)."""

    def run(args: argparse.Namespace) -> None:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            func(args)
        except HfHubHTTPError as err:
            status = err.response.status_code if err.response is not None else "?"
            hint = (" (check --token / HF_TOKEN / `hf auth login`)" if status in (401, 403) else "")
            raise ValueError(f"the Hub refused the request ({status}){hint}: {str(err).splitlines()[0]}") from None

    return run


@_hub_errors
def cmd_push(args: argparse.Namespace) -> None:
    from optimum_npu.models.publish import push_artifact

    info = push_artifact(args.compiled_dir, args.repo_id, token=args.token, private=args.private,
                         revision=args.revision, commit_message=args.commit_message, base_model=args.base_model,
                         model_card=not args.no_model_card, speed_estimate=not args.no_speed_estimate)
    print(f"pushed {args.compiled_dir} to {args.repo_id} ({args.revision or 'main'}): {info.commit_url}")


def _cache(args: argparse.Namespace):
    from optimum_npu.hub.cache import CompileCache

    return CompileCache(args.cache_dir)


def _print_entries(entries: list[dict], where: str) -> None:
    print(f"{len(entries)} entries in {where}")
    for entry in entries:
        if "error" in entry:
            print(f"  {entry['key'][:16]}  {entry['error']}")
            continue
        inputs = entry.get("inputs", {})
        knobs = inputs.get("npu_config", {})
        print(f"  {entry['key'][:16]}  {inputs.get('architecture', '?'):<20} npu={knobs.get('npu', '?'):<10} "
              f"dtype={knobs.get('dtype', '?'):<8} max_seq_len={knobs.get('max_seq_len', '?'):<5} "
              f"batch={knobs.get('batch_size', '?'):<3} {format_bytes(entry.get('size_bytes', 0)):>11}  "
              f"{entry.get('created', '')}")


@_hub_errors
def cmd_cache(args: argparse.Namespace) -> None:
    from optimum_npu.hub import remote_cache

    cache = _cache(args)
    keys = args.keys or None
    if args.action == "list":
        if args.repo_id:
            _print_entries(remote_cache.remote_entries(args.repo_id, args.token, args.revision), args.repo_id)
        else:
            _print_entries(cache.entries(), str(cache.root))
    elif args.action == "clear":
        if not keys and not args.all:
            raise ValueError("`optimum-npu cache clear` needs the keys to remove, or --all to remove every entry "
                             f"of {args.repo_id or cache.root}")
        if args.repo_id:
            removed = remote_cache.clear_entries(args.repo_id, keys, token=args.token, revision=args.revision)
        else:
            removed = cache.clear(keys)
        print(f"removed {len(removed)} entries from {args.repo_id or cache.root}")
    elif args.action == "push":
        _require_repo(args)
        pushed = remote_cache.push_entries(cache, args.repo_id, keys, token=args.token, private=args.private,
                                           revision=args.revision)
        print(f"pushed {len(pushed)} entries from {cache.root} to {args.repo_id}")
    else:
        _require_repo(args)
        pulled = remote_cache.pull_entries(cache, args.repo_id, keys, token=args.token, revision=args.revision)
        print(f"pulled {len(pulled)} entries from {args.repo_id} into {cache.root}")


def _require_repo(args: argparse.Namespace) -> None:
    if not args.repo_id:
        raise ValueError(f"`optimum-npu cache {args.action}` needs --repo-id ORG/NAME: the Hub repository that "
                         "holds the shared cache")


def _add_hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored `hf auth login` token)")
    parser.add_argument("--revision", help="branch of the Hub repository (default main; created when pushing)")


def add_hub_commands(commands: argparse._SubParsersAction) -> None:
    """Registers ``push`` and ``cache`` on the ``optimum-npu`` parser."""
    push = commands.add_parser("push", help="upload a compiled artifact to the Hub with a generated model card",
                               description="Verify a compiled artifact, write a model card (compile knobs, target "
                                           "NPU, memory, simulated speed) and upload both to a Hub repository. "
                                           "HF_ENDPOINT selects another Hub.")
    push.add_argument("compiled_dir", type=Path, help="compiled artifact directory (from `optimum-npu export`)")
    push.add_argument("repo_id", help="Hub repository 'namespace/name'; created when missing")
    _add_hub_options(push)
    push.add_argument("--private", action="store_true", default=None,
                      help="create the repository as private (ignored when it exists)")
    push.add_argument("--commit-message", help="commit message (default: 'Upload <arch> compiled for <npu> ...')")
    push.add_argument("--base-model", help="Hub id of the source checkpoint, for the card's base_model metadata")
    push.add_argument("--no-model-card", action="store_true", help="do not write README.md")
    push.add_argument("--no-speed-estimate", action="store_true",
                      help="skip the short simulated generate() that measures the card's speed figures")
    push.set_defaults(func=cmd_push)

    cache = commands.add_parser("cache", help="list, clear, push or pull compile-cache entries",
                                description="The compile cache reuses an artifact when the same weights, config, "
                                            "compile knobs, target and versions are compiled again. Entries live "
                                            "in $OPTIMUM_NPU_CACHE (default ~/.cache/optimum-npu/compiled); a Hub "
                                            "repository (--repo-id) can hold a shared copy.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("keys", nargs="*", help="entry keys or unique key prefixes (default: every entry)")
    common.add_argument("--cache-dir", type=Path, help="local cache directory (default: $OPTIMUM_NPU_CACHE or "
                                                       "~/.cache/optimum-npu/compiled)")
    _add_hub_options(common)
    actions = cache.add_subparsers(dest="action", required=True)
    for name, text, repo_help in (
        ("list", "list the entries", "list the entries of this Hub repository instead"),
        ("clear", "remove entries (the given keys, or all with --all)", "remove them from this Hub repository"),
        ("push", "upload local entries to a Hub repository", "the Hub repository to upload to (required)"),
        ("pull", "download entries from a Hub repository", "the Hub repository to download from (required)"),
    ):
        action = actions.add_parser(name, parents=[common], help=text, description=text)
        action.add_argument("--repo-id", help=repo_help)
        if name == "clear":
            action.add_argument("--all", action="store_true", help="remove every entry (when no keys are given)")
        if name == "push":
            action.add_argument("--private", action="store_true", default=None,
                                help="create --repo-id as private when it does not exist")
        action.set_defaults(func=cmd_cache)
