using Microsoft.Extensions.Logging;

namespace Drydock.Hypervisor.Qemu;

public sealed partial class QemuDriver
{
    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Debug, Message = "Domain {DomainId}: not running ({Reason})")]
        public static partial void NotRunning(ILogger logger, string domainId, string reason);

        [LoggerMessage(Level = LogLevel.Debug, Message = "Domain {DomainId}: could not connect for events: {Reason}")]
        public static partial void WatchConnectFailed(ILogger logger, string domainId, string reason);

        [LoggerMessage(Level = LogLevel.Information, Message = "Domain {DomainId}: {Kind} ({Detail})")]
        public static partial void Event(ILogger logger, string domainId, DomainEventKind kind, string? detail);

        [LoggerMessage(Level = LogLevel.Information, Message = "Domain {DomainId}: capture {CaptureId} started ({Disks} disks, new checkpoint {Checkpoint})")]
        public static partial void CaptureStarted(ILogger logger, string domainId, string captureId, int disks, string? checkpoint);

        [LoggerMessage(Level = LogLevel.Warning, Message = "Domain {DomainId}: capture {CaptureId} failed while {Step}; releasing what it made")]
        public static partial void CaptureFailed(ILogger logger, string domainId, string captureId, string step, Exception exception);

        [LoggerMessage(Level = LogLevel.Information, Message = "Domain {DomainId}: capture {CaptureId} released ({Outcome})")]
        public static partial void CaptureReleased(ILogger logger, string domainId, string captureId, CaptureOutcome outcome);

        [LoggerMessage(Level = LogLevel.Warning, Message = "Domain {DomainId}: capture {CaptureId}: could not {Step}: {Reason}")]
        public static partial void ReleaseStepFailed(ILogger logger, string domainId, string captureId, string step, string reason);

        [LoggerMessage(Level = LogLevel.Information, Message = "Domain {DomainId}: disk {Disk} read in full: {Reason}")]
        public static partial void FullFallback(ILogger logger, string domainId, string disk, string reason);

        [LoggerMessage(Level = LogLevel.Information, Message = "Domain {DomainId}: restore export {ExportId} opened for {Disks} disks")]
        public static partial void RestoreExportOpened(ILogger logger, string domainId, string exportId, int disks);

        [LoggerMessage(Level = LogLevel.Information, Message = "Domain {DomainId}: NBD server {Action} on {Socket}")]
        public static partial void NbdServer(ILogger logger, string domainId, string action, string socket);

        [LoggerMessage(Level = LogLevel.Information, Message = "Domain {DomainId}: {Action}")]
        public static partial void Lifecycle(ILogger logger, string domainId, string action);
    }
}
