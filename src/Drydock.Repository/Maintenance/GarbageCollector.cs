using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using Drydock.Repository.Format;
using Drydock.Storage;

namespace Drydock.Repository.Maintenance;

/// <summary>How a GC runs.</summary>
public sealed class GcOptions
{
    /// <summary>Unreferenced objects younger than this are kept: they may belong to a backup still running. Must exceed
    /// <see cref="RepositoryOptions.MaxSessionDuration"/> plus the clock-skew margin. Default 48 h.</summary>
    public TimeSpan Grace { get; init; } = TimeSpan.FromHours(48);

    /// <summary>Report without deleting. Default <see langword="false"/>.</summary>
    public bool DryRun { get; init; }

    /// <summary>Who runs it (shown in the lease and marker). Default "gc".</summary>
    public string Holder { get; init; } = "gc";

    /// <summary>Collect even if some manifests fail their checks (their chunks are then not protected).
    /// Default <see langword="false"/>: an unreadable manifest stops GC.</summary>
    public bool IgnoreUnreadableManifests { get; init; }
}

/// <summary>What GC found and did.</summary>
/// <param name="ReferencedChunks">Chunks referenced by some index.</param>
/// <param name="DeletedChunks">Chunks deleted (or deletable, in a dry run).</param>
/// <param name="DeletedIndexes">Orphan indexes deleted.</param>
/// <param name="YoungUnreferenced">Unreferenced objects kept because they are inside the grace window.</param>
/// <param name="BytesFreed">Bytes of deleted objects.</param>
/// <param name="MarkerName">The GC marker written.</param>
/// <param name="DryRun">Whether nothing was deleted.</param>
public sealed record GcReport(int ReferencedChunks, int DeletedChunks, int DeletedIndexes, int YoungUnreferenced, long BytesFreed, string? MarkerName, bool DryRun);

/// <summary>
/// Mark-and-sweep under the maintenance lease, safe against concurrent backups (F31):
/// (1) write a GC marker ("marking") so committing writers know a sweep may be under way;
/// (2) mark: every index referenced by a manifest, plus every index younger than the grace window (a running
/// backup's), is a root; every chunk those indexes reference is live;
/// (3) candidates: unreferenced chunks and orphan indexes older than the grace window; record them in the marker
/// ("sweeping"); (4) delete them; (5) mark the marker "finished".
/// A writer writes its indexes before reading the markers: either this GC listed its indexes (its chunks are live),
/// or the writer sees the marker, waits for it to finish, and checks that none of its chunks was deleted.
/// </summary>
internal sealed class GarbageCollector(BackupRepository repository)
{
    public async Task<GcReport> RunAsync(GcOptions options, CancellationToken cancellationToken)
    {
        var minimumGrace = repository.Options.MaxSessionDuration + repository.Options.ClockSkewMargin;
        if (options.Grace <= minimumGrace)
        {
            throw new ArgumentException($"The GC grace window ({options.Grace}) must exceed the longest backup session plus clock skew ({minimumGrace})", nameof(options));
        }

        await using var lease = await RepositoryLease.AcquireAsync(
            repository.Store, ObjectNames.MaintenanceLease, options.Holder, repository.Options.LeaseDuration, repository.Options.ClockSkewMargin, repository.Time, cancellationToken);
        var startedAt = repository.Time.GetUtcNow();
        string? markerName = null;
        var marker = new GcMarkerDocument
        {
            Format = "drydock-gc",
            Version = 1,
            RepositoryId = repository.RepositoryId,
            Holder = options.Holder,
            StartedAt = startedAt,
            State = "marking",
            Candidates = [],
            OrphanIndexes = [],
        };
        if (!options.DryRun)
        {
            markerName = ObjectNames.GcPrefix + startedAt.UtcDateTime.ToString("yyyyMMdd'T'HHmmssfff'Z'", CultureInfo.InvariantCulture) + "-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
            await WriteMarkerAsync(markerName, marker, cancellationToken);
        }

        // Mark.
        var points = await RepositoryScan.PointsAsync(repository, cancellationToken);
        var bad = points.FirstOrDefault(p => p.Manifest is null);
        if (bad is not null && !options.IgnoreUnreadableManifests)
        {
            if (markerName is not null)
            {
                await WriteMarkerAsync(markerName, Finished(marker), cancellationToken);
            }

            throw new RepositoryException($"GC stopped: cannot tell what point {bad.Point} references ({bad.Error!.Message}); fix or remove it, or run with IgnoreUnreadableManifests", new RepositoryLocationInfo(bad.Point));
        }

        var referencedIndexes = new Dictionary<ChunkId, (PointRef Point, DiskManifest Disk)>();
        foreach (var p in points.Where(p => p.Manifest is not null))
        {
            foreach (var disk in p.Manifest!.Disks)
            {
                if (ChunkId.TryParse(disk.IndexId, out var id))
                {
                    referencedIndexes.TryAdd(id, (p.Point, disk));
                }
            }
        }

        var cutoff = startedAt - options.Grace;
        var allIndexes = await RepositoryScan.ShardedAsync(repository.Store, ObjectNames.IndexesPrefix, cancellationToken);
        var orphanIndexes = allIndexes.Where(pair => !referencedIndexes.ContainsKey(pair.Key) && pair.Value.LastModified < cutoff).ToList();
        var orphanSet = orphanIndexes.Select(o => o.Key).ToHashSet();
        var young = allIndexes.Count(pair => !referencedIndexes.ContainsKey(pair.Key) && pair.Value.LastModified >= cutoff);
        var live = new HashSet<ChunkId>();
        foreach (var (id, properties) in allIndexes)
        {
            if (orphanSet.Contains(id))
            {
                continue;
            }

            var index = referencedIndexes.TryGetValue(id, out var owner)
                ? await repository.ReadIndexAsync(owner.Disk, new RepositoryLocationInfo(owner.Point, owner.Disk.Name), cancellationToken)
                : await ReadUnownedIndexAsync(id, properties, cancellationToken);
            foreach (var chunk in index.Ids)
            {
                if (!chunk.IsZero)
                {
                    live.Add(chunk);
                }
            }
        }

        await lease.RenewAsync(cancellationToken);
        var chunks = await RepositoryScan.ShardedAsync(repository.Store, ObjectNames.ChunksPrefix, cancellationToken);
        var candidates = new List<(ChunkId Id, BlobProperties Properties)>();
        foreach (var (id, properties) in chunks)
        {
            if (live.Contains(id))
            {
                continue;
            }

            if (properties.LastModified < cutoff)
            {
                candidates.Add((id, properties));
            }
            else
            {
                young++;
            }
        }

        var bytes = candidates.Sum(c => c.Properties.Length) + orphanIndexes.Sum(o => o.Value.Length);
        if (options.DryRun)
        {
            return new GcReport(live.Count, candidates.Count, orphanIndexes.Count, young, bytes, null, DryRun: true);
        }

        // Sweep: publish what will be deleted first, so committing writers can check it.
        marker = new GcMarkerDocument
        {
            Format = marker.Format,
            Version = marker.Version,
            RepositoryId = marker.RepositoryId,
            Holder = marker.Holder,
            StartedAt = marker.StartedAt,
            State = "sweeping",
            Candidates = candidates.Select(c => c.Id.ToString()).ToList(),
            OrphanIndexes = orphanIndexes.Select(o => o.Key.ToString()).ToList(),
        };
        await WriteMarkerAsync(markerName!, marker, cancellationToken);
        var quarantined = await repository.ReadQuarantineAsync(cancellationToken);
        await Parallel.ForEachAsync(
            candidates,
            new ParallelOptions { MaxDegreeOfParallelism = Math.Max(2, repository.Options.MaxParallelism * 2), CancellationToken = cancellationToken },
            async (candidate, ct) =>
            {
                await repository.Store.DeleteAsync(ObjectNames.Chunk(candidate.Id), null, ct);
                if (quarantined.Contains(candidate.Id))
                {
                    await repository.Store.DeleteAsync(ObjectNames.Quarantine(candidate.Id), null, ct);
                }
            });
        foreach (var (id, _) in orphanIndexes)
        {
            await repository.Store.DeleteAsync(ObjectNames.Index(id), null, cancellationToken);
        }

        await WriteMarkerAsync(markerName!, Finished(marker), cancellationToken);
        await repository.Store.FlushAsync(cancellationToken);
        await DeleteOldMarkersAsync(markerName!, cutoff, cancellationToken);
        BackupRepository.LogGc(repository.Logger, candidates.Count, orphanIndexes.Count, live.Count);
        return new GcReport(live.Count, candidates.Count, orphanIndexes.Count, young, bytes, markerName, DryRun: false);
    }

