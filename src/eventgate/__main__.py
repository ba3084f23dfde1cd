"""`python -m eventgate` runs the eventgate command."""

from eventgate.cli import main

main()
