"""``python -m concilium.cli``."""

from concilium.cli import main

main()
