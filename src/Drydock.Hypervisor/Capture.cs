using Drydock.Nbd;

namespace Drydock.Hypervisor;

/// <summary>What to capture (<see cref="IHypervisorDriver.BeginCaptureAsync"/>).</summary>
public sealed record CaptureRequest
{
    /// <summary>The domain.</summary>
    public required string DomainId { get; init; }

    /// <summary>The disks, each full or since a checkpoint. At least one; each target at most once.</summary>
    public required IReadOnlyList<CaptureDiskRequest> Disks { get; init; }

    /// <summary>
    /// A checkpoint to create at the capture's instant on every captured disk that supports checkpoints, or null.
    /// It must carry Drydock's prefix (<see cref="DrydockNames.NewCheckpointName"/>). It is kept when the capture is
    /// released <see cref="CaptureOutcome.Committed"/> and removed when <see cref="CaptureOutcome.Abandoned"/>.
    /// </summary>
    public string? NewCheckpoint { get; init; }

    /// <summary>
    /// When a disk's base checkpoint cannot serve (missing, bitmap gone or inconsistent), read that disk in full and
    /// say why (<see cref="CaptureDisk.FullReason"/>) instead of failing the capture. Default true.
    /// </summary>
    public bool FallBackToFull { get; init; } = true;

    /// <summary>Who asked (a job id), for logs and the hypervisor's job description where it has one.</summary>
    public string? Label { get; init; }

    /// <summary>A capture of <paramref name="targets"/> in full.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="targets">Disk target names.</param>
    /// <param name="newCheckpoint">A checkpoint to create at the same instant, or null.</param>
    /// <returns>The request.</returns>
    public static CaptureRequest Full(string domainId, IEnumerable<string> targets, string? newCheckpoint = null) => new()
    {
        DomainId = domainId,
        Disks = [.. targets.Select(t => new CaptureDiskRequest(t))],
        NewCheckpoint = newCheckpoint,
    };

    /// <summary>A capture of the blocks of <paramref name="targets"/> changed since <paramref name="checkpoint"/>.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="checkpoint">The base: the last committed checkpoint (incremental) or an older one (differential).</param>
    /// <param name="targets">Disk target names.</param>
    /// <param name="newCheckpoint">A checkpoint to create at the same instant, or null.</param>
    /// <returns>The request.</returns>
    public static CaptureRequest Since(string domainId, string checkpoint, IEnumerable<string> targets, string? newCheckpoint = null) => new()
    {
        DomainId = domainId,
        Disks = [.. targets.Select(t => new CaptureDiskRequest(t, checkpoint))],
        NewCheckpoint = newCheckpoint,
    };
}

/// <summary>One disk of a capture request.</summary>
/// <param name="Target">The disk's target name.</param>
/// <param name="SinceCheckpoint">Read only the blocks changed since this checkpoint; null reads the whole disk.</param>
public sealed record CaptureDiskRequest(string Target, string? SinceCheckpoint = null);

/// <summary>How a capture ends.</summary>
public enum CaptureOutcome
{
    /// <summary>The restore point was not committed: remove the capture's new checkpoint (FAULTS.md F04).</summary>
    Abandoned = 0,

    /// <summary>The restore point was committed: keep the capture's new checkpoint as the next base.</summary>
    Committed = 1,
}

/// <summary>A point-in-time view of a domain's disks, exported over NBD until released.</summary>
public sealed record Capture
{
    /// <summary>The driver's identifier (also its tag on the hypervisor, for reconciliation).</summary>
    public required string Id { get; init; }

    /// <summary>The domain.</summary>
    public required string DomainId { get; init; }

    /// <summary>The host it runs on.</summary>
    public required string HostName { get; init; }

    /// <summary>When the point in time was taken (the driver's clock).</summary>
    public required DateTimeOffset CapturedAt { get; init; }

    /// <summary>The checkpoint created at the same instant, or null.</summary>
    public string? NewCheckpoint { get; init; }

    /// <summary>One entry per captured disk, in request order.</summary>
    public required IReadOnlyList<CaptureDisk> Disks { get; init; }

