"""Tests of the pure decision core (pgwarden.core): tables, transcripts, properties, architecture."""
