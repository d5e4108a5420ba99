[CmdletBinding()]
param()
# Lists ipsec-deploy's commit-confirmed restores on this host, one
# hashtable per run: a pending task ipsec-deploy-restore-<RunId> with its
# deadline and task state, or a restore that already ran (State Restored or
# Failed, from its result.xml), or a folder with neither (State Orphaned).
# Deadline and Finished are UTC, as yyyy-MM-ddTHH:mm:ssZ, or empty.
$ErrorActionPreference = 'Stop'

$invariant = [System.Globalization.CultureInfo]::InvariantCulture
$runIdPattern = '[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{6}'
$listed = @{}

# A wildcard query returns nothing, rather than an error, when no task matches.
foreach ($task in @(Get-ScheduledTask -TaskName 'ipsec-deploy-restore-*')) {
    if ($task.TaskPath -ne '\' -or -not ($task.TaskName -cmatch "^ipsec-deploy-restore-($runIdPattern)\z")) { continue }
    $runId = $Matches[1]
    $deadline = ''
    $trigger = @($task.Triggers)[0]
    if ($null -ne $trigger -and $trigger.StartBoundary) {
        # StartBoundary is local time, with or without an offset.
        $start = [DateTime]::Parse([string]$trigger.StartBoundary, $invariant)
        $deadline = $start.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", $invariant)
    }
    $listed[$runId] = $true
    @{
        RunId    = $runId
        Deadline = $deadline
        State    = [string]$task.State
        Finished = ''
        Errors   = @()
    }
}

$root = Join-Path $env:ProgramData 'ipsec-deploy'
if (Test-Path -LiteralPath $root) {
    foreach ($folder in @(Get-ChildItem -LiteralPath $root -Directory)) {
        if (-not ($folder.Name -cmatch "^restore-($runIdPattern)\z")) { continue }
        $runId = $Matches[1]
        if ($listed.ContainsKey($runId)) { continue }
        $resultPath = Join-Path $folder.FullName 'result.xml'
        if (Test-Path -LiteralPath $resultPath) {
            $result = Import-Clixml -LiteralPath $resultPath
            @{
                RunId    = $runId
                Deadline = [string]$result.Deadline
                State    = [string]$result.Status
                Finished = [string]$result.Finished
                Errors   = @($result.Errors | ForEach-Object { [string]$_ })
            }
        }
        else {
            @{ RunId = $runId; Deadline = ''; State = 'Orphaned'; Finished = ''; Errors = @() }
        }
    }
}