    /// <summary>The captured disk with target name <paramref name="target"/>.</summary>
    /// <param name="target">The target name.</param>
    /// <returns>The disk.</returns>
    /// <exception cref="DiskNotFoundException">Not part of this capture.</exception>
    public CaptureDisk Disk(string target) =>
        Disks.FirstOrDefault(d => string.Equals(d.Target, target, StringComparison.Ordinal))
        ?? throw new DiskNotFoundException(DomainId, target, $"Disk '{target}' is not part of capture '{Id}' of domain '{DomainId}'.");
}

/// <summary>One disk of a capture: where to read it, and what changed.</summary>
public sealed record CaptureDisk
{
    /// <summary>The disk's target name.</summary>
    public required string Target { get; init; }

    /// <summary>The read-only NBD export of the point-in-time view; <see cref="NbdUri.ExportName"/> is the export name.</summary>
    public required NbdUri Endpoint { get; init; }

    /// <summary>The export name (<see cref="NbdUri.ExportName"/> of <see cref="Endpoint"/>).</summary>
    public string ExportName => Endpoint.ExportName;

    /// <summary>The size of the view in bytes (check the export's size against it).</summary>
    public required ulong VirtualSize { get; init; }

    /// <summary>The disk's identity at capture time (<see cref="DiskInfo.Identity"/>).</summary>
    public required string Identity { get; init; }

    /// <summary>The disk's generation at capture time (<see cref="DiskInfo.Generation"/>).</summary>
    public long Generation { get; init; }

    /// <summary>The checkpoint the changed blocks are relative to, or null for a full read.</summary>
    public string? SinceCheckpoint { get; init; }

    /// <summary>
    /// The NBD metadata context that lists the changed blocks (e.g. <c>qemu:dirty-bitmap:NAME</c>), or null: then
    /// the whole disk must be read, for <see cref="FullReason"/>. Never read a null context as "nothing changed".
    /// </summary>
    public string? ChangedBlocksContext { get; init; }

    /// <summary>Bytes per bit of the changed-block bitmap, when <see cref="ChangedBlocksContext"/> is set.</summary>
    public long? Granularity { get; init; }

    /// <summary>Why the disk must be read in full, when <see cref="ChangedBlocksContext"/> is null.</summary>
    public FullReadReason? FullReason { get; init; }

    /// <summary>Whether the capture's new checkpoint covers this disk.</summary>
    public bool InNewCheckpoint { get; init; }

    /// <summary>True when the whole disk must be read.</summary>
    public bool IsFull => ChangedBlocksContext is null;
}

/// <summary>Why a captured disk has no changed-block context.</summary>
public enum FullReadCode
{
    /// <summary>No base checkpoint was asked for.</summary>
    NotRequested = 0,

    /// <summary>The base checkpoint does not exist on the domain (F14).</summary>
    CheckpointMissing = 1,

    /// <summary>The checkpoint exists but this disk has no bitmap for it (F06, F11).</summary>
    BitmapMissing = 2,

    /// <summary>The bitmap is inconsistent or in use after an unclean stop (F01).</summary>
    BitmapInconsistent = 3,

    /// <summary>The disk cannot carry checkpoints (raw image, F22).</summary>
    CheckpointsUnsupported = 4,
}

/// <summary>Why a disk must be read in full.</summary>
/// <param name="Code">The reason.</param>
/// <param name="Message">A sentence for the job report, with the hypervisor's own words where it gave some.</param>
public sealed record FullReadReason(FullReadCode Code, string Message)
{
    /// <summary>The reason of a disk captured without a base.</summary>
    public static FullReadReason NotRequested { get; } = new(FullReadCode.NotRequested, "No base checkpoint was requested.");
}

/// <summary>A capture found on the host (<see cref="IHypervisorDriver.ListCapturesAsync"/>).</summary>
public sealed record CaptureSummary
{
    /// <summary>The capture's identifier.</summary>
    public required string Id { get; init; }

    /// <summary>Its domain.</summary>
    public required string DomainId { get; init; }

    /// <summary>Its disks, where the driver can tell.</summary>
    public IReadOnlyList<string> Targets { get; init; } = [];

    /// <summary>The checkpoint it created, where the driver can tell.</summary>
    public string? NewCheckpoint { get; init; }

    /// <summary>When it started, where the driver can tell.</summary>
    public DateTimeOffset? CapturedAt { get; init; }

    /// <summary>Whether this driver instance started it (false: left by an earlier process).</summary>
    public bool StartedByThisDriver { get; init; }
}
