"""The one exception type the CLI turns into a one-line message and exit code 2."""


class BenchError(Exception):
    """A user-facing error: bad input, missing data, refused checkpoint.

    The CLI prints ``error: <message>`` on stderr and exits with status 2
    (``--debug`` shows the traceback). Nothing stored is touched.
    """
