using Microsoft.Extensions.Logging;

namespace Drydock.Repository;

/// <summary>Log messages of the repository.</summary>
public sealed partial class BackupRepository
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Opened repository {RepositoryId} at {Location} (encrypted: {Encrypted}, chunk size {ChunkSize})")]
    internal static partial void LogOpened(ILogger logger, Guid repositoryId, string location, bool encrypted, int chunkSize);

    [LoggerMessage(EventId = 2, Level = LogLevel.Information, Message = "Committed point {Point} with {Disks} disk(s), {Uploaded} chunk(s) uploaded, {Bytes} bytes")]
    internal static partial void LogCommitted(ILogger logger, PointRef point, int disks, long uploaded, long bytes);

    [LoggerMessage(EventId = 3, Level = LogLevel.Warning, Message = "Chunk {ChunkId} already existed but failed its check ({Reason}); replacing it")]
    internal static partial void LogRepairingChunk(ILogger logger, string chunkId, string reason);

    [LoggerMessage(EventId = 4, Level = LogLevel.Warning, Message = "Verify found {Problem} in point {Point} disk {Disk} at byte {Offset}")]
    internal static partial void LogVerifyProblem(ILogger logger, string problem, PointRef point, string? disk, long? offset);

    [LoggerMessage(EventId = 5, Level = LogLevel.Information, Message = "Pruned point {Point}: {Reason}")]
    internal static partial void LogPruned(ILogger logger, PointRef point, string reason);

    [LoggerMessage(EventId = 6, Level = LogLevel.Information, Message = "GC deleted {Chunks} chunk(s) and {Indexes} index(es), kept {Referenced} referenced chunk(s)")]
    internal static partial void LogGc(ILogger logger, int chunks, int indexes, int referenced);

    [LoggerMessage(EventId = 7, Level = LogLevel.Information, Message = "Waiting for GC sweep {Marker} to finish before committing {Point}")]
    internal static partial void LogWaitingForGc(ILogger logger, string marker, PointRef point);
}
