"""Certificates recomputed from a run's sufficient statistics, at another alpha or with another bound.

    python visualize/recompute.py MAT/440.json --alpha 0.01 --out MAT/440-alpha0.01
    python visualize/recompute.py MAT/440.json --bound bernstein --out MAT/440-bernstein

A certification run of this tool keeps, per image, what its certificates were computed from
(NAME.stats.jsonl beside NAME.json). From those, this recomputes every radius, the certified
accuracy and the ACR without sampling again: exactly what a fresh run with that alpha and the same
seed gives, early abstention included (docs/METHOD.md, "Sufficient statistics"); where that cannot
be exact it refuses. Writes PREFIX.tsv (the community's log), PREFIX.mat (the MACER encoding, key =
the mode) and PREFIX.json (the summary, and `recomputed`: from which run, which statistics, which
alpha and bound, and the recomputations made before it) as one set, never over a run's files;
records the recomputation in NAME.recomputations.jsonl; prints the summary.

Needs numpy and scipy only.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from plumbing.flagtypes import HelpFormatter, Parser, checked  # noqa: E402
from plumbing.outputs import run_command  # noqa: E402
from rs.recompute import recompute  # noqa: E402
from rs.results import format_summary  # noqa: E402
from rs.stats import BOUNDS, check_alpha  # noqa: E402


def build_parser():
    p = Parser(description='Recompute a certification run\'s certificates at another alpha or with another bound, '
                           'from its NAME.stats.jsonl, without sampling again.', formatter_class=HelpFormatter)
    p.add_argument('record', metavar='NAME.json', help='the JSON of a complete certification run of this tool')
    p.add_argument('--alpha', type=checked(check_alpha, 'a number strictly between 0 and 1/2'), default=None,
                   help='failure probability, below 1/2 (default: the run\'s)')
    p.add_argument('--bound', default=None, choices=sorted({b for bounds in BOUNDS.values() for b in bounds}),
                   help='clopper-pearson (hard only) or bernstein (default: the mode\'s own)')
    p.add_argument('--mode', default=None, choices=tuple(BOUNDS),
                   help='which certificates of the run (default: the run\'s mode; hard for a run of both)')
    p.add_argument('--out', required=True,
                   help='prefix of the output files (PREFIX.tsv, .mat, .json); never the files of a run')
    p.add_argument('--overwrite', action='store_true',
                   help='replace files at the output paths that this tool did not write (never a run\'s files)')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    done = {}

    def work():
        done['result'] = recompute(args.record, args.alpha, args.bound, args.mode, out=args.out, overwrite=args.overwrite)
    status = run_command(work, f'{args.out}.*')
    if status == 0:
        result = done['result']
        r = result['recomputed']
        early = (f'; early test replayed at alpha {r["alpha"]:g}: {r["early_abstentions"]} early abstentions'
                 if r['early_abstain'] else '')
        print(f'recomputed from {r["statistics"]}: {r["mode"]} mode, alpha {r["alpha"]:g} (the run: '
              f'{r["run_alpha"]:g}), bound {r["bound"]} (the run: {r["run_bound"]}); no sampling{early}')
        print(f'{r["integrity"]}; labels {r["labels"]}')
        earlier = len(r['earlier'])
        looked = f'the run at alpha {r["run_alpha"]:g}'
        if earlier:
            looked += f' and {earlier} earlier recomputation{"s" * (earlier > 1)}, listed in the JSON'
        if r['effective_alpha'] > r['alpha']:
            print(f'warning: this run\'s statistics were looked at before ({looked}): if this alpha or bound was '
                  f'chosen after looking, these certificates hold with probability 1 - {r["effective_alpha"]:g}, not '
                  f'1 - {r["alpha"]:g}')
        elif earlier:
            print(f'note: made after {looked}')
        print(format_summary({r['mode']: result['radii']}))
        print(f'wrote {args.out}.tsv, {args.out}.mat and {args.out}.json (all three new); recorded in {r["history"]}')
    return status


if __name__ == '__main__':
    sys.exit(main())
