"""Length-grouped batches: repeatable per (seed, epoch), complete, and far less padding than shuffling."""

import random
from pathlib import Path

import pytest

from weitiao.data.batching import length_grouped_batches, padding_fraction, sorted_batches

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "train.tsv"


def long_tailed(n: int = 5000, seed: int = 0) -> list[int]:
    """Token counts like real text: most short, a long tail, capped at 512."""
    rng = random.Random(seed)
    return [min(512, int(rng.lognormvariate(3.0, 0.8)) + 2) for _ in range(n)]


def test_same_seed_and_epoch_give_the_same_batches():
    lengths = long_tailed()
    assert length_grouped_batches(lengths, 16, seed=1, epoch=3) == length_grouped_batches(lengths, 16, seed=1, epoch=3)


def test_batches_change_with_the_epoch_and_the_seed():
    lengths = long_tailed()
    first = length_grouped_batches(lengths, 16, seed=1, epoch=0)
    assert first != length_grouped_batches(lengths, 16, seed=1, epoch=1)
    assert first != length_grouped_batches(lengths, 16, seed=2, epoch=0)
    # not just reordered: the membership of batches differs too
    assert {tuple(sorted(b)) for b in first} != {tuple(sorted(b)) for b in length_grouped_batches(lengths, 16, seed=1, epoch=1)}


def test_batch_membership_changes_across_epochs_even_with_distinct_lengths():
    # A global sort by length would give the same batches every epoch (only their order
    # would change); buckets keep SGD's randomness.
    lengths = list(range(1, 3201))
    random.Random(0).shuffle(lengths)
    members = [{tuple(sorted(b)) for b in length_grouped_batches(lengths, 16, seed=0, epoch=e)} for e in (0, 1)]
    assert len(members[0] & members[1]) < len(members[0]) // 2


@pytest.mark.parametrize("n, batch_size", [(5000, 16), (1001, 32), (7, 4), (3, 8)])
@pytest.mark.parametrize("group", [True, False])
def test_every_index_exactly_once(n, batch_size, group):
    batches = length_grouped_batches(long_tailed(n), batch_size, seed=0, epoch=0, group=group)
    flat = [j for b in batches for j in b]
    assert sorted(flat) == list(range(n))
    # all batches full but one, which holds the remainder
    full, rest = divmod(n, batch_size)
    assert sorted((len(b) for b in batches), reverse=True) == [batch_size] * full + ([rest] if rest else [])


def test_padding_far_below_shuffled_batches_on_long_tailed_lengths():
    lengths = long_tailed()
    grouped = padding_fraction(lengths, length_grouped_batches(lengths, 16, seed=0, epoch=0))
    shuffled = padding_fraction(lengths, length_grouped_batches(lengths, 16, seed=0, epoch=0, group=False))
    assert shuffled > 0.5
    assert grouped < 0.15
    assert grouped < shuffled / 5


@pytest.mark.skipif(not SST2.is_file(), reason="shared data not beside the project")
def test_padding_on_sst2_lengths():
    # Word count + 2 stands in for the token count ([CLS] and [SEP]); it has the same long tail.
    rows = SST2.read_text(encoding="utf-8").split("\n")[1:20001]
    lengths = [len(r.split("\t")[0].split()) + 2 for r in rows if r]
    grouped = padding_fraction(lengths, length_grouped_batches(lengths, 32, seed=42, epoch=0))
    shuffled = padding_fraction(lengths, length_grouped_batches(lengths, 32, seed=42, epoch=0, group=False))
    assert grouped < 0.1 < 0.5 < shuffled


def test_padding_fraction_reference_values():
    assert padding_fraction([2, 4], [[0, 1]]) == pytest.approx(0.25)  # 6 tokens in a 2x4 block
    assert padding_fraction([2, 4], [[0], [1]]) == 0.0
    assert padding_fraction([1, 1, 1, 5], [[0, 1, 2, 3]]) == pytest.approx(1 - 8 / 20)
    assert padding_fraction([], []) == 0.0


def test_sorted_batches_go_longest_first_and_cover_everything():
    lengths = [3, 9, 1, 7, 5]
    assert sorted_batches(lengths, 2) == [[1, 3], [4, 0], [2]]


def test_collate_rounds_the_padded_length_up_to_a_multiple():
    from weitiao.tasks.classification import Encoded, collate

    data = Encoded([[5, 6, 7], [8] * 9, [9]], None, [0, 1, 0])
    plain = collate(data, [0, 2], 0, 2, False)
    eight = collate(data, [0, 1, 2], 0, 2, False, multiple=8)
    assert plain["input_ids"].shape == (2, 3)
    assert eight["input_ids"].shape == (3, 16)  # longest 9 -> 16
    assert eight["attention_mask"].sum().item() == 13 and eight["input_ids"][0, :3].tolist() == [5, 6, 7]
