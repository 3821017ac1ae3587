"""Test-only fixtures on top of pgwarden.localcluster (real servers started and stopped by PID)."""
