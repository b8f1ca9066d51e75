namespace Drydock.Hypervisor;

/// <summary>The state of one disk and of every checkpoint bitmap on it (<see cref="IHypervisorDriver.GetDiskHealthAsync"/>).</summary>
public sealed record DiskHealth
{
    /// <summary>The disk's target name.</summary>
    public required string Target { get; init; }

    /// <summary>The disk's identity now (<see cref="DiskInfo.Identity"/>).</summary>
    public required string Identity { get; init; }

    /// <summary>The disk's size now.</summary>
    public required ulong VirtualSize { get; init; }

    /// <summary>The disk's generation now (<see cref="DiskInfo.Generation"/>).</summary>
    public long Generation { get; init; }

    /// <summary>Whether the disk can carry checkpoints.</summary>
    public bool SupportsCheckpoints { get; init; }

    /// <summary>Every named bitmap on the disk, Drydock's and foreign ones.</summary>
    public required IReadOnlyList<BitmapHealth> Bitmaps { get; init; }

    /// <summary>The bitmap of checkpoint <paramref name="checkpoint"/> on this disk, or null when it has none.</summary>
    /// <param name="checkpoint">The checkpoint name.</param>
    /// <returns>The bitmap's state.</returns>
    public BitmapHealth? ForCheckpoint(string checkpoint) =>
        Bitmaps.FirstOrDefault(b => string.Equals(b.Checkpoint, checkpoint, StringComparison.Ordinal));

    /// <summary>
    /// Whether changes since <paramref name="checkpoint"/> can be read from this disk; if not, why (for the job report).
    /// </summary>
    /// <param name="checkpoint">The base checkpoint.</param>
    /// <param name="reason">Why not, when the result is false.</param>
    /// <returns>True when an incremental/differential read is possible.</returns>
    public bool CanServeAsBase(string checkpoint, out FullReadReason? reason)
    {
        if (!SupportsCheckpoints)
        {
            reason = new FullReadReason(FullReadCode.CheckpointsUnsupported, $"Disk '{Target}' cannot carry checkpoints.");
            return false;
        }

        var bitmap = ForCheckpoint(checkpoint);
        if (bitmap is null)
        {
            reason = new FullReadReason(FullReadCode.BitmapMissing, $"Disk '{Target}' has no bitmap for checkpoint '{checkpoint}'.");
            return false;
        }

        if (!bitmap.Usable)
        {
            reason = new FullReadReason(FullReadCode.BitmapInconsistent, $"The bitmap of checkpoint '{checkpoint}' on disk '{Target}' is unusable: {bitmap.Problem}");
            return false;
        }

        reason = null;
        return true;
    }
}

/// <summary>One dirty bitmap on a disk.</summary>
public sealed record BitmapHealth
{
    /// <summary>The checkpoint it belongs to (for libvirt and the QEMU driver the bitmap's name).</summary>
    public required string Checkpoint { get; init; }

    /// <summary>The bitmap's name in the image.</summary>
    public required string Bitmap { get; init; }

    /// <summary>Whether it is Drydock's.</summary>
    public bool IsOwned => DrydockNames.IsOwned(Checkpoint);

    /// <summary>Whether it records writes now (in libvirt's scheme only the newest checkpoint's bitmap does).</summary>
    public bool Recording { get; init; }

    /// <summary>Whether an operation holds it (an export, a job).</summary>
    public bool Busy { get; init; }

    /// <summary>Whether it is inconsistent (the image was not closed cleanly; F01). Such a bitmap can only be removed.</summary>
    public bool Inconsistent { get; init; }

    /// <summary>Whether it is stored in the image (survives a restart).</summary>
    public bool Persistent { get; init; }

    /// <summary>Bytes per bit.</summary>
    public long Granularity { get; init; }

    /// <summary>Bytes marked dirty, where known.</summary>
    public long? DirtyBytes { get; init; }

    /// <summary>Whether it can serve as the base of a capture, as the driver judges with its own bitmap scheme.</summary>
    public required bool Usable { get; init; }

    /// <summary>Why it is not usable, in the hypervisor's words where possible.</summary>
    public string? Problem { get; init; }
}
