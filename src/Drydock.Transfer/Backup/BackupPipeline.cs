using Drydock.Hypervisor;
using Drydock.Repository.Write;
using Microsoft.Extensions.Logging;

namespace Drydock.Transfer.Backup;

/// <summary>Settings of the backup pipeline.</summary>
public sealed class BackupPipelineOptions
{
    /// <summary>NBD connections per disk (used when the export allows multi-conn). Default 4.</summary>
    public int Connections { get; set; } = 4;

    /// <summary>Chunks being read at once per disk. Default 16.</summary>
    public int ReadsInFlight { get; set; } = 16;

    /// <summary>How often a dropped connection is re-opened before the disk fails (F23). Default 3.</summary>
    public int ReconnectAttempts { get; set; } = 3;

    /// <summary>Timeout of one NBD request. Default 60 s.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>How often progress is reported at most. Default 250 ms.</summary>
    public TimeSpan ProgressInterval { get; set; } = TimeSpan.FromMilliseconds(250);
}

/// <summary>What one disk's backup read and stored.</summary>
public sealed record DiskBackupResult
{
    /// <summary>The disk.</summary>
    public required string Disk { get; init; }

    /// <summary>Chunks read over NBD and submitted.</summary>
    public required long ChunksRead { get; init; }

    /// <summary>Chunks recorded as zero without reading (holes, zero extents, trimmed ranges).</summary>
    public required long ChunksZero { get; init; }

    /// <summary>Chunks left to the parent's index (unchanged).</summary>
    public required long ChunksInherited { get; init; }

    /// <summary>Bytes read over NBD.</summary>
    public required long BytesRead { get; init; }

    /// <summary>Data extents planned (runs of chunks read).</summary>
    public required long Extents { get; init; }

    /// <summary>Connections re-opened after a drop.</summary>
    public int Reconnects { get; init; }

    /// <summary>Wall time.</summary>
    public required TimeSpan Elapsed { get; init; }
}

/// <summary>
/// Reads one captured disk over NBD into a repository disk writer: plans from block status (allocated for a full; dirty ∩
/// allocated for an incremental or differential; dirty-but-unallocated stored as zero, F19), reads chunk-aligned ranges
/// pipelined over one or more connections into pooled buffers, and hands them to the writer (which hashes, compresses,
/// encrypts and uploads on all cores with bounded memory).
/// </summary>
public sealed class BackupPipeline
{
    /// <summary>Creates the pipeline.</summary>
    /// <param name="options">Settings; defaults when null.</param>
    /// <param name="timeProvider">Clock for progress; system when null.</param>
    /// <param name="logger">Logger.</param>
    public BackupPipeline(BackupPipelineOptions? options = null, TimeProvider? timeProvider = null, ILogger? logger = null)
    {
        _ = options;
        _ = timeProvider;
        _ = logger;
    }

    /// <summary>Backs up one disk.</summary>
    /// <param name="source">The captured disk (endpoint, changed-blocks context when incremental).</param>
    /// <param name="writer">The repository's writer for the disk; its level says full or changed-only.</param>
    /// <param name="progress">Progress sink.</param>
    /// <param name="cancellationToken">Cancels the transfer.</param>
    /// <returns>What was read.</returns>
    /// <exception cref="SourceReadException">A range could not be read (names the offset).</exception>
    public Task<DiskBackupResult> RunAsync(CaptureDisk source, DiskWriter writer, IProgress<TransferProgress>? progress = null, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("skeleton");
}
