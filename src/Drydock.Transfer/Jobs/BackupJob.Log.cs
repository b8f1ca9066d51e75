using Drydock.Transfer.Chain;
using Microsoft.Extensions.Logging;

namespace Drydock.Transfer.Jobs;

public sealed partial class BackupJob
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Backup of domain {DomainId} ({DomainName}) starting, level {Level}")]
    private static partial void LogStarting(ILogger logger, string domainId, string domainName, RequestedLevel level);

    [LoggerMessage(EventId = 2, Level = LogLevel.Warning, Message = "Domain {DomainId}: released capture {CaptureId} left by an earlier run (checkpoint {Checkpoint})")]
    private static partial void LogLeftoverReleased(ILogger logger, string domainId, string captureId, string? checkpoint);

    [LoggerMessage(EventId = 3, Level = LogLevel.Information, Message = "Domain {DomainId}: checkpoint repair {Kind} of {Checkpoint}: {Reason}")]
    private static partial void LogRepair(ILogger logger, string domainId, CheckpointRepairKind kind, string checkpoint, string reason);

    [LoggerMessage(EventId = 4, Level = LogLevel.Warning, Message = "Domain {DomainId}: checkpoint {Checkpoint} could not be redefined, its disks go full: {Reason}")]
    private static partial void LogRedefineFailed(ILogger logger, string domainId, string checkpoint, string reason);

    [LoggerMessage(EventId = 5, Level = LogLevel.Information, Message = "Domain {DomainId}: capture {CaptureId} taken, new checkpoint {Checkpoint}")]
    private static partial void LogCaptured(ILogger logger, string domainId, string captureId, string? checkpoint);

    [LoggerMessage(EventId = 6, Level = LogLevel.Information, Message = "Domain {DomainId}: disk {Disk} is read in full ({Code}): {Reason}")]
    private static partial void LogDiskFull(ILogger logger, string domainId, string disk, FullReasonCode code, string reason);

    [LoggerMessage(EventId = 7, Level = LogLevel.Debug, Message = "Domain {DomainId}: disk {Disk} done, {Chunks} chunks / {Bytes} bytes read")]
    private static partial void LogDiskDone(ILogger logger, string domainId, string disk, long chunks, long bytes);

    [LoggerMessage(EventId = 8, Level = LogLevel.Information, Message = "Domain {DomainId}: point #{Sequence} committed")]
    private static partial void LogCommitted(ILogger logger, string domainId, long sequence);

    [LoggerMessage(EventId = 9, Level = LogLevel.Information, Message = "Domain {DomainId}: deleted checkpoint {Checkpoint}, no longer needed by the chain")]
    private static partial void LogCheckpointDeleted(ILogger logger, string domainId, string checkpoint);

    [LoggerMessage(EventId = 10, Level = LogLevel.Warning, Message = "Domain {DomainId}: the point is committed but cleaning up after it failed: {Reason}")]
    private static partial void LogAfterCommitFailed(ILogger logger, Exception exception, string domainId, string reason);

    [LoggerMessage(EventId = 11, Level = LogLevel.Information, Message = "Domain {DomainId}: capture {CaptureId} abandoned, nothing published")]
    private static partial void LogAbandoned(ILogger logger, string domainId, string captureId);

    [LoggerMessage(EventId = 12, Level = LogLevel.Warning, Message = "Domain {DomainId}: abandoning capture {CaptureId} failed, the next run releases it: {Reason}")]
    private static partial void LogAbandonFailed(ILogger logger, Exception exception, string domainId, string captureId, string reason);

    [LoggerMessage(EventId = 13, Level = LogLevel.Error, Message = "Backup of domain {DomainId} failed: {Reason}")]
    private static partial void LogFailed(ILogger logger, Exception exception, string domainId, string reason);

    [LoggerMessage(EventId = 14, Level = LogLevel.Information, Message = "Domain {DomainId}: capture {CaptureId} belongs to another repository's chain (checkpoint {Checkpoint}); left alone")]
    private static partial void LogLeftoverOfOtherChain(ILogger logger, string domainId, string captureId, string checkpoint);

    [LoggerMessage(EventId = 15, Level = LogLevel.Warning, Message = "Backup of domain {DomainId} cancelled: nothing committed, {Released}")]
    private static partial void LogCancelled(ILogger logger, string domainId, string released);
}
