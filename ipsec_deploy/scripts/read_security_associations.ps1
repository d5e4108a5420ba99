[CmdletBinding()]
param()
# Reads this host's IPsec security associations for ipsec-deploy's
# verification, one hashtable per SA. The identities inside a main mode SA
# are embedded CIM instances, which remoting would reduce to text, so the
# values needed are copied out here.
$ErrorActionPreference = 'Stop'

foreach ($sa in @(Get-NetIPsecMainModeSA)) {
    @{
        Kind                 = 'main_mode_sa'
        LocalEndpoint        = [string]$sa.LocalEndpoint
        RemoteEndpoint       = [string]$sa.RemoteEndpoint
        AuthenticationMethod = [string]$sa.LocalFirstId.AuthenticationMethod
        CipherAlgorithm      = [string]$sa.CipherAlgorithm
        HashAlgorithm        = [string]$sa.HashAlgorithm
        GroupId              = [string]$sa.GroupId
        KeyModule            = [string]$sa.KeyModule
    }
}

foreach ($sa in @(Get-NetIPsecQuickModeSA)) {
    @{
        Kind                    = 'quick_mode_sa'
        LocalEndpoint           = [string]$sa.LocalEndpoint
        RemoteEndpoint          = [string]$sa.RemoteEndpoint
        LocalPort               = [string]$sa.LocalPort
        RemotePort              = [string]$sa.RemotePort
        IpProtocol              = [string]$sa.IpProtocol
        FirstTransformType      = [string]$sa.FirstTransformType
        FirstIntegrityAlgorithm = [string]$sa.FirstIntegrityAlgorithm
        FirstCipherAlgorithm    = [string]$sa.FirstCipherAlgorithm
        PfsGroupId              = [string]$sa.PfsGroupId
    }
}
