"""Routing: the path tree, the immutable routing snapshot and the table that keeps it current."""
