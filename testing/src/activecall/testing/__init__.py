"""Helpers for the project's tests: real servers started on free ports, fakes, recorders.

They are a distribution of their own (``testing/``, ``activecall-testing``): ``make setup`` installs
it for the tests and benchmarks, and no service image does.
"""
