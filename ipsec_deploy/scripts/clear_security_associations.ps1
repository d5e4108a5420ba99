[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string[]] $RemoteAddress
)
# Removes this host's IPsec security associations with the given peers, so
# that their next packet negotiates afresh under the current rules and sets.
# ipsec-deploy runs it during a staged change, before it verifies a pair:
# SAs outlive the rules and sets that negotiated them. Emits one hashtable
# with the numbers of SAs removed.
$ErrorActionPreference = 'Stop'

$quickModeSAs = @(Get-NetIPsecQuickModeSA | Where-Object { $RemoteAddress -contains [string]$_.RemoteEndpoint })
foreach ($sa in $quickModeSAs) {
    $sa | Remove-NetIPsecQuickModeSA
}
$mainModeSAs = @(Get-NetIPsecMainModeSA | Where-Object { $RemoteAddress -contains [string]$_.RemoteEndpoint })
foreach ($sa in $mainModeSAs) {
    $sa | Remove-NetIPsecMainModeSA
}
@{ QuickModeSAs = $quickModeSAs.Count; MainModeSAs = $mainModeSAs.Count }
