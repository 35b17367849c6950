"""The plumbing: what keeps runs and results safe, and nothing of the method. A reader of the method can skip it.

- `errors`: the one-line errors a user meets (`UsageError`, a full disk).
- `files`: atomic writes, the clean-up of what a killed write left, folder checks.
- `locks`: one process at a time on a run's folder or result files (`FolderLock`).
- `outputs`: the `visualize/` commands' outputs written as one set, and their shared ending.
- `records`: the tool's version, what a record says about how it was made, a training run folder's names.
- `flagtypes`: the value types of command-line flags, and the parser every command shares.
- `devices`: the device, the precision and how the network is run (`Runner`).
- `torchrun`: one process or a rank of a torchrun job, behind one interface.
- `rng`: the generator states of a process, saved in a checkpoint and put back on resume.

Standard library only, except `devices`, `torchrun` and `rng` (torch): `visualize/` imports no torch. Nothing
here imports `rs/` or `methods/` (a flag's rule that lives there reaches argparse through `flagtypes.checked`).
"""
