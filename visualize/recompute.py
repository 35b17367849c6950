"""Certificates recomputed from a run's sufficient statistics, at another alpha or with another bound.

    python visualize/recompute.py MAT/440.json --alpha 0.01 --out MAT/440-alpha0.01
    python visualize/recompute.py MAT/440.json --bound bernstein --out MAT/440-bernstein

A certification run of this tool keeps, per image, what its certificates were computed from
(NAME.stats.jsonl beside NAME.json). From those, this recomputes every radius, the certified
accuracy and the ACR without sampling again: exactly what a fresh run with that alpha and the same
seed gives (docs/METHOD.md, "Sufficient statistics"). Writes PREFIX.tsv (the community's log),
PREFIX.mat (the MACER encoding, key = the mode) and PREFIX.json (the summary, and `recomputed`:
from which run, which statistics, which alpha and bound); prints the summary.

Needs numpy and scipy only.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from argtypes import HelpFormatter, Parser, probability  # noqa: E402
from common import VERSION, atomic_write_text, output_folder, run_command  # noqa: E402
from rs.results import format_summary, header_line, recompute, write_mat  # noqa: E402
from rs.stats import BOUNDS  # noqa: E402


def build_parser():
    p = Parser(description='Recompute a certification run\'s certificates at another alpha or with another bound, '
                           'from its NAME.stats.jsonl, without sampling again.', formatter_class=HelpFormatter)
    p.add_argument('record', metavar='NAME.json', help='the JSON of a complete certification run of this tool')
    p.add_argument('--alpha', type=probability, default=None, help='failure probability (default: the run\'s)')
    p.add_argument('--bound', default=None, choices=sorted({b for bounds in BOUNDS.values() for b in bounds}),
                   help='clopper-pearson (hard only) or bernstein (default: the mode\'s own)')
    p.add_argument('--mode', default='hard', choices=tuple(BOUNDS), help='which certificates of the run')
    p.add_argument('--out', required=True, help='prefix of the output files (PREFIX.tsv, .mat, .json)')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    done = {}

    def work():
        result = done['result'] = recompute(args.record, args.alpha, args.bound, args.mode)
        output_folder(args.out)
        atomic_write_text(args.out + '.tsv', header_line() + ''.join(r.line() for r in result['rows']))
        write_mat(args.out + '.mat', {args.mode: result['radii']})
        content = {'version': VERSION, 'recomputed': result['recomputed'], 'summary': {args.mode: result['summary']}}
        atomic_write_text(args.out + '.json', json.dumps(content, indent=1) + '\n')
    status = run_command(work, f'{args.out}.*')
    if status == 0:
        r = done['result']['recomputed']
        print(f'recomputed from {r["statistics"]}: {args.mode} mode, alpha {r["alpha"]:g} (the run: '
              f'{r["run_alpha"]:g}), bound {r["bound"]} (the run: {r["run_bound"]}); no sampling'
              + (f'; {r["early_abstentions_kept"]} early abstentions kept' if r['early_abstentions_kept'] else ''))
        print(format_summary({args.mode: done['result']['radii']}))
        print(f'wrote {args.out}.tsv, {args.out}.mat, {args.out}.json')
    return status


if __name__ == '__main__':
    sys.exit(main())
