"""Verification: prove that planned pairs negotiate IPsec with the planned auth and algorithms."""
