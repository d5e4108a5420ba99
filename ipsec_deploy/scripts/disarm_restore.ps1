[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string] $RunId
)
# Cancels ipsec-deploy's commit-confirmed restore for one run on this host:
# unregisters the task ipsec-deploy-restore-<RunId> and removes the folder
# $env:ProgramData\ipsec-deploy\restore-<RunId>\. Succeeds when neither
# exists. Emits one hashtable whose PreviousState says what was found:
# the task's state (Ready, Queued, Running ...), Restored or Failed when the
# restore had already run, Orphaned for a folder without task or result, and
# Absent for nothing at all.
$ErrorActionPreference = 'Stop'

if ($RunId -cnotmatch '^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{6}\z') {
    throw "Invalid RunId '$RunId': expected a run id such as 20240115T090000.000Z-0a1b2c."
}
$directory = Join-Path $env:ProgramData "ipsec-deploy\restore-$RunId"
$resultPath = Join-Path $directory 'result.xml'
$taskName = "ipsec-deploy-restore-$RunId"

$previousState = 'Absent'
$errors = @()
# A wildcard query returns nothing, rather than an error, when no task matches.
$tasks = @(Get-ScheduledTask -TaskName 'ipsec-deploy-restore-*' | Where-Object { $_.TaskName -eq $taskName -and $_.TaskPath -eq '\' })
if ($tasks.Count -gt 0) {
    $previousState = [string]$tasks[0].State
    Unregister-ScheduledTask -TaskName $taskName -TaskPath '\' -Confirm:$false
}
elseif (Test-Path -LiteralPath $resultPath) {
    $result = Import-Clixml -LiteralPath $resultPath
    $previousState = [string]$result.Status
    $errors = @($result.Errors | ForEach-Object { [string]$_ })
}
elseif (Test-Path -LiteralPath $directory) {
    $previousState = 'Orphaned'
}

if (Test-Path -LiteralPath $directory) {
    Remove-Item -LiteralPath $directory -Recurse -Force
}

@{
    RunId         = $RunId
    PreviousState = $previousState
    Errors        = $errors
}
