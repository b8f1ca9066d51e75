using Microsoft.Extensions.Logging;

namespace Drydock.Hypervisor.Libvirt;

/// <summary>Log messages of <see cref="LibvirtDriver"/>.</summary>
public sealed partial class LibvirtDriver
{
    [LoggerMessage(1, LogLevel.Information, "Connected to libvirt {Uri} on host {HostName} (libvirt {Version})")]
    private partial void LogConnected(string uri, string hostName, string version);

    [LoggerMessage(2, LogLevel.Information, "Capture {CaptureId} of domain {DomainId} started: disks {Disks}, new checkpoint {Checkpoint}")]
    private partial void LogCaptureStarted(string captureId, string domainId, string disks, string? checkpoint);

    [LoggerMessage(3, LogLevel.Warning, "Capture {CaptureId} of domain {DomainId}: disk {Disk} is read in full: {Reason}")]
    private partial void LogDiskFull(string captureId, string domainId, string disk, string reason);

    [LoggerMessage(4, LogLevel.Information, "Capture {CaptureId} of domain {DomainId} released ({Outcome})")]
    private partial void LogCaptureReleased(string captureId, string domainId, CaptureOutcome outcome);

    [LoggerMessage(5, LogLevel.Warning, "Cleaning up capture {CaptureId} of domain {DomainId}: {Step} failed: {Message}")]
    private partial void LogCleanupFailed(string captureId, string domainId, string step, string message);

    [LoggerMessage(6, LogLevel.Information, "Checkpoint {Checkpoint} of domain {DomainId} {Action}")]
    private partial void LogCheckpoint(string checkpoint, string domainId, string action);

    [LoggerMessage(7, LogLevel.Debug, "Bitmap state of domain {DomainId} unavailable through the QEMU monitor: {Message}")]
    private partial void LogBitmapsUnavailable(string domainId, string message);

    [LoggerMessage(8, LogLevel.Information, "Restore export {ExportId} of domain {DomainId} {Action}")]
    private partial void LogRestoreExport(string exportId, string domainId, string action);

    [LoggerMessage(9, LogLevel.Information, "Push backup of domain {DomainId} finished: success {Success}")]
    private partial void LogPushFinished(string domainId, bool success);

    [LoggerMessage(10, LogLevel.Warning, "Capture {CaptureId} of domain {DomainId} broken: the domain paused on an I/O error; job aborted, domain resumed")]
    private partial void LogCaptureBroken(string captureId, string domainId);

    [LoggerMessage(11, LogLevel.Warning, "The connection to libvirt {Uri} was closed (reason {Reason}): reconnecting")]
    private partial void LogConnectionLost(string uri, int reason);

    [LoggerMessage(12, LogLevel.Information, "Reconnected to libvirt {Uri}; {Captures} capture(s) to check")]
    private partial void LogReconnected(string uri, int captures);

    [LoggerMessage(13, LogLevel.Debug, "Reconnecting to libvirt {Uri} failed: {Message}")]
    private partial void LogReconnectFailed(string uri, string message);

    [LoggerMessage(14, LogLevel.Information, "Capture {CaptureId} of domain {DomainId} survived the loss of the libvirt connection: its job and export are intact")]
    private partial void LogCaptureSurvived(string captureId, string domainId);

    [LoggerMessage(15, LogLevel.Warning, "Capture {CaptureId} of domain {DomainId} broken by the loss of the libvirt connection: {Problem}")]
    private partial void LogCaptureLost(string captureId, string domainId, string problem);

    [LoggerMessage(16, LogLevel.Information, "Repeating '{Operation}' on the new libvirt connection (domain {DomainId})")]
    private partial void LogRepeating(string operation, string? domainId);
}
