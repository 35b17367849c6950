"""The value types of the command-line flags (each parses one text or says, in one line, what it must be),
and the parser and help format every command of the project shares.

Standard library only, so `bench/` and `visualize/` can use them without the entry point.
"""
import argparse
import math
import textwrap


def number(kind, low=None, high=None, low_open=False, high_open=False, what='a number'):
    """An argparse type: a finite `kind` within the given bounds, else a message naming the range."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'must be {what}, got {text!r}') from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f'must be {what}, got {text!r}')
        if (low is not None and (value < low or (low_open and value == low))) or \
                (high is not None and (value > high or (high_open and value == high))):
            raise argparse.ArgumentTypeError(f'must be {what}, got {text!r}')
        return value
    parse.__name__ = kind.__name__
    return parse


positive_float = number(float, 0.0, low_open=True, what='a positive number')
nonneg_float = number(float, 0.0, what='a number >= 0')
positive_int = number(int, 1, what='an integer >= 1')
nonneg_int = number(int, 0, what='an integer >= 0')
probability = number(float, 0.0, 1.0, low_open=True, high_open=True, what='a number strictly between 0 and 1')
momentum_type = number(float, 0.0, 1.0, high_open=True, what='a number in [0, 1)')
# a confidence level: 0.05, an alpha typed for a level, is refused, and so is 1 (no interval has it)
level_type = number(float, 0.5, 1.0, low_open=True, high_open=True,
                    what='a confidence level strictly between 0.5 and 1 (0.95 for 95 %)')


def checked(check, what):
    """An argparse type from a check that returns the value or raises ValueError (`rs.stats.check_alpha`, say):
    its message, as the flag's one-line error. So a flag's rule lives once, in the code that owns it."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'must be {what}, got {text!r}') from None
        try:
            return check(value)
        except ValueError as e:
            message = str(e)
            for subject in ('alpha must', 'must'):
                if message.startswith(subject):
                    message = 'must' + message[len(subject):]
                    break
            raise argparse.ArgumentTypeError(message) from None
    parse.__name__ = getattr(check, '__name__', 'value')
    return parse


# the largest L2 distance, in pixel units of [0, 1] images, that a flag may give: above the diameter of the
# largest image cube of any data set here (sqrt(3 * 224 * 224) = 388 for ImageNet), so no larger radius, step or
# noise means anything, and one as large as 1e308 would only overflow into a NaN loss
MAX_DISTANCE = 1000.0
distance = number(float, 0.0, MAX_DISTANCE, low_open=True,
                  what=f'a positive number up to {MAX_DISTANCE:g} (pixel units of [0, 1] images)')
# a seed: numpy's, torch's and the loader's generators take it (and seed + epoch) without overflow
MAX_SEED = 2 ** 62
seed_type = number(int, 0, MAX_SEED, what='an integer from 0 to 2^62')


def radius_type(text):
    """An L2 radius in pixel units of [0, 1] images, from 0 to MAX_DISTANCE; `A/B` is accepted, so Salman et
    al.'s 1/256 units read as they are written there (their `--epsilon 64` is `--epsilon 64/256` = 0.25 here)."""
    top, slash, bottom = text.partition('/')
    value = nonneg_float(top) / positive_float(bottom) if slash else nonneg_float(text)
    if value > MAX_DISTANCE:
        raise argparse.ArgumentTypeError(f'must be a radius from 0 to {MAX_DISTANCE:g} (pixel units of [0, 1] '
                                         f'images), got {text!r}')
    return value


def shard_type(text):
    """`I/K`: slice I (1 to K) of K of a certification's images, for a job array (each task one slice)."""
    index, slash, count = text.partition('/')
    try:
        i, k = int(index), int(count)
    except ValueError:
        i = k = 0
    if not slash or not 1 <= i <= k or k > 1_000_000:
        raise argparse.ArgumentTypeError(f'must be I/K, slice I of K (1 <= I <= K, e.g. 3/8 for the third of eight), '
                                         f'got {text!r}')
    return (i, k)


def file_name(text):
    """A plain file name (the NAME of NAME.mat): no folder, not hidden, not empty."""
    if not text or text in ('.', '..') or text.startswith('.') or '/' in text or '\\' in text or '\0' in text:
        raise argparse.ArgumentTypeError(f'must be a plain file name (no folder, not empty, not starting with a '
                                         f'dot), got {text!r}')
    if len(text.encode()) > 200:
        raise argparse.ArgumentTypeError('must be at most 200 bytes long')
    return text


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the message names the flag and the value, not the usage block."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


class HelpFormatter(argparse.HelpFormatter):
    """Each default once: appended as '(default: X)' unless the help text already says what it is, or there
    is none to show (a required flag, a switch, a default of None)."""

    def _split_lines(self, text, width):
        # never break inside a hyphenated name (a preset, a flag): a reader must be able to copy it
        return textwrap.wrap(self._whitespace_matcher.sub(' ', text).strip(), width, break_on_hyphens=False)

    def _get_help_string(self, action):
        text = action.help or ''
        if 'default' in text or action.default in (None, argparse.SUPPRESS, False) or action.required:
            return text
        return text + ' (default: %(default)s)'
