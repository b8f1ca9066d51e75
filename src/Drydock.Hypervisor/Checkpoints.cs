namespace Drydock.Hypervisor;

/// <summary>A checkpoint: the instant from which the hypervisor records changed blocks, per disk a bitmap.</summary>
public sealed record CheckpointInfo
{
    /// <summary>The checkpoint's name.</summary>
    public required string Name { get; init; }

    /// <summary>Its domain.</summary>
    public required string DomainId { get; init; }

    /// <summary>Whether it carries Drydock's prefix (<see cref="DrydockNames.IsOwned"/>); only those are ever changed.</summary>
    public bool IsOwned => DrydockNames.IsOwned(Name);

    /// <summary>When it was created, where known.</summary>
    public DateTimeOffset? CreatedAt { get; init; }

    /// <summary>Its parent checkpoint, where the hypervisor keeps that.</summary>
    public string? Parent { get; init; }

    /// <summary>The disks it covers, each with its bitmap.</summary>
    public required IReadOnlyList<CheckpointDisk> Disks { get; init; }

    /// <summary>
    /// Whether the hypervisor holds metadata for it (libvirt, sim). False where the bitmaps are the only record (QEMU
    /// driver), or where metadata was lost and only bitmaps remain.
    /// </summary>
    public bool HasMetadata { get; init; }
}

/// <summary>One disk of a checkpoint.</summary>
/// <param name="Target">The disk's target name.</param>
/// <param name="Bitmap">The dirty bitmap's name in the image.</param>
public sealed record CheckpointDisk(string Target, string Bitmap);

/// <summary>What <see cref="IHypervisorDriver.DeleteCheckpointAsync"/> deletes.</summary>
public enum CheckpointDeleteMode
{
    /// <summary>The checkpoint's bitmaps and its metadata.</summary>
    All = 0,

    /// <summary>Only the hypervisor's metadata; bitmaps stay (libvirt <c>--metadata</c>). A no-op where there is no metadata.</summary>
    MetadataOnly = 1,
}

/// <summary>The naming rules that mark what Drydock owns on a hypervisor (FAULTS.md F15).</summary>
public static class DrydockNames
{
    /// <summary>The prefix of every checkpoint, bitmap and capture artefact Drydock creates.</summary>
    public const string Prefix = "drydock-";

    /// <summary>Longest checkpoint name Drydock creates or accepts (fits libvirt and QEMU bitmap names).</summary>
    public const int MaxCheckpointNameLength = 200;

    /// <summary>Whether a checkpoint or bitmap name is Drydock's.</summary>
    /// <param name="name">The name.</param>
    /// <returns>True when it starts with <see cref="Prefix"/>.</returns>
    public static bool IsOwned(string name) => name.StartsWith(Prefix, StringComparison.Ordinal);

    /// <summary>
    /// A new checkpoint name: the prefix, the UTC instant to the second, the chain's tag when given, and a random suffix,
    /// e.g. <c>drydock-20250102T030405Z-9f8e7d6c-1a2b3c4d</c> (without a tag: <c>drydock-20250102T030405Z-1a2b3c4d</c>).
    /// Sorts by creation time.
    /// </summary>
    /// <param name="now">The current time (from the caller's <see cref="TimeProvider"/>).</param>
    /// <param name="chainTag">The tag of the chain the checkpoint belongs to (<see cref="ChainTag"/>), or null.</param>
    /// <returns>The name.</returns>
    public static string NewCheckpointName(DateTimeOffset now, string? chainTag = null)
    {
        if (chainTag is not null && !IsChainTag(chainTag))
        {
            throw new ArgumentException($"'{chainTag}' is not a chain tag (eight lowercase hex digits).", nameof(chainTag));
        }

        var tag = chainTag is null ? string.Empty : chainTag + "-";
        return string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{Prefix}{now.UtcDateTime:yyyyMMdd'T'HHmmss'Z'}-{tag}{RandomSuffix()}");
    }

    /// <summary>
    /// The tag that marks the checkpoints of one chain: the first eight hex digits of the repository's id. Several
    /// repositories may back up the same domain (a local and an offsite copy); each deletes only checkpoints that carry
    /// its own tag (or that its committed points name), never another repository's.
    /// </summary>
    /// <param name="repositoryId">The repository.</param>
    /// <returns>Eight lowercase hex digits.</returns>
    public static string ChainTag(Guid repositoryId) => repositoryId.ToString("N")[..8];

    /// <summary>The chain tag a checkpoint name carries (<see cref="NewCheckpointName"/> with a tag), or null for a name
    /// without one (made before tags existed, or by hand).</summary>
    /// <param name="name">A checkpoint name.</param>
    /// <returns>The tag or null.</returns>
    public static string? ChainTagOf(string name)
    {
        // drydock-<16-character instant>-<tag>-<suffix>
        var parts = IsOwned(name) ? name[Prefix.Length..].Split('-') : [];
        return parts.Length == 3 && parts[0].Length == 16 && IsChainTag(parts[1]) ? parts[1] : null;
    }

    private static bool IsChainTag(string text) => text.Length == 8 && text.All(c => char.IsAsciiDigit(c) || c is >= 'a' and <= 'f');

    /// <summary>Eight random lowercase hex digits.</summary>
    /// <returns>The suffix.</returns>
    public static string RandomSuffix() =>
        Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4));

    /// <summary>
    /// Checks a name Drydock is asked to create or change: owned, not too long, no characters that libvirt or QEMU
    /// reject or that would escape a path or a URI (only letters, digits, <c>-</c>, <c>_</c>, <c>.</c>, <c>:</c>).
    /// </summary>
    /// <param name="domainId">The domain, for the error.</param>
    /// <param name="name">The checkpoint name.</param>
    /// <exception cref="ForeignCheckpointException">The name lacks the prefix.</exception>
    /// <exception cref="ArgumentException">The name is malformed.</exception>
    public static void ValidateOwnedCheckpoint(string domainId, string name)
    {
        if (!IsOwned(name))
        {
            throw new ForeignCheckpointException(domainId, name);
        }

        if (name.Length > MaxCheckpointNameLength)
        {
            throw new ArgumentException($"Checkpoint name '{name[..40]}…' is longer than {MaxCheckpointNameLength} characters.", nameof(name));
        }

        foreach (var c in name)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or ':'))
            {
                throw new ArgumentException($"Checkpoint name '{name}' contains '{c}': only ASCII letters, digits, '-', '_', '.', ':' are allowed.", nameof(name));
            }
        }
    }
}
