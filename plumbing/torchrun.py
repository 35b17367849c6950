"""The processes of a job: one plain process (`SingleProcess`), or a rank of a torchrun job (`Distributed`), behind
one interface (print once, a barrier, sums, gathering, a step run on rank 0 whose error reaches every rank).
"""
import datetime
import os

import torch
import torch.distributed as torch_dist

from plumbing.errors import UsageError

# how long a rank of a torchrun job waits at a collective (a barrier, the final gather of a certification)
# for the others: certification shares can differ by hours (early abstention, a resumed job), so the
# default is a day, not NCCL's 10 minutes; a rank that fails ends the job at once through torchrun
DEFAULT_DIST_TIMEOUT_H = 24.0


class SingleProcess:
    """The job of a plain run: one process, rank 0 of 1. `Distributed` below is the same interface
    for a torchrun job; code that takes a job as an argument (`rs.certify`) defaults to this one."""

    rank, world, local_rank = 0, 1, 0

    @property
    def is_main(self):
        return self.rank == 0

    def print(self, *args, **kwargs):
        """`print` on rank 0 only: one log line per job, not one per process."""
        if self.is_main:
            print(*args, **kwargs)

    def barrier(self):
        pass

    def gather(self, obj):
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        return [obj]

    def broadcast_buffers(self, module):
        """Give every rank rank 0's buffers of `module`: nothing to do for one process."""

    def on_main(self, step):
        """Run `step()` on rank 0 and give its result to every rank; a UsageError there is raised on every rank."""
        return step()

    def close(self):
        pass


class Distributed(SingleProcess):
    """This process's place in a torchrun job: rank `rank` of `world` (rank 0 of 1 when run plainly).

    Only what the project needs: a barrier, sums, gathering Python objects, and `on_main`, which
    runs a step on rank 0 and gives its result, or its UsageError, to every rank, so a bad input
    stops the whole job with one message instead of leaving the other ranks waiting at a barrier.
    """

    def __init__(self, rank=0, world=1, local_rank=0):
        self.rank, self.world, self.local_rank = rank, world, local_rank

    @classmethod
    def from_environment(cls, device_spec, timeout_hours=DEFAULT_DIST_TIMEOUT_H):
        """Join the torchrun job described by the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*):
        NCCL between GPUs, Gloo between CPU processes. `timeout_hours`: how long a rank waits for the
        others at a collective before the job fails."""
        world = int(os.environ.get('WORLD_SIZE', '1'))
        if world <= 1:
            return cls()
        rank, local_rank = int(os.environ['RANK']), int(os.environ.get('LOCAL_RANK', '0'))
        if device_spec not in ('auto', 'cpu', 'cuda'):
            raise UsageError(f'--device {device_spec} under torchrun would put every process on one device: each '
                             f'process takes the GPU of its local rank; use --device cuda (or auto), and '
                             f'CUDA_VISIBLE_DEVICES to choose the GPUs')
        cuda = torch.cuda.is_available() and device_spec != 'cpu'
        if cuda:
            if local_rank >= torch.cuda.device_count():
                raise UsageError(f'process of local rank {local_rank} has no GPU of its own: this machine shows '
                                 f'{torch.cuda.device_count()}; start at most that many processes per node '
                                 f'(torchrun --nproc_per_node)')
            torch.cuda.set_device(local_rank)
        if not torch_dist.is_initialized():
            timeout = datetime.timedelta(hours=timeout_hours)
            if cuda:
                torch_dist.init_process_group('nccl', timeout=timeout, device_id=torch.device('cuda', local_rank))
            else:
                torch_dist.init_process_group('gloo', timeout=timeout)
        return cls(rank, world, local_rank)

    def barrier(self):
        if self.world > 1:
            torch_dist.barrier()

    def all_reduce_sum(self, tensor):
        """Sum `tensor` over the ranks, in place (a no-op for one process)."""
        if self.world > 1:
            torch_dist.all_reduce(tensor)
        return tensor

    def broadcast_buffers(self, module):
        """Give every rank rank 0's buffers of `module` (BatchNorm's running statistics): DDP broadcasts them
        at the start of each forward, so after an epoch's last step the ranks' copies differ until then.
        Called before a checkpoint is saved or certified."""
        if self.world > 1:
            for buffer in module.buffers():
                torch_dist.broadcast(buffer.data, src=0)

    def gather(self, obj):
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        torch_dist.all_gather_object(out, obj)
        return out

    def on_main(self, step):
        if self.world == 1:
            return step()
        box = [None, None]  # (result, error)
        if self.is_main:
            try:
                box[0] = step()
            except UsageError as e:
                box[1] = str(e)
        torch_dist.broadcast_object_list(box, src=0)
        if box[1] is not None:
            raise UsageError(box[1])
        return box[0]

    def close(self, failed=False):
        """Leave the job. After a failure the process group is not torn down: the other ranks may be
        waiting at a collective, where NCCL's teardown would wait with them; this process exits
        instead, and torchrun then ends the others."""
        if self.world > 1 and torch_dist.is_initialized() and not failed:
            torch_dist.destroy_process_group()
