[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string] $RunId,
    [Parameter(Mandatory = $true)][string] $Group,
    [Parameter(Mandatory = $true)][string] $PolicyStore,
    [Parameter(Mandatory = $true)][AllowEmptyCollection()][object[]] $Restore,
    [Parameter(Mandatory = $true)][DateTime] $Deadline
)
# Arms ipsec-deploy's commit-confirmed restore for one run on this host.
# Writes a fixed restore script and the payload (the New- operations that
# recreate the host's managed objects from before the run) under
# $env:ProgramData\ipsec-deploy\restore-<RunId>\, readable by Administrators
# and SYSTEM only, and registers the scheduled task
# ipsec-deploy-restore-<RunId> that runs the restore script as SYSTEM once
# at the deadline. disarm_restore.ps1 cancels it. Arming the same run again
# replaces the files and the task. Emits one hashtable.
$ErrorActionPreference = 'Stop'

# The run id becomes part of a task name, a folder name and the task's
# command line, so only the exact form of ipsec-deploy's run ids passes.
if ($RunId -cnotmatch '^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{6}\z') {
    throw "Invalid RunId '$RunId': expected a run id such as 20240115T090000.000Z-0a1b2c."
}
$invariant = [System.Globalization.CultureInfo]::InvariantCulture
$deadlineUtc = $Deadline.ToUniversalTime()
$nowUtc = [DateTime]::UtcNow
if ($deadlineUtc -le $nowUtc) {
    $deadlineText = $deadlineUtc.ToString('yyyy-MM-dd HH:mm:ss', $invariant)
    $nowText = $nowUtc.ToString('yyyy-MM-dd HH:mm:ss', $invariant)
    throw "The restore deadline $deadlineText UTC is not in the future; the host's clock reads $nowText UTC."
}

$root = Join-Path $env:ProgramData 'ipsec-deploy'
$directory = Join-Path $root "restore-$RunId"
$scriptPath = Join-Path $directory 'restore.ps1'
$payloadPath = Join-Path $directory 'payload.xml'
$taskName = "ipsec-deploy-restore-$RunId"

# Gives a folder an owner and a protected ACL of Administrators and SYSTEM
# only, which the files written into it inherit.
function Protect-Directory([string] $Path) {
    $item = Get-Item -LiteralPath $Path -Force
    if ($item.Attributes -band [System.IO.FileAttributes]::ReparsePoint) {
        throw "The folder $Path is a reparse point; ipsec-deploy does not write through links."
    }
    $administrators = New-Object System.Security.Principal.SecurityIdentifier('S-1-5-32-544')
    $system = New-Object System.Security.Principal.SecurityIdentifier('S-1-5-18')
    $acl = New-Object System.Security.AccessControl.DirectorySecurity
    $acl.SetAccessRuleProtection($true, $false)
    $acl.SetOwner($administrators)
    $inheritance = [System.Security.AccessControl.InheritanceFlags]'ContainerInherit, ObjectInherit'
    $propagation = [System.Security.AccessControl.PropagationFlags]::None
    foreach ($identity in @($administrators, $system)) {
        $rule = New-Object System.Security.AccessControl.FileSystemAccessRule($identity, 'FullControl', $inheritance, $propagation, 'Allow')
        $acl.AddAccessRule($rule)
    }
    Set-Acl -LiteralPath $Path -AclObject $acl
}

if (-not (Test-Path -LiteralPath $root)) {
    New-Item -ItemType Directory -Path $root | Out-Null
}
Protect-Directory $root
# A folder left by an earlier arm, or created by someone else before the
# parent was protected, is replaced rather than trusted.
if (Test-Path -LiteralPath $directory) {
    Remove-Item -LiteralPath $directory -Recurse -Force
}
New-Item -ItemType Directory -Path $directory | Out-Null
Protect-Directory $directory

$restoreScript = @'
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string] $RunId
)
# Restores the IPsec objects of ipsec-deploy's managed group to what they
# were before run $RunId, from the payload arm_restore.ps1 left next to this
# script. The scheduled task ipsec-deploy-restore-<RunId> runs it as SYSTEM
# at the deadline unless ipsec-deploy cancelled the task first. It writes
# result.xml, removes the payload and unregisters its task.
$ErrorActionPreference = 'Stop'
if ($RunId -cnotmatch '^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{6}\z') {
    throw "Invalid RunId '$RunId'."
}
$invariant = [System.Globalization.CultureInfo]::InvariantCulture
$directory = Join-Path $env:ProgramData "ipsec-deploy\restore-$RunId"
$payloadPath = Join-Path $directory 'payload.xml'
$resultPath = Join-Path $directory 'result.xml'
$taskName = "ipsec-deploy-restore-$RunId"

