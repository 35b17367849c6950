"""MACER train and test: the single entry point.

    python main.py --task train --dataset cifar10 --root DATA --ckptdir CKPT --matdir MAT --sigma 0.25
    python main.py --task test  --dataset cifar10 --root DATA --resume_ckpt CKPT/440.pth --matdir MAT

The flags of the public MACER code keep their names and meaning (`cli.py` declares them all).
`main()` parses the arguments, joins the torchrun job if there is one, picks the device once, and
runs one of the two tasks below: training (`train.py`, certifying on its schedule) or certification
of a checkpoint; both certify with an `evaluate.Certifier`. A mistake in the input ends with a
one-line error and exit status 2.
"""
import errno
import sys

import cli
import train
from checkpoint import check_dataset, fit_model, read_checkpoint
from data import NUM_CLASSES
from evaluate import Certifier, command_record, resolve_sigma
from model import input_layer_of
from plumbing.devices import Runner, check_precision, pick_device, speed_settings
from plumbing.errors import UsageError, disk_full_message
from plumbing.torchrun import Distributed
from presets import not_stated


def run_train(args, device, job):
    """`--task train`: train with --method, certifying (hard mode) on the schedule."""
    record = cli.record(args)
    if args.preset and not_stated(args.preset):
        job.print(f'==> note: --preset {args.preset} sets values its sources do not state: {not_stated(args.preset)}',
                  flush=True)
    certifier = Certifier(args, device, job, command_record(record))
    train.run_training(args, device, job, record, certifier)


def run_test(args, device, job):
    """`--task test`: certify a checkpoint on the chosen test images."""
    ckpt = read_checkpoint(args.resume_ckpt)
    check_dataset(ckpt, args.dataset)
    trained_sigma = resolve_sigma(args, ckpt, job)
    why = f'--arch {args.arch}' if 'arch' in args._given else f'--dataset {args.dataset}'
    model = fit_model(ckpt, args.arch, NUM_CLASSES[args.dataset], why, args.input_layer).to(device).eval()
    # no DistributedDataParallel: each rank certifies its own images, with no synchronisation
    runner = Runner(model, device, args.precision, args.memory_format, args.compile)
    certifier = Certifier(args, device, job, command_record(cli.record(args)))
    name = args.name if args.name is not None else ckpt.epoch
    layer = input_layer_of(model)
    if args.matdir is None:
        job.print('==> no --matdir: the results will be printed, not saved', flush=True)
    job.print(f'==> certifying {args.resume_ckpt} ({ckpt.kind} checkpoint, epoch {ckpt.epoch}, {args.arch}'
              f'{"" if layer == "none" else ", input layer " + layer}) on {len(certifier.indices)} {args.dataset} '
              f'{certifier.split} images, sigma {args.sigma}, N0 {args.N0}, N {args.N}, alpha {args.alpha}, mode {args.mode}'
              f'{f", early abstention M {args.early_abstain}" if args.early_abstain else ""}, device {device}',
              flush=True)
    about = {'path': args.resume_ckpt, 'kind': ckpt.kind, 'epoch': ckpt.epoch, 'input_layer': layer,
             'run_id': ckpt.run_id}
    if trained_sigma is not None:
        about['sigma'] = trained_sigma  # the training sigma, beside the identity's certification sigma
    certifier(runner, name, args.mode, extra={'checkpoint': about})


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
