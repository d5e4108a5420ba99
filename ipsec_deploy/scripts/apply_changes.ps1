[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][object[]] $Operations
)
# Applies one host's change set for ipsec-deploy, in the order given. Each
# operation is a hashtable:
#   Cmdlet      one of the NetSecurity cmdlets in $allowedCmdlets
#   Parameters  the cmdlet's parameters
#   Proposals   parameter name -> list of proposal operations (same shape)
#   Undo        operations that reverse this one
# When an operation fails, the Undo operations of every operation applied
# before it run in reverse order, then the failure is reported, so the host
# is not left half-changed. One hashtable is emitted per operation.
$ErrorActionPreference = 'Stop'

$allowedCmdlets = @(
    'New-NetIPsecPhase1AuthSet', 'Set-NetIPsecPhase1AuthSet', 'Remove-NetIPsecPhase1AuthSet',
    'New-NetIPsecPhase2AuthSet', 'Set-NetIPsecPhase2AuthSet', 'Remove-NetIPsecPhase2AuthSet',
    'New-NetIPsecMainModeCryptoSet', 'Set-NetIPsecMainModeCryptoSet', 'Remove-NetIPsecMainModeCryptoSet',
    'New-NetIPsecQuickModeCryptoSet', 'Set-NetIPsecQuickModeCryptoSet', 'Remove-NetIPsecQuickModeCryptoSet',
    'New-NetIPsecMainModeRule', 'Set-NetIPsecMainModeRule', 'Remove-NetIPsecMainModeRule',
    'New-NetIPsecRule', 'Set-NetIPsecRule', 'Remove-NetIPsecRule',
    'New-NetIPsecAuthProposal', 'New-NetIPsecMainModeCryptoProposal', 'New-NetIPsecQuickModeCryptoProposal'
)

function Invoke-Operation($Operation) {
    $command = [string]$Operation.Cmdlet
    if ($allowedCmdlets -notcontains $command) {
        throw "ipsec-deploy does not run the cmdlet '$command'."
    }
    $parameters = @{}
    foreach ($key in $Operation.Parameters.Keys) {
        $parameters[$key] = $Operation.Parameters[$key]
    }
    if ($null -ne $Operation.Proposals) {
        foreach ($key in $Operation.Proposals.Keys) {
            $parameters[$key] = @(foreach ($proposal in $Operation.Proposals[$key]) { Invoke-Operation $proposal })
        }
    }
    & $command @parameters -ErrorAction Stop
}

$applied = New-Object System.Collections.ArrayList
$index = 0
foreach ($operation in $Operations) {
    try {
        Invoke-Operation $operation | Out-Null
    }
    catch {
        $failure = $_
        $undoErrors = @()
        for ($i = $applied.Count - 1; $i -ge 0; $i--) {
            # No @() here: @($null) is an array of one $null, which would run
            # an empty undo for an operation that has none.
            foreach ($undo in $applied[$i].Undo) {
                try { Invoke-Operation $undo | Out-Null }
                catch { $undoErrors += [string]$_.Exception.Message }
            }
        }
        @{
            Index      = $index
            Status     = 'Failed'
            Message    = [string]$failure.Exception.Message
            ErrorId    = [string]$failure.FullyQualifiedErrorId
            Category   = [string]$failure.CategoryInfo.Category
            RolledBack = $applied.Count
            UndoErrors = $undoErrors
        }
        return
    }
    [void]$applied.Add($operation)
    @{ Index = $index; Status = 'Applied' }
    $index++
}
