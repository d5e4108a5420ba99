[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][object[]] $Probes
)
# Sends ipsec-deploy's verification probes from this host in one pipeline:
# for each hashtable with ComputerName and an optional Port, a TCP
# connection to that port, or a ping without one. Windows negotiates IPsec
# on the first packet of each. Emits one hashtable per probe, in order.
$ErrorActionPreference = 'Stop'

foreach ($probe in $Probes) {
    $target = [string]$probe.ComputerName
    if ($null -ne $probe.Port) {
        $result = Test-NetConnection -ComputerName $target -Port ([int]$probe.Port) -WarningAction SilentlyContinue
        $succeeded = [bool]$result.TcpTestSucceeded
    }
    else {
        $result = Test-NetConnection -ComputerName $target -WarningAction SilentlyContinue
        $succeeded = [bool]$result.PingSucceeded
    }
    @{ ComputerName = $target; Port = $probe.Port; Succeeded = $succeeded }
}
