"""What a run across processes and nodes needs before its data is built.

A remote corpus is read through streaming's `StreamingDataset`, whose processes on a node
meet in the process group while it is built, so the group is started first (composer's
own `initialize_dist`, which the Trainer then finds started). And each node's cache of it
(`data.local`) must be that node's own: streaming counts a cache's bytes and evicts its
shards per node, so two nodes sharing one folder (a path on a shared filesystem) would
delete each other's shards under their reads. Each node's local rank 0 leaves a mark in
its cache folder named by this launch, the ranks meet, and a node that finds another
node's mark refuses the run.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from composer.devices import DeviceCPU, DeviceGPU
from composer.utils import dist

from shearing.config import KEYS as K
from shearing.config import ConfigError
from shearing.run import Run

MARK = ".node-{launch}-{node}"


def start_process_group(run: Run) -> None:
    """Start the process group now when a remote corpus's datasets will need it."""
    corpus = run.data.corpus if run.data is not None else None
    if corpus is None or not corpus.remote or dist.get_world_size() == 1:
        return
    import torch

    device = DeviceGPU() if torch.cuda.is_available() else DeviceCPU()
    dist.initialize_dist(device, run.cfg.dist_timeout)
    check_own_cache(corpus.cache)


def check_own_cache(cache: str) -> None:
    """Refuse a `data.local` that two nodes share (see the module docstring).

    Raises:
        ConfigError: on every rank, naming the folder and the nodes that share it.
    """
    nodes = dist.get_world_size() // dist.get_local_world_size()
    if nodes == 1:
        return
    launch = [uuid.uuid4().hex[:12]]
    dist.broadcast_object_list(launch)  # one name for this launch, from global rank 0
    folder = Path(cache).expanduser()
    leader = dist.get_local_rank() == 0
    mark = folder / MARK.format(launch=launch[0], node=dist.get_node_rank())
    if leader:
        folder.mkdir(parents=True, exist_ok=True)
        mark.touch()
    dist.barrier()
    seen = []
    if leader:
        pattern = MARK.format(launch=launch[0], node="*")
        seen = sorted(int(p.name.rsplit("-", 1)[1]) for p in folder.glob(pattern))
    everyone = dist.all_gather_object(seen)
    dist.barrier()
    if leader:
        mark.unlink(missing_ok=True)
    shared = sorted({n for s in everyone if len(s) > 1 for n in s})
    if shared:
        raise ConfigError(
            f"{K.data.local} {cache!r} is one folder for nodes {', '.join(map(str, shared))}; "
            "each node needs its own cache (streaming counts and evicts it per node): use a "
            "path on each node's local disk"
        )
