"""Operator CLI placeholder."""
