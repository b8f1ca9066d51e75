using System.Globalization;
using Drydock.Hypervisor;
using Drydock.Repository;
using Drydock.Repository.Format;
using Drydock.Repository.Write;
using Drydock.Storage;
using Drydock.Transfer.Backup;
using Drydock.Transfer.Chain;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

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

    /// <summary>How long releasing an abandoned capture may take. The release runs on its own token, not on the job's
    /// (a cancelled job must still release), bounded by this. Default 2 minutes.</summary>
    public TimeSpan ReleaseTimeout { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>Names the new checkpoint from the current time. Default (null) <see cref="DrydockNames.NewCheckpointName"/> with the
    /// repository's chain tag; tests
    /// pin it to leave a stale checkpoint under the next name (F02).</summary>
    internal Func<DateTimeOffset, string>? CheckpointNamer { get; set; }
}

/// <summary>
/// Runs one backup on one host: reconcile leftovers (F03), plan the chain, repair checkpoints, capture (creating the new
/// checkpoint), read every disk into a new point, commit, and only then keep the new checkpoint (F04) and delete the ones
/// the chain no longer needs. Any failure abandons the capture (its checkpoint is removed) and leaves no point.
/// </summary>
/// <remarks>
/// The point is begun (which takes the repository's per-domain writer lease) before anything on the hypervisor is
/// touched, so that two jobs of the same domain never reconcile or repair each other's captures and checkpoints.
/// </remarks>
public sealed partial class BackupJob
{
    private readonly IHypervisorDriver _driver;
    private readonly BackupRepository _repository;
    private readonly BackupJobOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    // The tag of this repository's checkpoints (DrydockNames.ChainTag): what this job's chain may delete.
    private readonly string _chainTag;

