using Drydock.Hypervisor;
using Drydock.Repository;
using Drydock.Repository.Format;
using Drydock.Transfer.Backup;
using Drydock.Transfer.Chain;
using Microsoft.Extensions.Logging;

namespace Drydock.Transfer.Jobs;

/// <summary>A backup to run.</summary>
public sealed record BackupJobRequest
{
    /// <summary>The domain (<see cref="DomainInfo.Id"/> or name).</summary>
    public required string Domain { get; init; }

    /// <summary>The level. Default auto.</summary>
    public RequestedLevel Level { get; init; } = RequestedLevel.Auto;

    /// <summary>Disks to back up (targets), or null for every disk.</summary>
    public IReadOnlyList<string>? Disks { get; init; }

    /// <summary>Whether a disk that cannot do the requested level falls back to full. Default true.</summary>
    public bool AllowFallback { get; init; } = true;

    /// <summary>See <see cref="ChainPlanInput.AutoFullAfter"/>.</summary>
    public int? AutoFullAfter { get; init; }

    /// <summary>The tenant. Default "default".</summary>
    public string Tenant { get; init; } = "default";

    /// <summary>Who runs the job (shown in the lease and manifest). Default "drydock@HOST".</summary>
    public string? WriterId { get; init; }

    /// <summary>Labels stored in the manifest.</summary>
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>();
}

/// <summary>One disk of a finished backup.</summary>
public sealed record DiskBackupReport
{
    /// <summary>The target.</summary>
    public required string Target { get; init; }

    /// <summary>The level stored.</summary>
    public required DiskBackupLevel Level { get; init; }

    /// <summary>Why it is full, when it is.</summary>
    public FullReason? FullReason { get; init; }

    /// <summary>What was read.</summary>
    public required DiskBackupResult Transfer { get; init; }

    /// <summary>What was stored (from the manifest).</summary>
    public required DiskStats Stored { get; init; }
}

/// <summary>A committed backup.</summary>
public sealed record BackupJobResult
{
    /// <summary>The domain as backed up.</summary>
    public required DomainInfo Domain { get; init; }

    /// <summary>The committed point.</summary>
    public required PointRef Point { get; init; }

    /// <summary>Its manifest.</summary>
    public required PointManifest Manifest { get; init; }

    /// <summary>Per disk.</summary>
    public required IReadOnlyList<DiskBackupReport> Disks { get; init; }

    /// <summary>Checkpoint repairs made before the capture.</summary>
    public required IReadOnlyList<CheckpointRepair> Repairs { get; init; }

    /// <summary>Drydock checkpoints deleted after the commit (no longer needed by the chain).</summary>
    public required IReadOnlyList<string> DeletedCheckpoints { get; init; }

    /// <summary>Wall time.</summary>
    public required TimeSpan Elapsed { get; init; }
}

/// <summary>Settings of a backup job.</summary>
public sealed class BackupJobOptions
{
    /// <summary>The pipeline's settings.</summary>
    public BackupPipelineOptions Pipeline { get; set; } = new();

    /// <summary>Disks backed up at once. Default 2.</summary>
    public int DiskParallelism { get; set; } = 2;
}

/// <summary>
/// Runs one backup on one host: reconcile leftovers (F03), plan the chain, repair checkpoints, capture (creating the new
/// checkpoint), read every disk into a new point, commit, and only then keep the new checkpoint (F04) and delete the ones
/// the chain no longer needs. Any failure abandons the capture (its checkpoint is removed) and leaves no point.
/// </summary>
public sealed class BackupJob
{
    /// <summary>Creates the job runner.</summary>
    /// <param name="driver">The host's hypervisor driver.</param>
    /// <param name="repository">The repository.</param>
    /// <param name="options">Settings.</param>
    /// <param name="timeProvider">Clock.</param>
    /// <param name="logger">Logger.</param>
    public BackupJob(IHypervisorDriver driver, BackupRepository repository, BackupJobOptions? options = null, TimeProvider? timeProvider = null, ILogger? logger = null)
    {
        _ = driver;
        _ = repository;
        _ = options;
        _ = timeProvider;
        _ = logger;
    }

    /// <summary>Runs a backup.</summary>
    /// <param name="request">What to back up.</param>
    /// <param name="progress">Per-disk progress.</param>
    /// <param name="cancellationToken">Cancels the job; nothing is published.</param>
    /// <returns>The committed point.</returns>
    public Task<BackupJobResult> RunAsync(BackupJobRequest request, IProgress<TransferProgress>? progress = null, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("skeleton");
}
