"""Host-side owner of the paged KV pool: which blocks each batch slot holds, and the prefix cache.

Blocks are allocated as sequences grow and returned when they finish. With prefix
caching on, every full block is identified by a hash chain over its tokens (the hash of
the previous block and this block's token ids); a new prompt whose leading blocks hash
the same reuses them and only the rest is prefilled. Blocks are reference-counted; a
cached block nobody uses stays in an LRU list and is evicted only when a free block is
needed.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, defaultdict


class KVCacheFullError(RuntimeError):
    """The paged KV pool has no free block left."""


def chain_hash(parent: bytes, tokens: list[int]) -> bytes:
    return hashlib.sha256(parent + b"|" + ",".join(map(str, tokens)).encode()).digest()


class BlockManager:
    """Allocates blocks of ``block_size`` tokens from a pool of ``num_blocks``.

    Args:
        num_blocks: blocks in the pool.
        block_size: tokens per block.
        enable_prefix_caching: keep full blocks addressable by their token hash chain.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        # Nothing here grows with num_blocks (a pool size read from an artifact costs nothing until used):
        # blocks never handed out are counted by ``_fresh`` (handed out in order 0, 1, ...), returned ones are
        # stacked in ``_returned`` (the most recently returned is handed out first).
        self._fresh = 0
        self._returned: list[int] = []
        self.ref_count: defaultdict[int, int] = defaultdict(int)
        self.cached: dict[bytes, int] = {}                             # hash -> block
        self.hash_of: dict[int, bytes] = {}                            # block -> hash
        self.evictable: OrderedDict[int, None] = OrderedDict()         # cached, unused, LRU first
        self.tables: dict[int, list[int]] = {}                         # slot -> blocks
        self.tokens: dict[int, list[int]] = {}                         # slot -> token ids so far
        self.chains: dict[int, list[bytes]] = {}                       # slot -> hash of each full block

    @property
    def used_blocks(self) -> int:
        return sum(1 for count in self.ref_count.values() if count > 0)

    @property
    def free(self) -> list[int]:
        """The free blocks, the next one handed out last (for inspection: it lists the whole pool)."""
        return list(range(self.num_blocks - 1, self._fresh - 1, -1)) + self._returned

    def _take_block(self) -> int:
        if self._returned:
            block = self._returned.pop()
        elif self._fresh < self.num_blocks:
            block = self._fresh
            self._fresh += 1
        elif self.evictable:
            block, _ = self.evictable.popitem(last=False)
            del self.cached[self.hash_of.pop(block)]
        else:
            raise KVCacheFullError(
                f"the KV cache is full: all {self.num_blocks} blocks of {self.block_size} tokens are in use; "
                "raise kvcache_num_blocks, lower batch_size or max_seq_len, or generate fewer tokens")
        self.ref_count[block] = 1
        return block

    def _reuse_block(self, block: int) -> None:
        if self.ref_count[block] == 0:
            self.evictable.pop(block, None)
        self.ref_count[block] += 1

    def start_sequence(self, slot: int, prompt: list[int]) -> int:
        """Gives ``slot`` the blocks for ``prompt``; returns how many leading tokens are already cached."""
        self.free_sequence(slot)
        table: list[int] = []
        chain: list[bytes] = []
        if self.enable_prefix_caching:
            full_blocks = (len(prompt) - 1) // self.block_size      # keep >= 1 token to prefill for logits
            for index in range(full_blocks):
                digest = chain_hash(chain[-1] if chain else b"",
                                    prompt[index * self.block_size:(index + 1) * self.block_size])
                block = self.cached.get(digest)
                if block is None:
                    break
                self._reuse_block(block)
                table.append(block)
                chain.append(digest)
        cached_tokens = len(table) * self.block_size
        self.tables[slot] = table
        self.chains[slot] = chain
        self.tokens[slot] = list(prompt[:cached_tokens])
        try:
            self.reserve(slot, len(prompt))
        except KVCacheFullError:
            self.free_sequence(slot)
            raise
        return cached_tokens

    def reserve(self, slot: int, length: int) -> None:
        """Makes sure ``slot`` owns blocks for positions ``[0, length)``."""
        table = self.tables[slot]
        while len(table) * self.block_size < length:
            table.append(self._take_block())

    def append_tokens(self, slot: int, tokens: list[int]) -> None:
        """Records tokens written to the cache; full blocks become addressable by their hash."""
        seq = self.tokens[slot]
        seq.extend(tokens)
        if not self.enable_prefix_caching:
            return
        chain = self.chains[slot]
        for index in range(len(chain), len(seq) // self.block_size):
            digest = chain_hash(chain[-1] if chain else b"", seq[index * self.block_size:(index + 1) * self.block_size])
            chain.append(digest)
            block = self.tables[slot][index]
            if digest not in self.cached and block not in self.hash_of:
                self.cached[digest] = block
                self.hash_of[block] = digest

    def free_sequence(self, slot: int) -> None:
        """Returns the slot's blocks: cached ones become evictable (most recent last), others free."""
        for block in reversed(self.tables.pop(slot, [])):
            self.ref_count[block] -= 1
            if self.ref_count[block] == 0:
                if block in self.hash_of:
                    self.evictable[block] = None
                else:
                    self._returned.append(block)
        self.tokens.pop(slot, None)
        self.chains.pop(slot, None)

    def table_row(self, slot: int, width: int) -> list[int]:
        row = self.tables.get(slot, [])
        return row + [0] * (width - len(row))