    /// <summary>Creates the job runner.</summary>
    /// <param name="driver">The host's hypervisor driver.</param>
    /// <param name="repository">The repository.</param>
    /// <param name="options">Settings.</param>
    /// <param name="timeProvider">Clock.</param>
    /// <param name="logger">Logger.</param>
    public BackupJob(IHypervisorDriver driver, BackupRepository repository, BackupJobOptions? options = null, TimeProvider? timeProvider = null, ILogger? logger = null)
    {
        _driver = driver;
        _repository = repository;
        _chainTag = DrydockNames.ChainTag(repository.RepositoryId);
        _options = options ?? new BackupJobOptions();
        _time = timeProvider ?? TimeProvider.System;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>Runs a backup.</summary>
    /// <param name="request">What to back up.</param>
    /// <param name="progress">Per-disk progress.</param>
    /// <param name="cancellationToken">Cancels the job; nothing is published.</param>
    /// <returns>The committed point.</returns>
    /// <exception cref="TransferRequestException">No such domain or disk, or a level that cannot be done without fallback.</exception>
    /// <exception cref="TransferException">The backup failed; nothing was published.</exception>
    public async Task<BackupJobResult> RunAsync(BackupJobRequest request, IProgress<TransferProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var started = _time.GetTimestamp();
        var domain = await ResolveDomainAsync(request.Domain, cancellationToken);
        var domainKey = DomainKeys.ToRepositoryId(domain.Id);
        var targets = request.Disks ?? [.. domain.Disks.Select(d => d.Target)];
        if (targets.Count == 0)
        {
            throw new TransferRequestException($"Domain '{domain.Name}' ({domain.Id}) has no disk to back up.");
        }

        var writerId = request.WriterId ?? "drydock@" + Environment.MachineName;
        LogStarting(_logger, domain.Id, domain.Name, request.Level);

        // The manifest's labels are filled once the capture says what each disk is; the writer copies them at commit.
        var labels = new Dictionary<string, string>(request.Labels, StringComparer.Ordinal);
        PointWriter? writer = null;
        Capture? capture = null;
        try
        {
            var definition = await _driver.GetDefinitionAsync(domain.Id, cancellationToken);
            writer = await _repository.BeginPointAsync(
                new PointRequest
                {
                    Tenant = request.Tenant,
                    DomainId = domainKey,
                    DomainName = domain.Name,
                    DomainXml = definition.Text,
                    WriterId = writerId,
                    Labels = labels,
                },
                cancellationToken);

            await ReleaseLeftoverCapturesAsync(domain.Id, cancellationToken);
            var points = await LoadPointsAsync(request.Tenant, domainKey, cancellationToken);
            var newCheckpoint = _options.CheckpointNamer?.Invoke(_time.GetUtcNow()) ?? DrydockNames.NewCheckpointName(_time.GetUtcNow(), _chainTag);
            var (plan, health, repairs) = await PlanAndRepairAsync(request, domain, targets, points, newCheckpoint, cancellationToken);

            capture = await _driver.BeginCaptureAsync(
                new CaptureRequest
                {
                    DomainId = domain.Id,
                    Disks = [.. plan.Disks.Select(d => new CaptureDiskRequest(d.Target, d.SinceCheckpoint))],
                    NewCheckpoint = _driver.Capabilities.Checkpoints ? plan.NewCheckpoint : null,
                    FallBackToFull = request.AllowFallback,
                    Label = writerId,
                },
                cancellationToken);
            LogCaptured(_logger, domain.Id, capture.Id, capture.NewCheckpoint);

            var disks = Reconcile(request, domain.Id, plan, health, capture);
            var checkpointXml = capture.NewCheckpoint is { } created && capture.Disks.Any(d => d.InNewCheckpoint)
                ? await _driver.GetCheckpointXmlAsync(domain.Id, created, cancellationToken)
                : null;

            labels[ChainPlanner.LevelLabel] = LevelName(request.Level);
            var writers = new List<(DiskChainPlan Plan, CaptureDisk Source, DiskWriter Writer)>(disks.Count);
            foreach (var (diskPlan, source) in disks)
            {
                labels[ChainPlanner.GenerationLabel(source.Target)] = source.Generation.ToString(CultureInfo.InvariantCulture);
                if (diskPlan.FullReason is { } reason)
                {
                    labels[ChainPlanner.FullReasonLabel(source.Target)] = $"{reason.Code}: {reason.Message}";
                    LogDiskFull(_logger, domain.Id, source.Target, reason.Code, reason.Message);
                }

                var diskWriter = await writer.AddDiskAsync(
                    new DiskRequest
                    {
                        Name = source.Target,
                        Identity = source.Identity,
                        VirtualSize = checked((long)source.VirtualSize),
                        Level = diskPlan.Level,
                        ParentSequence = diskPlan.ParentSequence,
                        CheckpointName = source.InNewCheckpoint ? capture.NewCheckpoint : null,
                        CheckpointXml = source.InNewCheckpoint ? checkpointXml : null,
                    },
                    cancellationToken);
                writers.Add((diskPlan, source, diskWriter));
            }

            var transfers = await TransferAsync(domain.Id, writers, progress, cancellationToken);
            var manifest = await writer.CommitAsync(cancellationToken);
            var point = writer.Point;
            LogCommitted(_logger, domain.Id, point.Sequence);

            // Committed: from here on nothing may abandon the capture (that would drop the new base, F04).
            var committedCapture = capture;
            capture = null;
            var deleted = await AfterCommitAsync(domain.Id, committedCapture, points, manifest, [.. health.Select(d => d.Target)]);
            return new BackupJobResult
            {
                Domain = domain,
                Point = point,
                Manifest = manifest,
                Disks = [.. writers.Select((w, i) => new DiskBackupReport
                {
                    Target = w.Source.Target,
                    Level = w.Plan.Level,
                    FullReason = w.Plan.FullReason,
                    Transfer = transfers[i],
                    Stored = manifest.Disks.Single(d => d.Name == w.Source.Target).Stats,
                })],
                Repairs = repairs,
                DeletedCheckpoints = deleted,
                Elapsed = _time.GetElapsedTime(started),
            };
        }
        catch (Exception ex)
        {
            string? releaseFailure = null;
            if (capture is not null)
            {
                releaseFailure = await AbandonAsync(domain.Id, capture.Id);
            }

            if (ex is OperationCanceledException && cancellationToken.IsCancellationRequested)
            {
                // The writer is disposed below (finally): its session is aborted and the domain's lease released.
                var released = capture is null
                    ? "no capture was held"
                    : releaseFailure is null
                        ? "the capture was released"
                        : $"releasing the capture {capture.Id} failed ({releaseFailure}); the next backup of the domain releases it";
                LogCancelled(_logger, domain.Id, released);
                throw new JobCancelledException($"nothing was committed, {released}", ex, cancellationToken);
            }

            LogFailed(_logger, ex, domain.Id, ex.Message);
            throw Classify(ex, domain);
        }
        finally
        {
            if (writer is not null)
            {
                await writer.DisposeAsync();
            }
        }
    }

    private static string LevelName(RequestedLevel level) => level switch
    {
        RequestedLevel.Full => "full",
        RequestedLevel.Incremental => "incremental",
        RequestedLevel.Differential => "differential",
        _ => "auto",
    };

    /// <summary>The exception to surface: typed failures as they are, anything else wrapped naming the domain.</summary>
    private static Exception Classify(Exception ex, DomainInfo domain) => ex switch
    {
        TransferException or HypervisorException or RepositoryException or BlobStoreException or OperationCanceledException => ex,
        _ => new TransferException($"Backup of domain '{domain.Name}' ({domain.Id}) failed: {ex.Message}", ex),
    };

    private async Task<DomainInfo> ResolveDomainAsync(string domain, CancellationToken cancellationToken)
    {
        try
        {
            return await _driver.GetDomainAsync(domain, cancellationToken);
        }
        catch (DomainNotFoundException)
        {
            // Not an id: try the name.
        }

        var all = await _driver.ListDomainsAsync(cancellationToken);
        var matches = all.Where(d => string.Equals(d.Name, domain, StringComparison.Ordinal)).ToList();
        return matches.Count switch
        {
            1 => matches[0],
            0 => throw new TransferRequestException($"No domain '{domain}' on host '{_driver.HostName}'. {KnownDomains(all)}"),
            _ => throw new TransferRequestException($"Several domains are named '{domain}' on host '{_driver.HostName}': {string.Join(", ", matches.Select(m => m.Id))}; name one by id."),
        };
    }

    /// <summary>The domains a host has, for an error about one it lacks (the first twenty by name).</summary>
    internal static string KnownDomains(IReadOnlyList<DomainInfo> domains) => domains.Count == 0
        ? "The host has no domains."
        : "Its domains: " + string.Join(", ", domains.Select(d => d.Name).Order(StringComparer.Ordinal).Take(20)) + (domains.Count > 20 ? string.Create(CultureInfo.InvariantCulture, $" and {domains.Count - 20} more") : "") + ".";

    /// <summary>F03: captures an earlier run left (the writer lease says no other job of this domain writes to this
    /// repository). A capture whose new checkpoint carries another repository's tag belongs to that repository's job,
    /// which may be running: it is left alone.</summary>
    private async Task ReleaseLeftoverCapturesAsync(string domainId, CancellationToken cancellationToken)
    {
        foreach (var leftover in await _driver.ListCapturesAsync(domainId, cancellationToken))
        {
            if (leftover.NewCheckpoint is { } checkpoint && DrydockNames.ChainTagOf(checkpoint) is { } tag && tag != _chainTag)
            {
                LogLeftoverOfOtherChain(_logger, domainId, leftover.Id, checkpoint);
                continue;
            }

            if (await _driver.ReleaseCaptureAsync(domainId, leftover.Id, CaptureOutcome.Abandoned, cancellationToken))
            {
                LogLeftoverReleased(_logger, domainId, leftover.Id, leftover.NewCheckpoint);
            }
        }
    }

    private async Task<List<ChainPoint>> LoadPointsAsync(string tenant, Guid domainKey, CancellationToken cancellationToken)
    {
        var points = new List<ChainPoint>();
        foreach (var point in (await _repository.ListPointsAsync(tenant, domainKey, cancellationToken)).OrderBy(p => p.Sequence))
        {
            points.Add(ChainPlanner.FromManifest(await _repository.ReadManifestAsync(point, cancellationToken)));
        }

        return points;
    }

    /// <summary>
    /// Plans, then makes the plan's repairs. A redefine the driver refuses (F05: the saved XML no longer matches the
    /// bitmaps) marks that checkpoint unusable and plans again, so its disks go full; every round adds one such
    /// checkpoint, so this ends.
    /// </summary>
    private async Task<(ChainPlan Plan, IReadOnlyList<DiskHealth> Health, List<CheckpointRepair> Repairs)> PlanAndRepairAsync(
        BackupJobRequest request, DomainInfo domain, IReadOnlyList<string> targets, List<ChainPoint> points, string newCheckpoint, CancellationToken cancellationToken)
    {
        var domainId = domain.Id;
        var applied = new List<CheckpointRepair>();
        var unusable = new Dictionary<string, string>(StringComparer.Ordinal);
        while (true)
        {
            var health = await _driver.GetDiskHealthAsync(domainId, cancellationToken);
            var plan = ChainPlanner.Plan(new ChainPlanInput
            {
                DomainId = domainId,
                DomainName = domain.Name,
                Level = request.Level,
                AllowFallback = request.AllowFallback,
                AutoFullAfter = request.AutoFullAfter,
                Targets = targets,
                Disks = health,
                Checkpoints = await _driver.ListCheckpointsAsync(domainId, cancellationToken),
                CheckpointMetadata = _driver.Capabilities.CheckpointMetadata,
                Points = points,
                NewCheckpoint = newCheckpoint,
                UnusableCheckpoints = unusable,
                ChainTag = _chainTag,
            });

            var failed = false;
            foreach (var repair in plan.Repairs)
            {
                if (await RepairAsync(domainId, repair, cancellationToken) is { } why)
                {
                    if (!unusable.TryAdd(repair.Checkpoint, why))
                    {
                        throw new TransferException($"Checkpoint '{repair.Checkpoint}' of domain '{domainId}' was planned for a redefine again after it failed: {why}");
                    }

                    failed = true;
                    break;
                }

                applied.Add(repair);
            }

            if (!failed)
            {
                return (plan, health, applied);
            }
        }
    }

    /// <summary>Makes one repair; returns why a redefine was refused, or null.</summary>
    private async Task<string?> RepairAsync(string domainId, CheckpointRepair repair, CancellationToken cancellationToken)
    {
        LogRepair(_logger, domainId, repair.Kind, repair.Checkpoint, repair.Reason);
        try
        {
            switch (repair.Kind)
            {
                case CheckpointRepairKind.Redefine:
                    await _driver.RedefineCheckpointAsync(domainId, repair.Xml!, cancellationToken);
                    break;
                case CheckpointRepairKind.DeleteMetadata:
                    await _driver.DeleteCheckpointAsync(domainId, repair.Checkpoint, CheckpointDeleteMode.MetadataOnly, cancellationToken);
                    break;
                default:
                    await _driver.DeleteCheckpointAsync(domainId, repair.Checkpoint, CheckpointDeleteMode.All, cancellationToken);
                    break;
            }
        }
        catch (CheckpointNotFoundException) when (repair.Kind != CheckpointRepairKind.Redefine)
        {
            // Already gone.
        }
        catch (HypervisorException ex) when (repair.Kind == CheckpointRepairKind.Redefine
            && (ex is CheckpointException || ex.GetType() == typeof(HypervisorException)))
        {
            LogRedefineFailed(_logger, domainId, repair.Checkpoint, ex.Message);
            return ex.Message;
        }

        return null;
    }

    /// <summary>Lines the plan up with what the capture did: a disk the driver read in full is stored full (with its
    /// reason), and so is one whose image, size or generation changed between the plan and the capture (the capture's
    /// view is whole, so reading it in full is always right).</summary>
    private static List<(DiskChainPlan Plan, CaptureDisk Source)> Reconcile(BackupJobRequest request, string domainId, ChainPlan plan, IReadOnlyList<DiskHealth> health, Capture capture)
    {
        var disks = new List<(DiskChainPlan, CaptureDisk)>(plan.Disks.Count);
        foreach (var diskPlan in plan.Disks)
        {
            var source = capture.Disk(diskPlan.Target);
            if (diskPlan.Level == DiskBackupLevel.Full)
            {
                disks.Add((diskPlan, source with { ChangedBlocksContext = null, SinceCheckpoint = null }));
                continue;
            }

            var planned = health.First(h => string.Equals(h.Target, diskPlan.Target, StringComparison.Ordinal));
            var changed = !string.Equals(planned.Identity, source.Identity, StringComparison.Ordinal) ? FullReasonCode.Replaced
                : planned.VirtualSize != source.VirtualSize ? FullReasonCode.Resized
                : planned.Generation != source.Generation ? FullReasonCode.GenerationChanged
                : (FullReasonCode?)null;
            if (changed is null && !source.IsFull)
            {
                disks.Add((diskPlan, source));
                continue;
            }

            var reason = changed is { } code
                ? new FullReason(code, $"Disk '{source.Target}' changed ({code}) between planning and capture.")
                : new FullReason(FullReasonCode.DriverFallback, source.FullReason?.Message ?? $"The driver read disk '{source.Target}' in full without saying why.");
            if (!request.AllowFallback && request.Level != RequestedLevel.Auto)
            {
                throw new TransferRequestException($"Disk '{source.Target}' of domain '{domainId}' cannot be backed up incrementally and fallback to full is off: {reason.Message}") { Disk = source.Target };
            }

            disks.Add((
                diskPlan with { Level = DiskBackupLevel.Full, SinceCheckpoint = null, ParentSequence = null, FullReason = reason },
                source with { ChangedBlocksContext = null, SinceCheckpoint = null }));
        }

        return disks;
    }

    private async Task<DiskBackupResult[]> TransferAsync(
        string domainId, List<(DiskChainPlan Plan, CaptureDisk Source, DiskWriter Writer)> disks, IProgress<TransferProgress>? progress, CancellationToken cancellationToken)
    {
        var pipeline = new BackupPipeline(_options.Pipeline, _time, _logger);
        var results = new DiskBackupResult[disks.Count];
        await Parallel.ForEachAsync(
            Enumerable.Range(0, disks.Count),
            new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, _options.DiskParallelism), CancellationToken = cancellationToken },
            async (i, token) =>
            {
                var (_, source, writer) = disks[i];
                results[i] = await pipeline.RunAsync(source, writer, progress, token);
                LogDiskDone(_logger, domainId, source.Target, results[i].ChunksRead, results[i].BytesRead);
            });
        return results;
    }

    /// <summary>After the commit: keep the new checkpoint (release the capture committed), then delete this chain's
    /// checkpoints (<see cref="ChainPlanner.BelongsToChain"/>) it no longer needs; other repositories' are left alone. The point is committed whatever happens here; failures are logged, and a later run's
    /// reconciliation finishes the job.</summary>
    private async Task<List<string>> AfterCommitAsync(string domainId, Capture capture, List<ChainPoint> points, PointManifest manifest, IReadOnlyList<string> currentDisks)
    {
        var deleted = new List<string>();
        try
        {
            await _driver.ReleaseCaptureAsync(domainId, capture.Id, CaptureOutcome.Committed, CancellationToken.None);
            List<ChainPoint> chain = [.. points, ChainPlanner.FromManifest(manifest)];
            var keep = ChainPlanner.CheckpointsToKeep(chain, currentDisks);
            foreach (var checkpoint in await _driver.ListCheckpointsAsync(domainId, CancellationToken.None))
            {
                if (!ChainPlanner.BelongsToChain(checkpoint.Name, _chainTag, chain) || keep.Contains(checkpoint.Name))
                {
                    continue;
                }

                try
                {
                    await _driver.DeleteCheckpointAsync(domainId, checkpoint.Name, CheckpointDeleteMode.All, CancellationToken.None);
                    deleted.Add(checkpoint.Name);
                    LogCheckpointDeleted(_logger, domainId, checkpoint.Name);
                }
                catch (CheckpointNotFoundException)
                {
                    // Gone meanwhile.
                }
            }
        }
        catch (HypervisorException ex)
        {
            LogAfterCommitFailed(_logger, ex, domainId, ex.Message);
        }

        return deleted;
    }

    /// <summary>Releases the capture as abandoned on its own bounded token (the job's may have fired); returns null when
    /// released, else why not.</summary>
    private async Task<string?> AbandonAsync(string domainId, string captureId)
    {
        using var timeout = new CancellationTokenSource(_options.ReleaseTimeout, _time);
        try
        {
            await _driver.ReleaseCaptureAsync(domainId, captureId, CaptureOutcome.Abandoned, timeout.Token);
            LogAbandoned(_logger, domainId, captureId);
            return null;
        }
        catch (Exception ex) when (ex is HypervisorException or IOException or TimeoutException || (ex is OperationCanceledException && timeout.IsCancellationRequested))
        {
            // The original failure is what the caller needs; the next run's reconciliation releases it (F03).
            var reason = ex is OperationCanceledException ? $"it took over {_options.ReleaseTimeout}" : ex.Message;
            LogAbandonFailed(_logger, ex, domainId, captureId, reason);
            return reason;
        }
    }
}
