using Microsoft.Extensions.Logging;

namespace Drydock.Storage.Azure;

/// <summary>Log messages of <see cref="AzureBlobStore"/>.</summary>
public sealed partial class AzureBlobStore
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Warning, Message = "Azure {Operation} on {Blob} failed transiently (attempt {Attempt}); retrying in {Delay}: {Reason}")]
    private static partial void LogRetry(ILogger logger, string operation, string blob, int attempt, TimeSpan delay, string reason);

    [LoggerMessage(EventId = 2, Level = LogLevel.Debug, Message = "Azure {Operation} on {Blob}: {Status} (request id {RequestId})")]
    private static partial void LogResponse(ILogger logger, string operation, string blob, int status, string? requestId);
}
