using Drydock.Hypervisor;
using Drydock.Repository;
using Drydock.Transfer.Restore;
using Microsoft.Extensions.Logging;

namespace Drydock.Transfer.Jobs;

/// <summary>Which point and disks to restore.</summary>
public sealed record RestoreJobRequest
{
    /// <summary>The domain: its UUID (as stored in the repository) or its name.</summary>
    public required string Domain { get; init; }

    /// <summary>The tenant. Default "default".</summary>
    public string Tenant { get; init; } = "default";

    /// <summary>The point's sequence, or null for the newest.</summary>
    public long? Sequence { get; init; }

    /// <summary>Disks to restore, or null for all.</summary>
    public IReadOnlyList<string>? Disks { get; init; }
}

/// <summary>A finished restore.</summary>
public sealed record RestoreJobResult
{
    /// <summary>The point restored.</summary>
    public required PointRef Point { get; init; }

    /// <summary>Per disk: what was done, and where it went (a file path or an NBD URI).</summary>
    public required IReadOnlyList<(DiskRestoreResult Result, string Destination)> Disks { get; init; }

    /// <summary>Wall time.</summary>
    public required TimeSpan Elapsed { get; init; }
}

/// <summary>Restores a point: to new local images, or into a (paused or shut-off) domain's disks through the driver's
/// restore export, optionally changed blocks only.</summary>
public sealed class RestoreJob
{
    /// <summary>Creates the job runner.</summary>
    /// <param name="repository">The repository.</param>
    /// <param name="options">The pipeline's settings.</param>
    /// <param name="timeProvider">Clock.</param>
    /// <param name="logger">Logger.</param>
    public RestoreJob(BackupRepository repository, RestorePipelineOptions? options = null, TimeProvider? timeProvider = null, ILogger? logger = null)
    {
        _ = repository;
        _ = options;
        _ = timeProvider;
        _ = logger;
    }

    /// <summary>Finds the domain's points (by UUID or name), oldest first.</summary>
    /// <param name="domain">UUID or name.</param>
    /// <param name="tenant">The tenant.</param>
    /// <param name="cancellationToken">Cancels the listing.</param>
    /// <returns>The points.</returns>
    public Task<IReadOnlyList<PointRef>> FindPointsAsync(string domain, string tenant = "default", CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("skeleton");

    /// <summary>Restores to new images <c>DIR/&lt;disk&gt;.raw</c> or <c>.qcow2</c>.</summary>
    /// <param name="request">Point and disks.</param>
    /// <param name="directory">The directory (created if missing); existing images are never overwritten.</param>
    /// <param name="format">Image format.</param>
    /// <param name="progress">Per-disk progress.</param>
    /// <param name="cancellationToken">Cancels the restore; no partial image is left under a final name.</param>
    /// <returns>What was done.</returns>
    public Task<RestoreJobResult> ToDirectoryAsync(RestoreJobRequest request, string directory, DiskImageFormat format, IProgress<TransferProgress>? progress = null, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("skeleton");

    /// <summary>Restores into a domain's disks through the driver's restore export. The domain must not be running (F48).</summary>
    /// <param name="request">Point and disks.</param>
    /// <param name="driver">The host's driver.</param>
    /// <param name="domainId">The domain on that host.</param>
    /// <param name="changedOnly">Write only chunks that differ from the point.</param>
    /// <param name="progress">Per-disk progress.</param>
    /// <param name="cancellationToken">Cancels the restore; the export is closed.</param>
    /// <returns>What was done.</returns>
    public Task<RestoreJobResult> IntoDomainAsync(RestoreJobRequest request, IHypervisorDriver driver, string domainId, bool changedOnly, IProgress<TransferProgress>? progress = null, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("skeleton");
}
