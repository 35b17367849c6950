"""MACER train and test: the single entry point.

    python main.py --task train --dataset cifar10 --root DATA --ckptdir CKPT --matdir MAT --sigma 0.25
    python main.py --task test  --dataset cifar10 --root DATA --resume_ckpt CKPT/440.pth --matdir MAT

The flags of the public MACER code keep their names and meaning (`cli.py` declares them all).
`main()` parses the arguments, joins the torchrun job if there is one, picks the device once, and
hands over to training (`train.py`) or certification (`certification.py`). A mistake in the input
ends with a one-line error and exit status 2.
"""
import errno
import sys

import cli
import train
from certification import Certifier, command_record, run_test
from common import UsageError, disk_full_message
from presets import not_stated
from runtime import Distributed, Runner, check_precision, pick_device, speed_settings


def run_train(args, device, job):
    """`--task train`: train with --method, certifying (hard mode) on the schedule."""
    record = cli.record(args)
    if args.preset and not_stated(args.preset):
        job.print(f'==> note: --preset {args.preset} sets values its sources do not state: {not_stated(args.preset)}',
                  flush=True)
    certifier = Certifier(args, device, job, command_record(record))

    def certify_epoch(model, runner, epoch, pending_only, run_id):
        # `runner`'s network without DistributedDataParallel (Certifier takes runner.unsynced)
        job.print(f'==> certifying epoch {epoch} (hard mode, {len(certifier.indices)} test images, N {args.N}'
                  f'{"" if args.matdir else ", printed only: no --matdir"})', flush=True)
        certifier(model, runner, epoch, 'hard', extra={'checkpoint': {'epoch': epoch, 'run_id': run_id}},
                  pending_only=pending_only)

    def make_runner(model):
        return Runner(model, device, args.precision, args.memory_format, args.compile, job)
    train.run_training(args, device, make_runner, certify_epoch, job, record, certifier.check_run)


def main(argv=None):
    args = cli.parse_args(argv)
    job = Distributed()
    failed = True
    try:
        # under torchrun (WORLD_SIZE > 1) every process joins the job: Gloo on CPU, NCCL on GPUs
        job = Distributed.from_environment(args.device, args.dist_timeout)
        cli.resolve(args)
        device = pick_device(args.device, job)
        check_precision(args.precision, device)
        speed_settings(device, args.precision, args.deterministic)
        if args.task == 'test':
            run_test(args, device, job)
        else:
            run_train(args, device, job)
        failed = False
    except UsageError as e:
        print(f'error: {e}' if job.is_main else f'error (rank {job.rank}): {e}', file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f'error: {disk_full_message(e, e.filename or "a file")}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('\ninterrupted: rerun the same command to resume', file=sys.stderr)
        return 130
    finally:
        job.close(failed)
    return 0


if __name__ == '__main__':
    sys.exit(main())
