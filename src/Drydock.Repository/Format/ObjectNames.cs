using System.Globalization;

namespace Drydock.Repository.Format;

/// <summary>The object layout of format version 1 (docs/FORMAT.md §Layout).</summary>
public static class ObjectNames
{
    /// <summary>The repository configuration.</summary>
    public const string Config = "drydock.repo";

    /// <summary>Key files.</summary>
    public const string KeysPrefix = "keys/";

    /// <summary>Chunks: <c>chunks/&lt;2 hex&gt;/&lt;64 hex&gt;</c>.</summary>
    public const string ChunksPrefix = "chunks/";

    /// <summary>Indexes: <c>indexes/&lt;2 hex&gt;/&lt;64 hex&gt;</c>.</summary>
    public const string IndexesPrefix = "indexes/";

    /// <summary>Manifests: <c>points/&lt;tenant&gt;/&lt;domain&gt;/&lt;sequence, 12 digits&gt;</c>.</summary>
    public const string PointsPrefix = "points/";

    /// <summary>Tombstones of pruned points, named like manifests.</summary>
    public const string TombstonesPrefix = "tombstones/";

    /// <summary>Quarantined chunks: <c>quarantine/&lt;64 hex&gt;</c>.</summary>
    public const string QuarantinePrefix = "quarantine/";

    /// <summary>Verify records.</summary>
    public const string VerifyPrefix = "verify/";

    /// <summary>GC markers.</summary>
    public const string GcPrefix = "gc/";

    /// <summary>Leases.</summary>
    public const string LocksPrefix = "locks/";

    /// <summary>The maintenance (prune, GC) lease.</summary>
    public const string MaintenanceLease = "locks/maintenance";

    /// <summary>The name of a chunk object.</summary>
    /// <param name="id">The id.</param>
    /// <returns>The name.</returns>
    public static string Chunk(ChunkId id) => Sharded(ChunksPrefix, id);

    /// <summary>The name of an index object.</summary>
    /// <param name="id">The id.</param>
    /// <returns>The name.</returns>
    public static string Index(ChunkId id) => Sharded(IndexesPrefix, id);

    /// <summary>The manifest of a point.</summary>
    /// <param name="point">The point.</param>
    /// <returns>The name.</returns>
    public static string Manifest(PointRef point) => PointsPrefix + PointPath(point);

    /// <summary>The tombstone of a point.</summary>
    /// <param name="point">The point.</param>
    /// <returns>The name.</returns>
    public static string Tombstone(PointRef point) => TombstonesPrefix + PointPath(point);

    /// <summary>The prefix of one domain's manifests.</summary>
    /// <param name="tenant">The tenant.</param>
    /// <param name="domainId">The domain.</param>
    /// <returns>The prefix.</returns>
    public static string DomainPoints(string tenant, Guid domainId) => $"{PointsPrefix}{tenant}/{domainId:D}/";

    /// <summary>The prefix of one domain's tombstones.</summary>
    /// <param name="tenant">The tenant.</param>
    /// <param name="domainId">The domain.</param>
    /// <returns>The prefix.</returns>
    public static string DomainTombstones(string tenant, Guid domainId) => $"{TombstonesPrefix}{tenant}/{domainId:D}/";

    /// <summary>The per-domain writer lease.</summary>
    /// <param name="tenant">The tenant.</param>
    /// <param name="domainId">The domain.</param>
    /// <returns>The name.</returns>
    public static string DomainLease(string tenant, Guid domainId) => $"{LocksPrefix}domains/{tenant}/{domainId:D}";

    /// <summary>The quarantine marker of a chunk.</summary>
    /// <param name="id">The chunk.</param>
    /// <returns>The name.</returns>
    public static string Quarantine(ChunkId id) => QuarantinePrefix + id;

    /// <summary>Parses a manifest or tombstone name back into a point.</summary>
    /// <param name="name">The object name.</param>
    /// <param name="prefix">Its prefix (<see cref="PointsPrefix"/> or <see cref="TombstonesPrefix"/>).</param>
    /// <param name="point">The point.</param>
    /// <returns>Whether the name is well formed.</returns>
    public static bool TryParsePoint(string name, string prefix, out PointRef point)
    {
        point = default;
        if (!name.StartsWith(prefix, StringComparison.Ordinal))
        {
            return false;
        }

        var parts = name[prefix.Length..].Split('/');
        if (parts.Length != 3 || !IsValidTenant(parts[0]) || !Guid.TryParseExact(parts[1], "D", out var domain)
            || parts[2].Length != 12 || !long.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out var sequence) || sequence <= 0)
        {
            return false;
        }

        point = new PointRef(parts[0], domain, sequence);
        return true;
    }

    /// <summary>Parses a sharded chunk or index name.</summary>
    /// <param name="name">The object name.</param>
    /// <param name="prefix">Its prefix.</param>
    /// <param name="id">The id.</param>
    /// <returns>Whether the name is well formed.</returns>
    public static bool TryParseSharded(string name, string prefix, out ChunkId id)
    {
        id = default;
        if (!name.StartsWith(prefix, StringComparison.Ordinal) || name.Length != prefix.Length + 3 + 64 || name[prefix.Length + 2] != '/')
        {
            return false;
        }

        var hex = name[(prefix.Length + 3)..];
        return hex.StartsWith(name.AsSpan(prefix.Length, 2), StringComparison.Ordinal) && ChunkId.TryParse(hex, out id);
    }

    /// <summary>Tenants are 1..64 of [a-z0-9_-].</summary>
    /// <param name="tenant">The candidate.</param>
    /// <returns>Whether it is valid.</returns>
    public static bool IsValidTenant(string tenant)
        => tenant.Length is >= 1 and <= 64 && tenant.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '_' or '-') && tenant[0] != '-';

    private static string PointPath(PointRef point)
        => string.Create(CultureInfo.InvariantCulture, $"{point.Tenant}/{point.DomainId:D}/{point.Sequence:D12}");

    private static string Sharded(string prefix, ChunkId id)
    {
        var hex = id.ToString();
        return prefix + hex[..2] + "/" + hex;
    }
}
