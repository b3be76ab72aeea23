"""The logit codec the thesis script imports, and the archive tools (`assertdistill compress`); see --help.

    from compress import compress_logits, decompress_logits
"""

import sys

from assertdistill.commands.compress import compress_logits, decompress_logits, main, parse_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
