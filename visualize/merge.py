"""The shards of a certification, each certified by one task of a job array, joined into one run.

    python visualize/merge.py runs/cert/shard-1 runs/cert/shard-2 runs/cert/shard-3 --out runs/cert/all

Each SHARD_DIR is the --matdir of one `main.py --task test ... --shard I/K` (docs/RUNS.md). The shards are
read as a resume reads a run (rows, statistics, digests, summary, .mat) and must be the K slices of one
certification: the same model digest, data, images, sigma, N0, N, alpha, seed, mode and every other key of
the identity, the same K, each slice once. A missing, repeated or foreign shard is refused, naming it. The
merged run in --out is the one a single process writes on the same images: the same logs (each row's time
as measured where it ran), statistics, .mat and JSON identity and summary, plus the shards it came from.
Its folder must not hold the run's files already; nothing of the shards is changed.

Needs numpy and scipy only.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from plumbing.flagtypes import HelpFormatter, Parser, file_name  # noqa: E402
from plumbing.outputs import run_command  # noqa: E402
from rs.merge import merge  # noqa: E402


def build_parser():
    p = Parser(description='Join the shards of a certification (--shard I/K, one --matdir each) into one run.',
               formatter_class=HelpFormatter)
    p.add_argument('shards', nargs='+', metavar='SHARD_DIR', help='the --matdir of each shard, all K of them')
    p.add_argument('--out', required=True, help='folder of the merged run (created; must not hold its files)')
    p.add_argument('--name', default=None, type=file_name,
                   help='the run\'s name in the shard folders (default: the only run each holds)')
    p.add_argument('--out_name', default=None, type=file_name,
                   help='the merged run\'s name in --out (default: the shards\')')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    done = {}

    def work():
        done['record'] = merge(args.shards, args.out, args.name, args.out_name)
    status = run_command(work, f'{args.out}')
    if status == 0:
        record = done['record']
        files = record.get('files', {})
        summary = record.get('summary', {})
        for mode, s in summary.items():
            cells = ', '.join(f'{r:g}: {a:.3f}' for r, a in zip(s['radius'], s['accuracy']))
            print(f'{mode}: {s["num_img"]} images; certified accuracy at radius {cells}')
        print(f'merged {len(args.shards)} shards into {os.path.join(args.out, files.get("mat", ""))} and the logs, '
              f'statistics and JSON beside it')
    return status


if __name__ == '__main__':
    sys.exit(main())
