[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string] $Group,
    [Parameter(Mandatory = $true)][string] $PolicyStore
)
# Reads the IPsec objects of one policy store for ipsec-deploy: every object
# of the managed group in full, and a summary of every other connection
# security rule. Emits one hashtable per object, so the result does not
# depend on how CIM instances serialise over PowerShell Remoting.
$ErrorActionPreference = 'Stop'

# The computer's NetBIOS name comes first, so the caller can check that the
# session reached the host it meant before it changes anything.
@{ Kind = 'computer'; ComputerName = [string]$env:COMPUTERNAME }

function ConvertTo-StringList($Values) {
    if ($null -eq $Values) { return ,@() }
    return ,@($Values | ForEach-Object { [string]$_ })
}

function ConvertTo-ProposalData($Proposal) {
    $data = @{ CimClass = [string]$Proposal.CimClass.CimClassName }
    foreach ($property in $Proposal.CimInstanceProperties) {
        # A pre-shared key is a secret: it never leaves the host.
        if ($null -ne $property.Value -and $property.Name -ne 'PreSharedKey') {
            $data[$property.Name] = [string]$property.Value
        }
    }
    return $data
}

$setCmdlets = [ordered]@{
    phase1_auth_set       = 'Get-NetIPsecPhase1AuthSet'
    phase2_auth_set       = 'Get-NetIPsecPhase2AuthSet'
    main_mode_crypto_set  = 'Get-NetIPsecMainModeCryptoSet'
    quick_mode_crypto_set = 'Get-NetIPsecQuickModeCryptoSet'
}
foreach ($kind in $setCmdlets.Keys) {
    foreach ($set in @(& $setCmdlets[$kind] -PolicyStore $PolicyStore)) {
        if ($set.Group -ne $Group) { continue }
        $data = @{
            Kind        = $kind
            Name        = [string]$set.Name
            DisplayName = [string]$set.DisplayName
            Description = [string]$set.Description
            Group       = [string]$set.Group
            # An ArrayList, not @(): pypsrp 0.9.1 reads hashtables inside an object[]
            # as generic objects and leaves their entries unparsed.
            Proposals   = [System.Collections.ArrayList]@($set.Proposal | ForEach-Object { ConvertTo-ProposalData $_ })
        }
        if ($kind -eq 'main_mode_crypto_set') { $data.MaxMinutes = [string]$set.MaxMinutes }
        if ($kind -eq 'quick_mode_crypto_set') { $data.PerfectForwardSecrecyGroup = [string]$set.PerfectForwardSecrecyGroup }
        $data
    }
}

foreach ($rule in @(Get-NetIPsecMainModeRule -PolicyStore $PolicyStore)) {
    if ($rule.Group -ne $Group) { continue }
    $addresses = $rule | Get-NetFirewallAddressFilter
    @{
        Kind              = 'main_mode_rule'
        Name              = [string]$rule.Name
        DisplayName       = [string]$rule.DisplayName
        Description       = [string]$rule.Description
        Group             = [string]$rule.Group
        Enabled           = [string]$rule.Enabled
        MainModeCryptoSet = [string]$rule.MainModeCryptoSet
        Phase1AuthSet     = [string]$rule.Phase1AuthSet
        LocalAddress      = ConvertTo-StringList $addresses.LocalAddress
        RemoteAddress     = ConvertTo-StringList $addresses.RemoteAddress
    }
}

foreach ($rule in @(Get-NetIPsecRule -PolicyStore $PolicyStore)) {
    $addresses = $rule | Get-NetFirewallAddressFilter
    $ports = $rule | Get-NetFirewallPortFilter
    $data = @{
        Kind             = 'ipsec_rule'
        Name             = [string]$rule.Name
        DisplayName      = [string]$rule.DisplayName
        Group            = [string]$rule.Group
        Enabled          = [string]$rule.Enabled
        Mode             = [string]$rule.Mode
        InboundSecurity  = [string]$rule.InboundSecurity
        OutboundSecurity = [string]$rule.OutboundSecurity
        LocalAddress     = ConvertTo-StringList $addresses.LocalAddress
        RemoteAddress    = ConvertTo-StringList $addresses.RemoteAddress
        Protocol         = [string]$ports.Protocol
        LocalPort        = ConvertTo-StringList $ports.LocalPort
        RemotePort       = ConvertTo-StringList $ports.RemotePort
    }
    if ($rule.Group -eq $Group) {
        $data.Description = [string]$rule.Description
        $data.Phase1AuthSet = [string]$rule.Phase1AuthSet
        $data.Phase2AuthSet = [string]$rule.Phase2AuthSet
        $data.QuickModeCryptoSet = [string]$rule.QuickModeCryptoSet
        $data.KeyModule = [string]$rule.KeyModule
    }
    else {
        # Rules the tool does not own are only summarised, for overlap warnings.
        $data.Kind = 'foreign_ipsec_rule'
    }
    $data
}
