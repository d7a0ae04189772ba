"""Summaries, tables and reports of runs."""
