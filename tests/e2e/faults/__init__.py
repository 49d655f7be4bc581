"""Fault-injecting helpers for tests/e2e/test_fault_tolerance.py."""
