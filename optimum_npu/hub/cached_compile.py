"""Compiling through the compile cache: a verified hit is copied, a miss is compiled and stored.

A local miss is first pulled from the cache's Hub repository (``CompileCache.repo_id``) when it
has one; every hit, local or pulled, is then checked against the model being compiled (the key's
``verify_hit``) before it is used.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from optimum_npu.hub.cache import CompileCache
from optimum_npu.hub.cache_key import CacheKey
from optimum_npu.hub.remote_cache import pull_entries

logger = logging.getLogger("optimum_npu.hub.cache")  # one logger for the whole compile cache


def fetch_entry(cache: CompileCache, key: str, target: Path) -> bool:
    """Copies entry ``key`` to ``target``, pulling it from ``cache.repo_id`` on a local miss; False if absent."""
    if cache.verified_artifact(key) is None and cache.repo_id:
        try:
            pull_entries(cache, cache.repo_id, [key], token=cache.token)
        except Exception as err:  # offline, no such repo or entry, refused entry: compile instead
            logger.warning("compile cache: %s not pulled from %s (%s)", key[:16], cache.repo_id, err)
    return cache.fetch(key, target)


def compile_with_cache(target: Path, cache_key: Callable[[], CacheKey], compile_fn: Callable[[Path], Any],
                       compile_cache: "CompileCache | bool | str | os.PathLike | None" = None,
                       verify_hit: Callable[[Path], Any] | None = None) -> bool:
    """Fills ``target`` with a compiled artifact: from the cache on a hit, else by ``compile_fn(target)``.

    Args:
        target: directory to create (must not exist yet).
        cache_key: computes the key (only called when the cache is on).
        compile_fn: compiles into the given directory.
        compile_cache: see ``CompileCache.resolve``.
        verify_hit: checks that a hit's artifact (copied to ``target``) is what ``compile_fn`` would
            produce and raises otherwise; default: the key's ``verify_hit`` (``decoder_cache_key``
            sets one). A hit that fails is warned about, removed from the cache and recompiled.

    Returns:
        True on a cache hit, False when ``compile_fn`` ran.
    """
    cache = CompileCache.resolve(compile_cache)
    if cache is None:
        compile_fn(target)
        return False
    start = time.perf_counter()
    key = cache_key()
    try:
        hit = fetch_entry(cache, key.key, target)
    except OSError as err:  # unreadable cache directory: compile as if there were none
        logger.warning("compile cache %s unusable (%s); compiling", cache.root, err)
        shutil.rmtree(target, ignore_errors=True)
        hit = False
    check = verify_hit or key.verify_hit
    if hit and check is not None:
        try:
            check(target)
        except Exception as err:  # any failure: the entry is not the compile asked for (poisoned or stale)
            logger.warning("compile cache entry %s is not the compile asked for (%s: %s); removing it and "
                           "recompiling", key.key[:16], type(err).__name__, err)
            cache.remove(key.key)
            shutil.rmtree(target, ignore_errors=True)
            hit = False
    if hit:
        logger.info("compile cache hit %s (%s) in %.3f s", key.key[:16], cache.root, time.perf_counter() - start)
        return True
    compile_fn(target)
    try:
        cache.store(key, target)
    except OSError as err:  # read-only or full disk: the compiled model is still good
        logger.warning("compile cache: could not store %s in %s (%s)", key.key[:16], cache.root, err)
        return False
    logger.info("compile cache miss %s: compiled and stored in %s", key.key[:16], cache.root)
    return False
