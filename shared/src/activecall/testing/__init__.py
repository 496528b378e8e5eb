"""Helpers for the project's tests: real servers started on free ports, fakes, recorders."""
