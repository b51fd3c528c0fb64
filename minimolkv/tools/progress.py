"""Training progress as a terminal user expects it, and as a log expects it.

In a terminal (the stream's isatty()), the progress lines between validations
rewrite ONE line in place ("\\r", then the new line padded over the old one), and
each validation's line is kept (ended with a newline), so the screen shows one
line per validation and one moving line. Anywhere else (a log file, a pipe, a
notebook, CI) every line is printed as it comes, exactly as before.

    progress = Progress(sys.stdout)
    train.train(run, dataset, log=progress.keep, status=progress.update)
    progress.close()            # ends a moving line, if one is showing

Why not tqdm, the usual choice: train.py already computes everything the line
shows (steps, loss, validation loss, tokens/s, ETA) in its own format, so tqdm
would only decide where "\\r" goes -- these few lines -- at the price of a runtime
dependency, a second rate and ETA of its own, and, in a notebook, widgets whose
saved state changes the .ipynb at every run.
"""

import shutil
import sys


class Progress:
    """Print progress lines to `stream` (default sys.stdout): moving in a terminal, plain elsewhere."""

    def __init__(self, stream=None):
        self.stream = sys.stdout if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.shown = 0                        # width of the moving line on screen (0: none)

    def update(self, line):
        """A line that the next one may replace (a terminal) or simply follows (elsewhere)."""
        if not self.tty:
            return self.keep(line)
        width = max(shutil.get_terminal_size().columns - 1, 20)
        line = line[:width]                   # a wrapped line could not be rewritten in place
        self.stream.write("\r" + line.ljust(self.shown))
        self.stream.flush()
        self.shown = len(line)

    def keep(self, line):
        """A line that stays: it replaces the moving line, if any, and ends with a newline."""
        if self.tty and self.shown:
            line = "\r" + line.ljust(self.shown)
        self.shown = 0
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        """End the moving line (before an error or a Ctrl-C message is printed below it)."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = 0
