"""Uni-X Studio launcher.

The studio UI is not built yet (see the project's open issues); this placeholder says so instead of
failing obscurely. It is the only place that parses arguments and picks devices.
"""

import sys


def main() -> int:
    print(
        "Uni-X Studio: the Gradio studio is not built yet. The model core lives in unix_core/ "
        "(from unix_core import UniXConfig, UniXForCausalLM); see README.md.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
