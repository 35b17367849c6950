"""Copy a training checkpoint without its optimiser, scheduler and RNG states: the files in checkpoints/.

    python reproduce/slim.py runs/demo/macer/latest.pth checkpoints/digits-macer-0.25.pth

The copy keeps the weights, the epoch, the architecture, the run's identity, the arguments and the
training log (`checkpoint.slim`), so `main.py --task test` certifies it exactly as the full file (it
cannot resume training).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from checkpoint import read_checkpoint, save_checkpoint, slim  # noqa: E402
from plumbing.errors import UsageError  # noqa: E402


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit('usage: python reproduce/slim.py SOURCE.pth DEST.pth')
    source, dest = argv
    try:
        ckpt = read_checkpoint(source)
        if ckpt.kind != 'project':
            raise UsageError(f'{source} is not a checkpoint of this project')
        save_checkpoint(dest, slim(ckpt.content))
    except UsageError as e:
        raise SystemExit(f'error: {e}') from None
    print(f'wrote {dest} ({os.path.getsize(dest) / 1e6:.1f} MB)')


if __name__ == '__main__':
    main()
