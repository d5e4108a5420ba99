"""Transports that carry the executor's scripts to hosts: today PowerShell Remoting."""