    private GcMarkerDocument Finished(GcMarkerDocument marker) => new()
    {
        Format = marker.Format,
        Version = marker.Version,
        RepositoryId = marker.RepositoryId,
        Holder = marker.Holder,
        StartedAt = marker.StartedAt,
        State = "finished",
        FinishedAt = repository.Time.GetUtcNow(),
        Candidates = marker.Candidates,
        OrphanIndexes = marker.OrphanIndexes,
    };

    private async Task WriteMarkerAsync(string name, GcMarkerDocument marker, CancellationToken cancellationToken)
    {
        // Durable before anything is deleted: a committing writer must be able to find it after a crash.
        await repository.WriteSignedAsync(name, ObjectType.GcMarker, "gc", marker, RepositoryJsonContext.Default.GcMarkerDocument, BlobCondition.Overwrite, cancellationToken);
        await repository.Store.FlushAsync(cancellationToken);
    }

    private async Task<DiskIndex> ReadUnownedIndexAsync(ChunkId id, BlobProperties properties, CancellationToken cancellationToken)
    {
        // A young index no manifest names yet (a running backup's): read it without a manifest to check against.
        var where = new RepositoryLocationInfo(ObjectName: properties.Name);
        using var content = await repository.Store.GetAsync(properties.Name, ObjectCodec.MaxSealedLength((int)DiskIndex.SerializedLength(DiskIndex.MaxEntries)), cancellationToken);
        var plain = repository.Codec.Open(ObjectType.Index, content.Span, id.ToArray(), (int)DiskIndex.SerializedLength(DiskIndex.MaxEntries), where);
        if (repository.Codec.ComputeId(plain) != id || plain.Length < DiskIndex.HeaderSize)
        {
            throw new ObjectCorruptException("index digest mismatch", where);
        }

        var chunkSize = (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(plain.AsSpan(8));
        var diskSize = (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(plain.AsSpan(12));
        return DiskIndex.Parse(plain, diskSize, chunkSize, where);
    }

    private async Task DeleteOldMarkersAsync(string current, DateTimeOffset cutoff, CancellationToken cancellationToken)
    {
        var old = new ConcurrentBag<string>();
        await foreach (var item in repository.Store.ListAsync(ObjectNames.GcPrefix, cancellationToken))
        {
            if (item.Name != current && item.LastModified < cutoff)
            {
                old.Add(item.Name);
            }
        }

        foreach (var name in old)
        {
            await repository.Store.DeleteAsync(name, null, cancellationToken);
        }
    }
}
