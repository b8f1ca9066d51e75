namespace Drydock.Storage;

/// <summary>The precondition of a put.</summary>
public readonly record struct BlobCondition
{
    private BlobCondition(BlobConditionKind kind, string? etag)
    {
        Kind = kind;
        ETag = etag;
    }

    /// <summary>What the condition requires.</summary>
    public BlobConditionKind Kind { get; }

    /// <summary>The ETag for <see cref="BlobConditionKind.IfMatch"/>.</summary>
    public string? ETag { get; }

    /// <summary>Write only if no object has this name (HTTP <c>If-None-Match: *</c>).</summary>
    public static BlobCondition CreateOnly { get; } = new(BlobConditionKind.CreateOnly, null);

    /// <summary>Write whatever is there.</summary>
    public static BlobCondition Overwrite { get; } = new(BlobConditionKind.Overwrite, null);

    /// <summary>Replace only the object whose current ETag is <paramref name="etag"/>.</summary>
    /// <param name="etag">The ETag read earlier.</param>
    /// <returns>The condition.</returns>
    public static BlobCondition IfMatch(string etag)
    {
        ArgumentException.ThrowIfNullOrEmpty(etag);
        return new(BlobConditionKind.IfMatch, etag);
    }
}

/// <summary>Kinds of <see cref="BlobCondition"/>.</summary>
public enum BlobConditionKind
{
    /// <summary>Fail if the name exists.</summary>
    CreateOnly = 0,

    /// <summary>Unconditional.</summary>
    Overwrite = 1,

    /// <summary>Compare-and-swap on the ETag.</summary>
    IfMatch = 2,
}

/// <summary>A byte range of an object: <see cref="Length"/> <see langword="null"/> means "to the end".</summary>
/// <param name="Offset">The first byte.</param>
/// <param name="Length">The byte count, or <see langword="null"/> for the rest of the object.</param>
public readonly record struct BlobRange(long Offset, long? Length)
{
    /// <summary>The whole object.</summary>
    public static BlobRange All { get; }

    /// <summary>Whether this is the whole object.</summary>
    public bool IsAll => Offset == 0 && Length is null;

    /// <inheritdoc />
    public override string ToString() => Length is { } l ? $"bytes {Offset}..{Offset + l - 1}" : $"bytes {Offset}..end";
}

/// <summary>What a store knows about an object.</summary>
/// <param name="Name">The object name.</param>
/// <param name="Length">The object size in bytes.</param>
/// <param name="ETag">An opaque version tag that changes whenever the object is replaced.</param>
/// <param name="LastModified">When the object was last written, by the store's clock.</param>
public sealed record BlobProperties(string Name, long Length, string ETag, DateTimeOffset LastModified);

/// <summary>One page of a listing.</summary>
/// <param name="Items">The objects, in ordinal name order.</param>
/// <param name="Continuation">The token for the next page, <see langword="null"/> at the end.</param>
public sealed record BlobListPage(IReadOnlyList<BlobProperties> Items, string? Continuation);
