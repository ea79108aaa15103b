"""Wiring of the roles: the samsvar command and the demo. The only package importing several
roles."""
