"""Randomized smoothing, one concept a module:

- `stats`: the statistics (bounds, radius, certificates from sufficient statistics, certified accuracy, ACR);
- `core`: the smoothed classifier (`Smooth`), the only one that samples (torch);
- `certify`: CERTIFY over a data set (torch);
- `results`: the result files' formats (TSV, .mat, the result JSON) and summaries;
- `statslog`: the statistics log, one line of sufficient statistics per certified image;
- `runfiles`: one certification run's files in its folder (names, resuming, the record, finishing);
- `checks`: what a run's own rows and statistics may hold, checked when they are read back;
- `recompute`: a run's certificates at another alpha or bound, from its statistics;
- `runs`: runs read for analysis (per image, on the same images);
- `compare`: intervals over the images and paired tests between runs.

This file imports nothing, so every module but `core` and `certify` (numpy and scipy only) can be used
on a machine without torch, as `visualize/` does.
"""
