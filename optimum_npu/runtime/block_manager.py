"""The paged KV pool on the host side: which blocks each sequence holds, and the prefix cache.

Keyed by sequence (``Sequence.request_id``). Queries (``can_allocate``, ``can_append``) never
change anything; mutations (``allocate``, ``append``, ``written``, ``free``, ``preempt``) either
succeed whole or raise ``KVCacheFullError`` having changed nothing, so a scheduler can ask first
and a step never fails halfway. With prefix caching, every full block is named by a sha256 chain
over its tokens (the previous block's hash and this block's ids); a new prompt whose leading
blocks hash the same reuses them (reference-counted) and only the rest is prefilled. A cached
block nobody uses stays in an LRU list and is evicted only when a free block is needed.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, defaultdict

from optimum_npu.runtime.sequence import Sequence, SequenceStatus


class KVCacheFullError(RuntimeError):
    """The paged KV pool (or the per-sequence slots) cannot hold what was asked."""


def chain_hash(parent: bytes, tokens: list[int]) -> bytes:
    """The name of a full block: sha256 over its parent's name and its token ids."""
    return hashlib.sha256(parent + b"|" + ",".join(map(str, tokens)).encode()).digest()


class BlockManager:
    """Allocates blocks of ``block_size`` tokens from a pool of ``num_blocks`` to sequences.

    Args:
        num_blocks: blocks in the pool.
        block_size: tokens per block.
        enable_prefix_caching: keep full blocks addressable by their token hash chain.
        max_sequences: rows of per-sequence device state (sliding-window rings): each allocated
            sequence holds one ``slot`` in ``[0, max_sequences)``; None for no limit.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool,
                 max_sequences: int | None = None):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.max_sequences = max_sequences
        # Nothing here grows with num_blocks (a pool size read from an artifact costs nothing until used):
        # blocks never handed out are counted by ``_fresh`` (handed out in order 0, 1, ...), returned ones are
        # stacked in ``_returned`` (the most recently returned is handed out first).
        self._fresh = 0
        self._returned: list[int] = []
        self.ref_count: defaultdict[int, int] = defaultdict(int)
        self._used = 0                                                 # blocks with ref_count > 0
        self.cached: dict[bytes, int] = {}                             # hash -> block
        self.hash_of: dict[int, bytes] = {}                            # block -> hash
        self.evictable: OrderedDict[int, None] = OrderedDict()         # cached, unused, LRU first
        self.tables: dict[object, list[int]] = {}                      # request id -> blocks
        self.chains: dict[object, list[bytes]] = {}                    # request id -> hash of each full block
        self.slots: dict[object, int] = {}                             # request id -> slot

    # ---- queries ------------------------------------------------------------------------------
    @property
    def used_blocks(self) -> int:
        """Blocks held by at least one sequence (kept as a count: the scheduler reads it every step)."""
        return self._used

    @property
    def num_free_blocks(self) -> int:
        """Blocks a request can still get: never used, returned, or cached but unused (evictable)."""
        return self.num_blocks - self._fresh + len(self._returned) + len(self.evictable)

    @property
    def free_blocks(self) -> list[int]:
        """The free blocks, the next one handed out last (for inspection: it lists the whole pool)."""
        return list(range(self.num_blocks - 1, self._fresh - 1, -1)) + self._returned

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold ``tokens`` positions."""
        return -(-tokens // self.block_size)

    def cached_prefix(self, seq: Sequence) -> tuple[list[int], list[bytes]]:
        """The cached blocks (and their hashes) that start ``seq``'s tokens; the last token is never cached
        (its logits are needed)."""
        blocks: list[int] = []
        chain: list[bytes] = []
        if self.enable_prefix_caching:
            tokens = seq.token_ids
            for index in range((len(tokens) - 1) // self.block_size):
                digest = chain_hash(chain[-1] if chain else b"",
                                    tokens[index * self.block_size:(index + 1) * self.block_size])
                block = self.cached.get(digest)
                if block is None:
                    break
                blocks.append(block)
                chain.append(digest)
        return blocks, chain

    def can_allocate(self, seq: Sequence) -> bool:
        """Whether ``allocate(seq)`` would succeed (blocks for all its tokens, and a slot)."""
        if self.max_sequences is not None and len(self.slots) >= self.max_sequences and seq.request_id not in self.slots:
            return False
        hits, _ = self.cached_prefix(seq)
        revived = sum(1 for block in hits if self.ref_count[block] == 0)   # leave the evictable list when reused
        return self.blocks_for(len(seq)) - len(hits) <= self.num_free_blocks - revived

    def _missing(self, seqs: list[Sequence]) -> int:
        """Blocks the sequences need beyond those they hold (a loop: this runs twice per decode step)."""
        size, tables, missing = self.block_size, self.tables, 0
        for seq in seqs:
            need = -(-len(seq.token_ids) // size) - len(tables[seq.request_id])
            if need > 0:
                missing += need
        return missing

    def can_append(self, seqs: list[Sequence]) -> bool:
        """Whether ``append(seqs)`` would succeed: blocks for every position of every sequence."""
        return self._missing(seqs) <= self.num_free_blocks

    # ---- mutations ----------------------------------------------------------------------------
    def allocate(self, seq: Sequence) -> int:
        """Gives ``seq`` a slot and blocks for all its tokens, reusing cached ones; sets and returns
        ``seq.num_computed`` (the cached tokens). Raises ``KVCacheFullError`` and keeps nothing when full."""
        self.free(seq)
        if self.max_sequences is not None and len(self.slots) >= self.max_sequences:
            raise KVCacheFullError(f"all {self.max_sequences} sequence slots are in use (batch_size="
                                   f"{self.max_sequences}); wait for a sequence to finish or compile a larger batch")
        if not self.can_allocate(seq):
            raise self._full()
        hits, chain = self.cached_prefix(seq)
        for block in hits:
            if self.ref_count[block] == 0:
                self.evictable.pop(block, None)
                self._used += 1
            self.ref_count[block] += 1
        self.tables[seq.request_id] = list(hits)
        self.chains[seq.request_id] = chain
        self.slots[seq.request_id] = seq.slot = min(set(range(len(self.slots) + 1)) - set(self.slots.values()))
        self._grow(seq)
        seq.num_computed = len(hits) * self.block_size
        seq.status = SequenceStatus.RUNNING
        return seq.num_computed

    def append(self, seqs: list[Sequence]) -> None:
        """Gives every sequence blocks for all its positions (a decode step's new tokens), all or none."""
        if not self.can_append(seqs):
            raise self._full()
        size, tables = self.block_size, self.tables
        for seq in seqs:                    # _grow, inlined: this runs for every row of every decode step
            table, length = tables[seq.request_id], len(seq.token_ids)
            while len(table) * size < length:
                table.append(self._take_block())

    def written_one_each(self, seqs: list[Sequence]) -> None:
        """``written(seq, 1)`` for every sequence (a decode step)."""
        if self.enable_prefix_caching:
            for seq in seqs:
                self.written(seq, 1)
        else:
            for seq in seqs:
                seq.num_computed += 1

    def written(self, seq: Sequence, count: int) -> None:
        """Records that ``count`` more tokens of ``seq`` are in the cache; full blocks become addressable."""
        seq.num_computed += count
        if not self.enable_prefix_caching:
            return
        chain, table, tokens = self.chains[seq.request_id], self.tables[seq.request_id], seq.token_ids
        for index in range(len(chain), seq.num_computed // self.block_size):
            digest = chain_hash(chain[-1] if chain else b"", tokens[index * self.block_size:(index + 1) * self.block_size])
            chain.append(digest)
            block = table[index]
            if digest not in self.cached and block not in self.hash_of:
                self.cached[digest] = block
                self.hash_of[block] = digest

    def free(self, seq: Sequence) -> None:
        """Returns the sequence's blocks and slot: cached blocks become evictable (most recent last)."""
        for block in reversed(self.tables.pop(seq.request_id, [])):
            self.ref_count[block] -= 1
            if self.ref_count[block] == 0:
                self._used -= 1
                if block in self.hash_of:
                    self.evictable[block] = None
                else:
                    self._returned.append(block)
        self.chains.pop(seq.request_id, None)
        self.slots.pop(seq.request_id, None)

    def preempt(self, seq: Sequence) -> None:
        """Frees a running sequence to make room; it is recomputed (prefilled again) when allocated again."""
        self.free(seq)
        seq.num_computed = 0
        seq.slot = None
        seq.status = SequenceStatus.PREEMPTED

    def table_row(self, seq: Sequence, width: int) -> list[int]:
        """The sequence's block table padded with block 0 to ``width`` entries."""
        row = self.tables.get(seq.request_id, [])
        return row + [0] * (width - len(row))

    # ---- internals ----------------------------------------------------------------------------
    def _grow(self, seq: Sequence) -> None:
        table, size, length = self.tables[seq.request_id], self.block_size, len(seq.token_ids)
        while len(table) * size < length:
            table.append(self._take_block())

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
            raise self._full()
        self.ref_count[block] = 1
        self._used += 1
        return block

    def _full(self) -> KVCacheFullError:
        return KVCacheFullError(
            f"the KV cache is full: all {self.num_blocks} blocks of {self.block_size} tokens are in use; "
            "raise kvcache_num_blocks, lower batch_size or max_seq_len, or generate fewer tokens")
