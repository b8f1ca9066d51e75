using System.Globalization;
using System.Text;

namespace Drydock.Repository;

/// <summary>Identifies a restore point: tenant, domain and the domain's monotonic sequence number.</summary>
/// <param name="Tenant">The tenant.</param>
/// <param name="DomainId">The domain UUID.</param>
/// <param name="Sequence">The point's sequence number within the domain (1, 2, ...).</param>
public readonly record struct PointRef(string Tenant, Guid DomainId, long Sequence)
{
    /// <inheritdoc />
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Tenant}/{DomainId:D}#{Sequence}");
}

/// <summary>Something in the repository is missing, damaged, forged or inconsistent. The message names what and where.</summary>
public class RepositoryException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What is wrong.</param>
    /// <param name="where">Where it is.</param>
    /// <param name="innerException">The cause.</param>
    public RepositoryException(string message, RepositoryLocationInfo where = default, Exception? innerException = null)
        : base(Compose(message, where), innerException)
    {
        Where = where;
    }

    /// <summary>Where the problem is.</summary>
    public RepositoryLocationInfo Where { get; }

    /// <summary>The point concerned, if known.</summary>
    public PointRef? Point => Where.Point;

    /// <summary>The disk concerned, if known.</summary>
    public string? Disk => Where.Disk;

    /// <summary>The first byte of the disk range concerned, if known.</summary>
    public long? Offset => Where.Offset;

    /// <summary>The length of the disk range concerned, if known.</summary>
    public long? Length => Where.Length;

    /// <summary>The storage object concerned, if known.</summary>
    public string? ObjectName => Where.ObjectName;

    private static string Compose(string message, RepositoryLocationInfo where)
    {
        var parts = new List<string>();
        if (where.Point is { } p)
        {
            parts.Add("point " + p);
        }

        if (where.Disk is { } d)
        {
            parts.Add("disk " + d);
        }

        if (where.Offset is { } o)
        {
            parts.Add(where.Length is { } l
                ? string.Create(CultureInfo.InvariantCulture, $"bytes {o}..{o + l - 1}")
                : string.Create(CultureInfo.InvariantCulture, $"byte {o}"));
        }

        if (where.ObjectName is { } n)
        {
            parts.Add("object " + n);
        }

        return parts.Count == 0 ? message : new StringBuilder(message).Append(" (").AppendJoin(", ", parts).Append(')').ToString();
    }
}

/// <summary>Where a repository problem is: any of point, disk, byte range and object.</summary>
/// <param name="Point">The restore point.</param>
/// <param name="Disk">The disk name.</param>
/// <param name="Offset">The first byte of the range.</param>
/// <param name="Length">The range length.</param>
/// <param name="ObjectName">The storage object.</param>
public readonly record struct RepositoryLocationInfo(PointRef? Point = null, string? Disk = null, long? Offset = null, long? Length = null, string? ObjectName = null);

/// <summary>A chunk an index references does not exist. Never read as zeros.</summary>
public sealed class ChunkMissingException(RepositoryLocationInfo where, Exception? innerException = null)
    : RepositoryException("Chunk is missing", where, innerException);

/// <summary>An object's bytes are damaged: digest mismatch, truncated, empty, bad header, wrong type, or bad compression.</summary>
public class ObjectCorruptException(string reason, RepositoryLocationInfo where, Exception? innerException = null)
    : RepositoryException("Object is corrupt: " + reason, where, innerException)
{
    /// <summary>What check failed.</summary>
    public string Reason { get; } = reason;
}

/// <summary>Authenticated decryption failed: the object was modified, or written under another key.</summary>
public sealed class ObjectTamperedException(RepositoryLocationInfo where, Exception? innerException = null)
    : ObjectCorruptException("authentication failed (AES-GCM tag mismatch): the object was tampered with or belongs to another repository/key", where, innerException);

/// <summary>An object exceeds a size cap; refused before reading it into memory.</summary>
public sealed class ObjectTooLargeException(long length, long cap, RepositoryLocationInfo where)
    : ObjectCorruptException(string.Create(CultureInfo.InvariantCulture, $"{length} bytes, over the cap of {cap}"), where);

/// <summary>The passphrase or key does not open this repository.</summary>
public sealed class WrongKeyException(string message, Exception? innerException = null)
    : RepositoryException(message, default, innerException);

/// <summary>A manifest (or another signed document) is malformed, of an unknown version, or inconsistent with where it is stored.</summary>
public sealed class ManifestInvalidException(string reason, RepositoryLocationInfo where, Exception? innerException = null)
    : RepositoryException("Manifest is invalid: " + reason, where, innerException);

/// <summary>A signed document's signature is wrong or missing.</summary>
public sealed class SignatureException(string reason, RepositoryLocationInfo where)
    : RepositoryException("Signature check failed: " + reason, where);

/// <summary>The newest point in storage is older than the control plane's record: points were removed or an old manifest was replayed.</summary>
public sealed class ManifestReplayException(string message, RepositoryLocationInfo where)
    : RepositoryException(message, where);

/// <summary>A disk index is malformed: gaps, overlaps, misalignment, size mismatch, absurd sizes or a bad checksum.</summary>
public sealed class IndexInvalidException(string reason, RepositoryLocationInfo where, Exception? innerException = null)
    : RepositoryException("Disk index is invalid: " + reason, where, innerException);

/// <summary>A point's lineage is broken: a missing, foreign or inconsistent parent, or a cycle.</summary>
public sealed class LineageBrokenException(string reason, RepositoryLocationInfo where)
    : RepositoryException("Lineage is broken: " + reason, where);

/// <summary>Another writer committed this sequence number first; this writer is fenced.</summary>
public sealed class PointConflictException(RepositoryLocationInfo where)
    : RepositoryException("Another writer already committed this restore point; this one is fenced and nothing was published", where);

/// <summary>A lease is held by someone else, or was lost.</summary>
public sealed class RepositoryLeaseException(string message, RepositoryLocationInfo where = default)
    : RepositoryException(message, where);

/// <summary>The storage location is not a repository, or one of an unsupported format version.</summary>
public sealed class RepositoryFormatException(string message, Exception? innerException = null)
    : RepositoryException(message, default, innerException);

/// <summary>A backup session cannot commit (deadline passed, a reused chunk was collected, bad input from the caller).</summary>
public sealed class CommitRefusedException(string message, RepositoryLocationInfo where = default, Exception? innerException = null)
    : RepositoryException(message, where, innerException);
