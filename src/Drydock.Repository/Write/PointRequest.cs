using Drydock.Repository.Format;

namespace Drydock.Repository.Write;

/// <summary>What a backup session is about.</summary>
public sealed class PointRequest
{
    /// <summary>The tenant (1..64 of [a-z0-9_-]). Default "default".</summary>
    public string Tenant { get; init; } = "default";

    /// <summary>The domain UUID. Required.</summary>
    public required Guid DomainId { get; init; }

    /// <summary>The domain name. Required.</summary>
    public required string DomainName { get; init; }

    /// <summary>The domain XML at capture time. Default empty.</summary>
    public string DomainXml { get; init; } = "";

    /// <summary>Who writes (job id, host); shown in leases and manifests. Required.</summary>
    public required string WriterId { get; init; }

    /// <summary>The control plane's newest committed sequence of this domain, if it has one: storage holding fewer
    /// points is refused (rollback or replay). Default null.</summary>
    public long? KnownLatestSequence { get; init; }

    /// <summary>Free-form labels stored in the manifest. Default none.</summary>
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>();
}

/// <summary>One disk of a backup session.</summary>
public sealed class DiskRequest
{
    /// <summary>The target name (vda, sdb, ...). Required.</summary>
    public required string Name { get; init; }

    /// <summary>The disk image's identity; an incremental needs the parent's disk to have the same. Required.</summary>
    public required string Identity { get; init; }

    /// <summary>The virtual size in bytes. Required.</summary>
    public required long VirtualSize { get; init; }

    /// <summary>Full, incremental (parent = previous point) or differential (parent = last full). Default full.</summary>
    public DiskBackupLevel Level { get; init; } = DiskBackupLevel.Full;

    /// <summary>The parent point's sequence for incremental and differential disks.</summary>
    public long? ParentSequence { get; init; }

    /// <summary>The checkpoint created with this backup.</summary>
    public string? CheckpointName { get; init; }

    /// <summary>The checkpoint's XML.</summary>
    public string? CheckpointXml { get; init; }

    /// <summary>The chunk size of a full; default the repository's. Incrementals always use the parent's.</summary>
    public int? ChunkSize { get; init; }
}
