using Drydock.Nbd;
using Drydock.Repository.Read;
using Microsoft.Extensions.Logging;

namespace Drydock.Transfer.Restore;

/// <summary>How a restore treats the target's current content.</summary>
public enum RestoreWriteMode
{
    /// <summary>The target reads as zeros (a new image): zero chunks are skipped, it stays sparse.</summary>
    FreshTarget = 0,

    /// <summary>Every chunk is written; zero chunks with WRITE_ZEROES (the target stays sparse where it can).</summary>
    Overwrite = 1,

    /// <summary>Only chunks whose content differs from the point are written (the target is read and compared).</summary>
    ChangedOnly = 2,
}

/// <summary>A local image format.</summary>
public enum DiskImageFormat
{
    /// <summary>A sparse raw file.</summary>
    Raw = 0,

    /// <summary>A qcow2 image (written through qemu-nbd).</summary>
    Qcow2 = 1,
}

/// <summary>Settings of the restore pipeline.</summary>
public sealed class RestorePipelineOptions
{
    /// <summary>NBD connections to the target. Default 4.</summary>
    public int Connections { get; set; } = 4;

    /// <summary>Chunks fetched and written at once. Default 16.</summary>
    public int Parallelism { get; set; } = 16;

    /// <summary>Timeout of one NBD request. Default 60 s.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>How often progress is reported at most. Default 250 ms.</summary>
    public TimeSpan ProgressInterval { get; set; } = TimeSpan.FromMilliseconds(250);
}

/// <summary>What one disk's restore did.</summary>
public sealed record DiskRestoreResult
{
    /// <summary>The disk.</summary>
    public required string Disk { get; init; }

    /// <summary>Chunks fetched from the repository and written.</summary>
    public required long ChunksWritten { get; init; }

    /// <summary>Chunks zeroed on the target (WRITE_ZEROES or a punched hole).</summary>
    public required long ChunksZeroed { get; init; }

    /// <summary>Chunks left alone: zero on a fresh target, or equal to the point's content (changed-only).</summary>
    public required long ChunksSkipped { get; init; }

    /// <summary>Bytes written to the target.</summary>
    public required long BytesWritten { get; init; }

    /// <summary>Bytes of the target read to compare (changed-only).</summary>
    public long BytesCompared { get; init; }

    /// <summary>Wall time.</summary>
    public required TimeSpan Elapsed { get; init; }
}

/// <summary>
/// Restores one disk of a point: fetches chunks in parallel (each authenticated and re-hashed by the repository), and
/// writes them through NBD or to a local raw or qcow2 image. A local image appears under its final name only when it is
/// complete.
/// </summary>
public sealed class RestorePipeline
{
    /// <summary>Creates the pipeline.</summary>
    /// <param name="options">Settings; defaults when null.</param>
    /// <param name="timeProvider">Clock for progress.</param>
    /// <param name="logger">Logger.</param>
    public RestorePipeline(RestorePipelineOptions? options = null, TimeProvider? timeProvider = null, ILogger? logger = null)
    {
        _ = options;
        _ = timeProvider;
        _ = logger;
    }

    /// <summary>Writes a point's disk through an NBD export (the export's size must equal the disk's).</summary>
    /// <param name="source">The point's disk.</param>
    /// <param name="target">A writable export.</param>
    /// <param name="mode">How to treat the target's current content.</param>
    /// <param name="progress">Progress sink.</param>
    /// <param name="cancellationToken">Cancels the restore.</param>
    /// <returns>What was done.</returns>
    public Task<DiskRestoreResult> ToNbdAsync(DiskReader source, NbdUri target, RestoreWriteMode mode, IProgress<TransferProgress>? progress = null, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("skeleton");

    /// <summary>Writes a point's disk to a new local image; the file appears under <paramref name="path"/> only when complete.</summary>
    /// <param name="source">The point's disk.</param>
    /// <param name="path">The image to create (must not exist).</param>
    /// <param name="format">Raw or qcow2.</param>
    /// <param name="progress">Progress sink.</param>
    /// <param name="cancellationToken">Cancels the restore; nothing is left behind.</param>
    /// <returns>What was done.</returns>
    public Task<DiskRestoreResult> ToFileAsync(DiskReader source, string path, DiskImageFormat format, IProgress<TransferProgress>? progress = null, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("skeleton");
}