$allowedCmdlets = @(
    'New-NetIPsecPhase1AuthSet', 'New-NetIPsecPhase2AuthSet',
    'New-NetIPsecMainModeCryptoSet', 'New-NetIPsecQuickModeCryptoSet',
    'New-NetIPsecMainModeRule', 'New-NetIPsecRule',
    'New-NetIPsecAuthProposal', 'New-NetIPsecMainModeCryptoProposal', 'New-NetIPsecQuickModeCryptoProposal'
)

function Invoke-Operation($Operation) {
    $command = [string]$Operation.Cmdlet
    if ($allowedCmdlets -notcontains $command) {
        throw "ipsec-deploy does not run the cmdlet '$command' in a restore."
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

# Nouns in removal order (rules before the sets they reference) and the
# parameter that names one object.
$removals = [ordered]@{
    'NetIPsecRule'               = 'IPsecRuleName'
    'NetIPsecMainModeRule'       = 'Name'
    'NetIPsecQuickModeCryptoSet' = 'Name'
    'NetIPsecMainModeCryptoSet'  = 'Name'
    'NetIPsecPhase2AuthSet'      = 'Name'
    'NetIPsecPhase1AuthSet'      = 'Name'
}

$failures = New-Object System.Collections.ArrayList
$removed = 0
$created = 0
$deadlineText = ''
try {
    $payload = Import-Clixml -LiteralPath $payloadPath
    $group = [string]$payload.Group
    $store = [string]$payload.PolicyStore
    $deadlineText = ([DateTime]$payload.Deadline).ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", $invariant)
    foreach ($noun in $removals.Keys) {
        foreach ($item in @(& "Get-$noun" -PolicyStore $store)) {
            if ($item.Group -ne $group) { continue }
            $parameters = @{ PolicyStore = $store }
            $parameters[$removals[$noun]] = [string]$item.Name
            try {
                & "Remove-$noun" @parameters -ErrorAction Stop
                $removed++
            }
            catch {
                [void]$failures.Add("Remove-$noun '$($item.Name)': $($_.Exception.Message)")
            }
        }
    }
    foreach ($operation in $payload.Restore) {
        try {
            Invoke-Operation $operation | Out-Null
            $created++
        }
        catch {
            [void]$failures.Add("$([string]$operation.Cmdlet): $($_.Exception.Message)")
        }
    }
}
catch {
    [void]$failures.Add([string]$_.Exception.Message)
}

$status = 'Restored'
if ($failures.Count -gt 0) { $status = 'Failed' }
@{
    RunId    = $RunId
    Status   = $status
    Deadline = $deadlineText
    Finished = [DateTime]::UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", $invariant)
    Removed  = $removed
    Created  = $created
    Errors   = [string[]]$failures.ToArray()
} | Export-Clixml -LiteralPath $resultPath
if (Test-Path -LiteralPath $payloadPath) {
    Remove-Item -LiteralPath $payloadPath -Force
}
Unregister-ScheduledTask -TaskName $taskName -TaskPath '\' -Confirm:$false
'@
Set-Content -LiteralPath $scriptPath -Value $restoreScript -Encoding UTF8
# Depth 10 keeps the nested Parameters and Proposals hashtables whole;
# Export-Clixml's default depth would flatten them to strings.
@{
    RunId       = $RunId
    Group       = $Group
    PolicyStore = $PolicyStore
    Deadline    = $deadlineUtc
    Restore     = $Restore
} | Export-Clixml -LiteralPath $payloadPath -Depth 10

# The full path of powershell.exe, so a PATH entry cannot replace it.
$powershell = Join-Path $env:SystemRoot 'System32\WindowsPowerShell\v1.0\powershell.exe'
$arguments = "-NoProfile -NonInteractive -ExecutionPolicy Bypass -File `"$scriptPath`" -RunId $RunId"
$action = New-ScheduledTaskAction -Execute $powershell -Argument $arguments
$trigger = New-ScheduledTaskTrigger -Once -At $deadlineUtc.ToLocalTime()
$principal = New-ScheduledTaskPrincipal -UserId 'SYSTEM' -LogonType ServiceAccount -RunLevel Highest
# NOTE: StartWhenAvailable is meant to run the restore after a host that was
# off at the deadline starts again; Microsoft's TaskSettings page says it
# applies to time-based tasks with an end boundary, and this was not tried
# on Windows.
$settings = New-ScheduledTaskSettingsSet -StartWhenAvailable -ExecutionTimeLimit (New-TimeSpan -Minutes 30)
Register-ScheduledTask -TaskName $taskName -TaskPath '\' -Action $action -Trigger $trigger -Principal $principal -Settings $settings -Description "ipsec-deploy: restore the managed IPsec objects from before run $RunId unless the run confirms its change." -Force | Out-Null

@{
    RunId     = $RunId
    TaskName  = $taskName
    Deadline  = $deadlineUtc.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", $invariant)
    HostTime  = $nowUtc.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", $invariant)
    Directory = $directory
}
