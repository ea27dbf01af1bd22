"""A component's own learning rate inside a pipeline trained with one optimizer."""
from thinc.api import Optimizer

from .heap import trim_heap


class ScaledOptimizer:
    """An optimizer seen through a learning-rate factor (thinc's `lr_scale`).

    A head trained together with a transformer shares the transformer-sized learning
    rate of the one optimizer; `finish_update` through this wrapper moves the head's
    weights `scale` times faster, with the same schedule.
    """

    def __init__(self, optimizer: Optimizer, scale: float):
        self._optimizer = optimizer
        self._scale = scale

    def __call__(self, key, weights, gradient, *, lr_scale: float = 1.0):
        return self._optimizer(key, weights, gradient, lr_scale=lr_scale * self._scale)

    def __getattr__(self, name):
        return getattr(self._optimizer, name)


def finish_update_scaled(model, sgd: Optimizer, scale: float) -> None:
    """`model.finish_update` with the learning rate times `scale` (a component's
    `learn_rate_scale`; a listener has no weights: the shared encoder keeps its own rate).

    Then the C heap's free pages go back to the OS: thinc's torch shim gives each updated
    parameter a new tensor (`param.data = ...`) and glibc does not reuse the freed
    buffers, so a 65,536 x 64 concept table grew the process by ~7 MB a step (17 GB
    after 2,250 linker updates, measured); `trim_heap` keeps it flat for a few ms a step."""
    model.finish_update(sgd if scale == 1.0 else ScaledOptimizer(sgd, scale))
    trim_heap()
