"""The eventgate command."""
