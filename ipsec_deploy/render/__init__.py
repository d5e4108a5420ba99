"""Plan output formats: rich tables, JSON and PowerShell."""
