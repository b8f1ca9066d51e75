using Drydock.Repository.Format;
using Drydock.Storage;

namespace Drydock.Repository.Maintenance;

/// <summary>How a prune runs.</summary>
public sealed class PruneOptions
{
    /// <summary>Decide and report without deleting. Default <see langword="false"/>.</summary>
    public bool DryRun { get; init; }

    /// <summary>Who prunes (shown in the maintenance lease). Default "prune".</summary>
    public string Holder { get; init; } = "prune";

    /// <summary>Points never removed. Default none.</summary>
    public IReadOnlySet<PointRef> Protected { get; init; } = new HashSet<PointRef>();
}

/// <summary>What a prune kept and removed.</summary>
/// <param name="Kept">Kept points and why.</param>
/// <param name="Removed">Removed (or, in a dry run, removable) points.</param>
/// <param name="Unreadable">Points whose manifest failed its checks: never counted, never removed by prune.</param>
/// <param name="DryRun">Whether nothing was deleted.</param>
public sealed record PruneReport(IReadOnlyDictionary<PointRef, IReadOnlyList<string>> Kept, IReadOnlyList<PointRef> Removed, IReadOnlyDictionary<PointRef, string> Unreadable, bool DryRun);

/// <summary>
/// Applies retention per domain under the maintenance lease. Removing a point writes a signed tombstone and then
/// deletes the manifest; the point's chunks and index become garbage for GC (other points keep theirs: every point
/// is a logical full, so pruning never breaks another point).
/// </summary>
internal sealed class Pruner(BackupRepository repository)
{
    public async Task<PruneReport> RunAsync(RetentionPolicy policy, PruneOptions options, CancellationToken cancellationToken)
    {
        await using var lease = await RepositoryLease.AcquireAsync(
            repository.Store, ObjectNames.MaintenanceLease, options.Holder, repository.Options.LeaseDuration, repository.Options.ClockSkewMargin, repository.Time, cancellationToken);
        var points = await RepositoryScan.PointsAsync(repository, cancellationToken);
        var verdicts = await Verifier.VerdictsAsync(repository, cancellationToken);
        var kept = new Dictionary<PointRef, IReadOnlyList<string>>();
        var removed = new List<PointRef>();
        var unreadable = points.Where(p => p.Manifest is null).ToDictionary(p => p.Point, p => p.Error!.Message);

        foreach (var domain in points.Where(p => p.Manifest is not null).GroupBy(p => (p.Point.Tenant, p.Point.DomainId)))
        {
            var candidates = domain.Select(p => new RetentionCandidate(
                p.Point,
                p.Manifest!.CreatedAt,
                options.Protected.Contains(p.Point),
                verdicts.TryGetValue(p.Point, out var v) && v.Status == "ok")).ToList();
            foreach (var (point, reasons) in Retention.Decide(candidates, policy))
            {
                if (reasons.Count > 0)
                {
                    kept[point] = reasons;
                }
                else
                {
                    removed.Add(point);
                }
            }
        }

        if (!options.DryRun)
        {
            foreach (var point in removed.OrderBy(p => p.Sequence))
            {
                await lease.RenewAsync(cancellationToken);
                var tombstone = new TombstoneDocument
                {
                    Format = "drydock-tombstone",
                    Version = 1,
                    RepositoryId = repository.RepositoryId,
                    Tenant = point.Tenant,
                    DomainId = point.DomainId,
                    Sequence = point.Sequence,
                    PrunedAt = repository.Time.GetUtcNow(),
                    Reason = "retention",
                };
                await repository.WriteSignedAsync(ObjectNames.Tombstone(point), ObjectType.Tombstone, "tombstone", tombstone, RepositoryJsonContext.Default.TombstoneDocument, BlobCondition.Overwrite, cancellationToken);
                await repository.Store.FlushAsync(cancellationToken);
                await repository.Store.DeleteAsync(ObjectNames.Manifest(point), null, cancellationToken);
                BackupRepository.LogPruned(repository.Logger, point, "retention");
            }
        }

        return new PruneReport(kept, removed, unreadable, options.DryRun);
    }
}
