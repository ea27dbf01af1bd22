"""Feature buckets of a candidate pair: token gap, direction, sentence distance, the tokens
between the two mentions, mention counts and first positions. `RelationModel` reads them
as embedding ids; the bucket counts fix the widths of its tables.
"""
from typing import Tuple

N_GAP_BUCKETS = 12
N_DISTANCE_IDS = 2 * N_GAP_BUCKETS  # gap bucket, times tail-after-head or tail-before-head
N_COUNT_BUCKETS = 8
N_POSITION_BUCKETS = 12
N_SENTENCE_BUCKETS = 4  # same sentence, next, two apart, further
MAX_BETWEEN = 32  # tokens between two mentions that the model reads (closer pairs only)


def gap_bucket(gap: int) -> int:
    """0, 1, 2, 3, 4, 5-7, 8-15, 16-31, ... up to 256+: log-spaced beyond 4 tokens."""
    if gap < 5:
        return gap
    return min(3 + int(gap).bit_length() - 1, N_GAP_BUCKETS - 1)


def distance_id(gap: int, tail_after: bool) -> int:
    return gap_bucket(gap) + (0 if tail_after else N_GAP_BUCKETS)


def sentence_bucket(gap: int) -> int:
    return min(gap, N_SENTENCE_BUCKETS - 1)


def between(head: Tuple[int, int], tail: Tuple[int, int]) -> Tuple[int, int]:
    """The tokens between two mentions, (start, end); empty when they touch or overlap,
    or when more than MAX_BETWEEN tokens apart (words in between rarely matter then)."""
    start, end = (head[1], tail[0]) if tail[0] >= head[0] else (tail[1], head[0])
    if end <= start or end - start > MAX_BETWEEN:
        return (0, 0)
    return (start, end)


def count_bucket(n: int) -> int:
    """Number of mentions of an entity: 1, 2, 3, 4, 5-6, 7-9, 10-14, 15+ (the main
    chemical and disease of an abstract are usually its most frequent ones)."""
    for i, upper in enumerate((1, 2, 3, 4, 6, 9, 14)):
        if n <= upper:
            return i
    return N_COUNT_BUCKETS - 1


def position_bucket(token: int) -> int:
    """Where an entity is first mentioned: 0-1, 2-3, 4-7, ... (titles come first)."""
    return min(int(token).bit_length(), N_POSITION_BUCKETS - 1)
