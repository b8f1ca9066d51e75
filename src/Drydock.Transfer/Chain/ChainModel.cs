using Drydock.Hypervisor;
using Drydock.Repository.Format;

namespace Drydock.Transfer.Chain;

/// <summary>The level a user asks for.</summary>
public enum RequestedLevel
{
    /// <summary>Incremental where the chain allows it, full otherwise (per disk, reason recorded).</summary>
    Auto = 0,

    /// <summary>Every disk full.</summary>
    Full = 1,

    /// <summary>Changes since the previous point (falls back per disk like <see cref="Auto"/> unless fallback is off).</summary>
    Incremental = 2,

    /// <summary>Changes since each disk's last full (falls back per disk unless fallback is off).</summary>
    Differential = 3,
}

/// <summary>One committed restore point of a domain as the chain logic sees it.</summary>
public sealed record ChainPoint
{
    /// <summary>The point's sequence in the domain's lineage.</summary>
    public required long Sequence { get; init; }

    /// <summary>When the backup started.</summary>
    public required DateTimeOffset CreatedAt { get; init; }

    /// <summary>Its disks.</summary>
    public required IReadOnlyList<ChainDisk> Disks { get; init; }

    /// <summary>The disk by name, or null.</summary>
    /// <param name="name">The target name.</param>
    /// <returns>The disk.</returns>
    public ChainDisk? Disk(string name) => Disks.FirstOrDefault(d => string.Equals(d.Name, name, StringComparison.Ordinal));
}

/// <summary>One disk of a committed point.</summary>
public sealed record ChainDisk
{
    /// <summary>The target name.</summary>
    public required string Name { get; init; }

    /// <summary>The disk image identity at capture time.</summary>
    public required string Identity { get; init; }

    /// <summary>The virtual size at capture time.</summary>
    public required long VirtualSize { get; init; }

    /// <summary>The level it was stored at.</summary>
    public required DiskBackupLevel Level { get; init; }

    /// <summary>The parent point (incremental, differential).</summary>
    public long? ParentSequence { get; init; }

    /// <summary>The checkpoint created with this point on this disk, if any.</summary>
    public string? CheckpointName { get; init; }

    /// <summary>The checkpoint's saved XML, for a redefine (F05).</summary>
    public string? CheckpointXml { get; init; }

    /// <summary>The disk's generation at capture time (F13), when recorded.</summary>
    public long? Generation { get; init; }
}

/// <summary>Everything the chain logic decides from: the request, the domain now, and the committed lineage.</summary>
public sealed record ChainPlanInput
{
    /// <summary>The domain.</summary>
    public required string DomainId { get; init; }

    /// <summary>The domain's name, for messages; null names it by <see cref="DomainId"/>.</summary>
    public string? DomainName { get; init; }

    /// <summary>The requested level.</summary>
    public required RequestedLevel Level { get; init; }

    /// <summary>Whether a disk that cannot do the requested level falls back to full (true) or the job fails (false).</summary>
    public bool AllowFallback { get; init; } = true;

    /// <summary>With <see cref="RequestedLevel.Auto"/>, take a full once a disk's chain has this many incrementals since its
    /// last full; null never forces one.</summary>
    public int? AutoFullAfter { get; init; }

    /// <summary>The disks to back up, by target.</summary>
    public required IReadOnlyList<string> Targets { get; init; }

    /// <summary>The driver's view of every disk: identity, size, generation, bitmaps.</summary>
    public required IReadOnlyList<DiskHealth> Disks { get; init; }

    /// <summary>The driver's checkpoints (owned and foreign).</summary>
    public required IReadOnlyList<CheckpointInfo> Checkpoints { get; init; }

    /// <summary>Whether the driver keeps checkpoint metadata apart from bitmaps (libvirt, sim).</summary>
    public bool CheckpointMetadata { get; init; } = true;

    /// <summary>The domain's committed points, oldest first.</summary>
    public required IReadOnlyList<ChainPoint> Points { get; init; }

    /// <summary>The name of the checkpoint this backup creates.</summary>
    public required string NewCheckpoint { get; init; }

