"""Torch's intra-op thread pool in forked worker processes.

`nlp.pipe(texts, n_process=2)` forks its workers (on Linux). Once the parent has run a
torch operation on more than one thread (one `nlp(text)` call is enough), torch's OpenMP
pool exists in the parent but not in the child, and the child's first parallel torch
operation waits forever for threads that were never forked. A child that runs torch on one
thread never enters that pool. The components that run torch modules register, once, a
handler that sets one intra-op thread in every forked child; the parent keeps its own
setting, and the workers of `nlp.pipe(n_process=...)` share the cores anyway.
"""
import os

_registered = False


def _one_thread_in_child() -> None:
    import torch

    torch.set_num_threads(1)


def torch_fork_safe() -> None:
    """Make forked children run torch on one intra-op thread (idempotent)."""
    global _registered
    if _registered or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(after_in_child=_one_thread_in_child)
    _registered = True
