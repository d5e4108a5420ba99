"""A simulator of Windows Server 2019 hosts for tests and demos: not Windows.

Each simulated host is a real WinRM/PSRP listener on a loopback address whose
NetSecurity cmdlets run against an emulated policy store. Production code
never imports this package.
"""
