using Microsoft.Extensions.Logging;

namespace Drydock.Transfer.Jobs;

public sealed partial class RestoreJob
{
    [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "Restoring point #{Sequence} of domain {DomainId} into {Destination}")]
    private static partial void LogRestoring(ILogger logger, Guid domainId, long sequence, string destination);

    [LoggerMessage(EventId = 102, Level = LogLevel.Information, Message = "Domain {DomainId}: disk {Disk} restored, {Written} chunks written, {Skipped} left as they were")]
    private static partial void LogDiskRestored(ILogger logger, string domainId, string disk, long written, long skipped);
}
