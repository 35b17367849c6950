"""The study's table: per data set, sigma and method, certified accuracy, ACR and training time per epoch.

    python reproduce/summarize.py runs/study digits mnist
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rs.results import read_result_json  # noqa: E402


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    folder, datasets = argv[0], argv[1:]
    print('| data | sigma | method | 0.00 | 0.25 | 0.50 | 0.75 | 1.00 | 1.25 | 1.50 | ACR | s/epoch | epochs |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for dataset in datasets:
        for sigma in ('0.25', '0.50'):
            for method in ('gaussian', 'macer', 'smoothadv'):
                run = os.path.join(folder, f'{dataset}-{sigma}')
                path = os.path.join(run, 'results', f'{method}.json')
                record = read_result_json(path, 'rerun reproduce/study.sh')
                if record is None or 'summary' not in record:
                    sys.exit(f'error: {path} is not a complete result of this tool; rerun reproduce/study.sh')
                hard = record['summary']['hard']
                history = torch.load(os.path.join(run, method, 'latest.pth'), weights_only=True)['history']
                per_epoch = sum(r['seconds'] for r in history) / len(history)
                acc = ' | '.join(f'{a:.2f}' for a in hard['accuracy'][:7])
                print(f'| {dataset} | {sigma} | {method} | {acc} | {hard["acr"]:.3f} | {per_epoch:.2f} | {len(history)} |')


if __name__ == '__main__':
    main()
