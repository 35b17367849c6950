"""Copy a training checkpoint without its optimiser, scheduler and RNG states: the files in checkpoints/.

    python reproduce/slim.py runs/demo/macer/latest.pth checkpoints/digits-macer-0.25.pth

The copy keeps the weights, the epoch, the architecture, the arguments and the training log, so
`main.py --task test` certifies it exactly as the full file (it cannot resume training).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from checkpoint import FORMAT, save_checkpoint  # noqa: E402

KEEP = ('format', 'net', 'epoch', 'arch', 'dataset', 'normalization', 'num_classes', 'args', 'history')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit('usage: python reproduce/slim.py SOURCE.pth DEST.pth')
    source, dest = argv
    content = torch.load(source, map_location='cpu', weights_only=True)
    if content.get('format') != FORMAT:
        raise SystemExit(f'error: {source} is not a checkpoint of this project')
    # weights in the default layout, whatever memory format the run used
    content['net'] = {k: v.contiguous() for k, v in content['net'].items()}
    save_checkpoint(dest, {k: content[k] for k in KEEP if k in content})
    print(f'wrote {dest} ({os.path.getsize(dest) / 1e6:.1f} MB)')


if __name__ == '__main__':
    main()
