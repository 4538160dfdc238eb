"""KV groups: layers grouped by window in equal-sized groups, block needs, vLLM's sliding-window hit rule."""

from __future__ import annotations

from vivace.engine.kv_groups import (
    KVGroup,
    cached_runs,
    kv_layout,
    single_group,
    skipped_blocks,
    window_allows,
)


def test_gemma3_270m_layers_form_one_global_and_five_local_groups_of_three():
    windows = [None if i % 6 == 5 else 512 for i in range(18)]  # every sixth layer global, as Gemma 3 270M
    layout = kv_layout(windows)
    assert layout.group_size == 3 and layout.has_window
    assert layout.groups[0] == KVGroup(None, (5, 11, 17))
    assert [g.window for g in layout.groups] == [None] + [512] * 5
    assert layout.groups[1:3] == (KVGroup(512, (0, 1, 2)), KVGroup(512, (3, 4, 6)))
    slots = layout.layer_slots(18)
    assert slots[5] == (0, 0) and slots[17] == (0, 2) and slots[6] == (2, 2)
    # Every (group, tensor) pair is one layer's: each tensor holds one layer of every group.
    assert sorted(slots) == [(g, j) for g in range(6) for j in range(3)]


def test_models_without_windows_keep_one_group():
    assert kv_layout([None] * 30) == single_group(30)
    assert not single_group(30).has_window and single_group(30).group_size == 30
    assert kv_layout([None, 8, 8]).groups == (KVGroup(None, (0,)), KVGroup(8, (1,)), KVGroup(8, (2,)))


def test_blocks_needed_counts_a_window_group_s_window_and_chunk_only():
    layout = kv_layout([None, 37, 37])
    # 1000 tokens in blocks of 16: 63 blocks globally; a window group holds ceil((36 + 32) / 16) + 1 = 6.
    assert layout.blocks_needed(1000, 32, 16) == 63 + 2 * 6
    assert layout.blocks_needed(40, 32, 16) == 3 * 3  # shorter than window + chunk: the whole context
    assert single_group(4).blocks_needed(1000, 32, 16) == 63


def test_skipped_blocks_are_those_before_the_next_query_s_window():
    # Query at position 40 with a window of 6 sees keys 35..40: blocks of 4 before key 35 are 0..7.
    assert skipped_blocks(40, 6, 4) == 8
    assert skipped_blocks(5, 6, 4) == 0
    for p in range(200):  # against the definition: block i is skipped iff its last key < p - window + 1
        assert skipped_blocks(p, 37, 16) == sum(1 for i in range(20) if (i + 1) * 16 - 1 < p - 37 + 1)


def test_window_hit_rule_needs_the_window_before_the_hit_point():
    cached = [False, False, True, True, False, True, True, True]
    runs = cached_runs(cached)
    assert runs == [0, 0, 1, 2, 0, 1, 2, 3]
    # Window 9 in blocks of 4: resuming at block n needs ceil(8 / 4) = 2 cached blocks before it.
    assert window_allows(runs, 8, 9, 4) and window_allows(runs, 7, 9, 4)
    assert not window_allows(runs, 6, 9, 4)  # block 4 is gone
    assert window_allows(runs, 4, 9, 4) and not window_allows(runs, 3, 9, 4)
    assert not window_allows(runs, 1, 9, 4)  # at the start only the blocks that exist are needed
    assert window_allows(runs, 0, 9, 4)
