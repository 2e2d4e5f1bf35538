"""Tests for qewd_twisted.documents: one suite run against every back-end."""
