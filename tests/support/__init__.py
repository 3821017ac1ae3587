"""Test helpers shared by the test suites (real servers started and stopped by PID)."""