    /// <summary>
    /// Drydock checkpoints known to be unusable as a base although the driver lists them (for instance a redefine from
    /// the saved XML failed validation, F05), with why. A disk whose base is one of them goes full. Default none.
    /// </summary>
    public IReadOnlyDictionary<string, string> UnusableCheckpoints { get; init; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>
    /// The tag of this chain's checkpoints (<see cref="DrydockNames.ChainTag"/> of the repository). When set, only
    /// checkpoints of this chain are ever deleted: those carrying the tag and those the committed points name; a
    /// Drydock checkpoint of another repository's chain, or an untagged one no point of this chain names, is left
    /// alone like a foreign one. Null treats every Drydock checkpoint as this chain's (one repository per domain).
    /// </summary>
    public string? ChainTag { get; init; }
}

/// <summary>Why a disk is read in full.</summary>
public enum FullReasonCode
{
    /// <summary>A full was asked for.</summary>
    Requested = 0,

    /// <summary>The domain has no committed point yet.</summary>
    NoPriorPoint = 1,

    /// <summary>The disk is not in the parent point (hot-added, F11).</summary>
    NewDisk = 2,

    /// <summary>The disk's size changed (F09).</summary>
    Resized = 3,

    /// <summary>The disk's image was replaced (F10).</summary>
    Replaced = 4,

    /// <summary>The base checkpoint is gone and cannot be redefined (F05, F14).</summary>
    CheckpointMissing = 5,

    /// <summary>The base checkpoint's bitmap is gone (F06).</summary>
    BitmapMissing = 6,

    /// <summary>The base checkpoint's bitmap is inconsistent or busy (F01).</summary>
    BitmapInconsistent = 7,

    /// <summary>The disk cannot carry checkpoints (F22).</summary>
    CheckpointsUnsupported = 8,

    /// <summary>The disk's content went back in time (revert, F13).</summary>
    GenerationChanged = 9,

    /// <summary>The parent point has no checkpoint for this disk.</summary>
    NoBaseCheckpoint = 10,

    /// <summary>The auto policy's full interval was reached.</summary>
    Scheduled = 11,

    /// <summary>The driver read the disk in full although a base was asked for (its reason is in the message).</summary>
    DriverFallback = 12,
}

/// <summary>Why a disk is read in full, for the job report and the manifest.</summary>
/// <param name="Code">The reason.</param>
/// <param name="Message">A sentence naming disk and checkpoint.</param>
public sealed record FullReason(FullReasonCode Code, string Message);

/// <summary>The plan for one disk.</summary>
public sealed record DiskChainPlan
{
    /// <summary>The target.</summary>
    public required string Target { get; init; }

    /// <summary>The level it will be stored at.</summary>
    public required DiskBackupLevel Level { get; init; }

    /// <summary>The checkpoint the changed blocks are read since (incremental, differential).</summary>
    public string? SinceCheckpoint { get; init; }

    /// <summary>The parent point (incremental, differential).</summary>
    public long? ParentSequence { get; init; }

    /// <summary>Why it is full, when it is full.</summary>
    public FullReason? FullReason { get; init; }
}

/// <summary>A change to the domain's checkpoints the job makes before the capture. Only Drydock's own checkpoints are ever
/// named (F15).</summary>
/// <param name="Kind">What to do.</param>
/// <param name="Checkpoint">The checkpoint.</param>
/// <param name="Xml">The saved XML, for <see cref="CheckpointRepairKind.Redefine"/>.</param>
/// <param name="Reason">Why, for the log and report.</param>
public sealed record CheckpointRepair(CheckpointRepairKind Kind, string Checkpoint, string? Xml, string Reason);

/// <summary>The kind of <see cref="CheckpointRepair"/>.</summary>
public enum CheckpointRepairKind
{
    /// <summary>Redefine lost metadata from the saved XML, with validation (F05).</summary>
    Redefine = 0,

    /// <summary>Delete only the metadata: its bitmap is gone (F06).</summary>
    DeleteMetadata = 1,

    /// <summary>Delete bitmaps and metadata: stale, broken or not needed by the chain (F01, F02, F03).</summary>
    Delete = 2,
}

/// <summary>What a backup will do.</summary>
public sealed record ChainPlan
{
    /// <summary>The checkpoint the capture creates.</summary>
    public required string NewCheckpoint { get; init; }

    /// <summary>One entry per target, in the order asked.</summary>
    public required IReadOnlyList<DiskChainPlan> Disks { get; init; }

    /// <summary>Checkpoint repairs to make before the capture, in order.</summary>
    public required IReadOnlyList<CheckpointRepair> Repairs { get; init; }
}
