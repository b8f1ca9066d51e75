using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using Drydock.Repository.Format;
using Drydock.Storage;

namespace Drydock.Repository.Maintenance;

/// <summary>What a verify run checks.</summary>
public sealed class VerifyOptions
{
    /// <summary>The percentage of distinct chunks read and checked (0..100). Manifests, lineage and indexes are always
    /// checked in full. Default 100.</summary>
    public double SamplePercent { get; init; } = 100;

    /// <summary>Chooses the sample; a different seed checks different chunks. Default: random per run.</summary>
    public int? Seed { get; init; }

    /// <summary>Whether to write the verify record and quarantine markers. Default <see langword="true"/>.</summary>
    public bool Record { get; init; } = true;
}

/// <summary>The outcome of a verify run.</summary>
/// <param name="Record">The recorded document (also returned when not written).</param>
/// <param name="RecordName">Where it was written, if it was.</param>
/// <param name="BadChunks">Chunks found missing or damaged, with the reason.</param>
public sealed record VerifyReport(VerifyRecordDocument Record, string? RecordName, IReadOnlyDictionary<ChunkId, string> BadChunks)
{
    /// <summary>Whether every point is intact.</summary>
    public bool Ok => Record.Points.All(p => p.Status == "ok");

    /// <summary>The damaged points.</summary>
    public IEnumerable<VerifyPointResult> Damaged => Record.Points.Where(p => p.Status != "ok");
}

/// <summary>
/// Checks manifests (signature, location), lineage, indexes, and a sample (or all) of the distinct chunks they
/// reference (download, authenticate, decompress, re-hash). Every point needing a bad chunk is marked damaged with
/// the disk and byte range; bad chunks are quarantined so the next backup re-uploads instead of reusing them (F32,
/// F33). The result is a signed record under <c>verify/</c>.
/// </summary>
internal sealed class Verifier(BackupRepository repository)
{
    private const int MaxProblemsPerPoint = 1000;

