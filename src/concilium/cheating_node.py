"""``python -m concilium.cheating_node node start ...``: a node that cheats, for fire
drills and tests of a malicious-secure consortium (``rep4``).

It is the ordinary node (``python -m concilium.cli``), except that the MPC
channel of every computation it runs is wrapped in a
:class:`~concilium.net.cheating.CheatingChannel` that tampers with one of the
messages it sends, as ``CONCILIUM_CHEAT=kind:index`` says (``flip:12``: flip a bit
of its 13th message; kinds: :data:`concilium.net.cheating.INJECTIONS`). The
other nodes must abort the run with ``CheatingDetected`` and record it in their
audit logs; nothing is released. ``make demo-four`` runs one.
"""

from __future__ import annotations

import os
from typing import Any

from concilium.errors import ConfigurationError
from concilium.net.cheating import INJECTIONS, CheatingChannel, Injection

__all__ = ["injection_from_environment", "main"]


def injection_from_environment() -> Injection:
    """The injection ``CONCILIUM_CHEAT`` names (``kind:index``)."""
    text = os.environ.get("CONCILIUM_CHEAT", "flip:12")
    kind, _, index = text.partition(":")
    if kind not in INJECTIONS or not index.isdigit():
        raise ConfigurationError(f"CONCILIUM_CHEAT must be kind:index with a kind of "
                                 f"{', '.join(INJECTIONS)}, not {text!r}")
    return Injection(kind, int(index))


def main() -> Any:
    from concilium.cli import main as cli_main
    from concilium.node import jobs

    injection = injection_from_environment()
    honest = jobs._connect

    def cheating(*args: Any, **options: Any) -> Any:
        return CheatingChannel(honest(*args, **options), injection)

    jobs._connect = cheating
    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
