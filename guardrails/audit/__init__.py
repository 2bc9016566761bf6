"""Audit: reproduce the test-account experiment on a synthetic platform and measure the guard."""

from .platform import BENIGN, BUYER, CELEBRITY, MINOR, ROLE_NAMES, SELLER, Platform, make_platform

__all__ = ["Platform", "make_platform", "BENIGN", "CELEBRITY", "MINOR", "SELLER", "BUYER", "ROLE_NAMES"]