    public async Task<VerifyReport> RunAsync(VerifyOptions options, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.SamplePercent, 0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(options.SamplePercent, 100);
        var startedAt = repository.Time.GetUtcNow();
        var seed = options.Seed ?? RandomNumberGenerator.GetInt32(int.MaxValue);
        var points = await RepositoryScan.PointsAsync(repository, cancellationToken);
        var problems = new Dictionary<PointRef, List<VerifyProblem>>();
        var indexes = new List<(PointRef Point, DiskManifest Disk, DiskIndex Index)>();
        var lengths = new Dictionary<ChunkId, int>();

        foreach (var scanned in points)
        {
            var list = problems[scanned.Point] = [];
            if (scanned.Manifest is null)
            {
                list.Add(new VerifyProblem { Problem = scanned.Error!.Message });
                continue;
            }

            try
            {
                await repository.CheckLineageAsync(scanned.Point, scanned.Manifest, cancellationToken);
            }
            catch (LineageBrokenException e)
            {
                list.Add(new VerifyProblem { Disk = e.Disk, Problem = e.Message });
            }

            foreach (var disk in scanned.Manifest.Disks)
            {
                try
                {
                    var index = await repository.ReadIndexAsync(disk, new RepositoryLocationInfo(scanned.Point, disk.Name), cancellationToken);
                    indexes.Add((scanned.Point, disk, index));
                    for (long i = 0; i < index.Count; i++)
                    {
                        var id = index[i];
                        if (!id.IsZero)
                        {
                            lengths.TryAdd(id, index.RangeOf(i).Length);
                        }
                    }
                }
                catch (RepositoryException e)
                {
                    list.Add(new VerifyProblem { Disk = disk.Name, Problem = e.Message });
                }
            }
        }

        var sample = lengths.Where(pair => InSample(pair.Key, seed, options.SamplePercent)).ToList();
        var bad = new ConcurrentDictionary<ChunkId, string>();
        await Parallel.ForEachAsync(
            sample,
            new ParallelOptions { MaxDegreeOfParallelism = Math.Max(repository.Options.MaxParallelism, repository.Options.MaxConcurrentRequests), CancellationToken = cancellationToken },
            async (pair, ct) =>
            {
                var buffer = ArrayPool<byte>.Shared.Rent(pair.Value);
                try
                {
                    await repository.ReadChunkAsync(pair.Key, buffer.AsMemory(0, pair.Value), default, ct);
                }
                catch (ChunkMissingException)
                {
                    bad[pair.Key] = "missing";
                }
                catch (ObjectCorruptException e)
                {
                    bad[pair.Key] = e.Reason;
                }
                catch (BlobStoreException e) when (!e.IsTransient)
                {
                    bad[pair.Key] = "unreadable: " + e.Message;
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                }
            });

        foreach (var (point, disk, index) in indexes)
        {
            var list = problems[point];
            for (long i = 0; i < index.Count; i++)
            {
                if (bad.TryGetValue(index[i], out var reason))
                {
                    var (offset, length) = index.RangeOf(i);
                    if (list.Count < MaxProblemsPerPoint)
                    {
                        list.Add(new VerifyProblem { Disk = disk.Name, Offset = offset, Length = length, ChunkId = index[i].ToString(), Problem = "chunk " + reason });
                        BackupRepository.LogVerifyProblem(repository.Logger, "chunk " + reason, point, disk.Name, offset);
                    }
                }
            }
        }

        var record = new VerifyRecordDocument
        {
            Format = "drydock-verify",
            Version = 1,
            RepositoryId = repository.RepositoryId,
            StartedAt = startedAt,
            FinishedAt = repository.Time.GetUtcNow(),
            SamplePercent = options.SamplePercent,
            ChunksChecked = sample.Count,
            Points = problems.OrderBy(p => p.Key.Tenant, StringComparer.Ordinal).ThenBy(p => p.Key.DomainId).ThenBy(p => p.Key.Sequence)
                .Select(p => new VerifyPointResult
                {
                    Tenant = p.Key.Tenant,
                    DomainId = p.Key.DomainId,
                    Sequence = p.Key.Sequence,
                    Status = p.Value.Count == 0 ? "ok" : "damaged",
                    Problems = p.Value,
                })
                .ToList(),
        };

        string? recordName = null;
        if (options.Record)
        {
            foreach (var (id, reason) in bad)
            {
                var marker = new QuarantineDocument { ChunkId = id.ToString(), Reason = reason, DetectedAt = record.FinishedAt };
                await repository.Store.PutAsync(ObjectNames.Quarantine(id), JsonSerializer.SerializeToUtf8Bytes(marker, RepositoryJsonContext.Default.QuarantineDocument), BlobCondition.Overwrite, cancellationToken);
            }

            recordName = ObjectNames.VerifyPrefix + record.FinishedAt.UtcDateTime.ToString("yyyyMMdd'T'HHmmssfff'Z'", CultureInfo.InvariantCulture)
                         + "-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
            await repository.WriteSignedAsync(recordName, ObjectType.VerifyRecord, "verify", record, RepositoryJsonContext.Default.VerifyRecordDocument, BlobCondition.CreateOnly, cancellationToken);
            await repository.Store.FlushAsync(cancellationToken);
        }

        return new VerifyReport(record, recordName, bad);
    }

    /// <summary>The newest verdict per point from the recorded verify runs (newest run wins).</summary>
    public static async Task<Dictionary<PointRef, (string Status, double SamplePercent)>> VerdictsAsync(BackupRepository repository, CancellationToken cancellationToken)
    {
        var names = new List<string>();
        await foreach (var item in repository.Store.ListAsync(ObjectNames.VerifyPrefix, cancellationToken))
        {
            names.Add(item.Name);
        }

        var verdicts = new Dictionary<PointRef, (string, double)>();
        foreach (var name in names.OrderDescending(StringComparer.Ordinal))
        {
            VerifyRecordDocument? record;
            try
            {
                record = await repository.ReadSignedAsync(name, ObjectType.VerifyRecord, "verify", RepositoryJsonContext.Default.VerifyRecordDocument, new RepositoryLocationInfo(ObjectName: name), cancellationToken);
            }
            catch (RepositoryException)
            {
                // A forged or damaged record proves nothing.
                continue;
            }

            if (record is null || record.RepositoryId != repository.RepositoryId)
            {
                continue;
            }

            foreach (var point in record.Points)
            {
                verdicts.TryAdd(new PointRef(point.Tenant, point.DomainId, point.Sequence), (point.Status, record.SamplePercent));
            }
        }

        return verdicts;
    }

    private static bool InSample(ChunkId id, int seed, double percent)
    {
        if (percent >= 100)
        {
            return true;
        }

        Span<byte> bytes = stackalloc byte[ChunkId.Size + 4];
        id.WriteTo(bytes);
        BinaryPrimitives.WriteInt32BigEndian(bytes[ChunkId.Size..], seed);
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(bytes, hash);
        var bucket = BinaryPrimitives.ReadUInt32BigEndian(hash) % 1_000_000;
        return bucket < percent * 10_000;
    }
}
