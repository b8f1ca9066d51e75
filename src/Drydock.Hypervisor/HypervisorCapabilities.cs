namespace Drydock.Hypervisor;

/// <summary>What a driver, on the host it is connected to, supports.</summary>
public sealed record HypervisorCapabilities
{
    /// <summary>The driver's name: <c>libvirt</c>, <c>virtuozzo</c>, <c>qemu</c>, <c>sim</c>.</summary>
    public required string Driver { get; init; }

    /// <summary>Checkpoints and changed-block captures.</summary>
    public bool Checkpoints { get; init; }

    /// <summary>
    /// The hypervisor keeps checkpoint metadata apart from the bitmaps (libvirt, sim): metadata can be lost and
    /// redefined (F05), or deleted alone. False: the bitmaps are the checkpoints; redefine only validates.
    /// </summary>
    public bool CheckpointMetadata { get; init; }

    /// <summary>Any older checkpoint can be a base (differential), not only the newest.</summary>
    public bool DifferentialCaptures { get; init; }

    /// <summary>Writable exports for restore (<see cref="IHypervisorDriver.OpenRestoreExportAsync"/>).</summary>
    public bool RestoreExports { get; init; }

    /// <summary>Start (paused), resume and destroy.</summary>
    public bool Lifecycle { get; init; }

    /// <summary>Lifecycle events (<see cref="IHypervisorDriver.WatchEventsAsync"/>) beyond those the driver causes itself.</summary>
    public bool Events { get; init; }

    /// <summary><see cref="DiskInfo.Generation"/> is tracked (F13).</summary>
    public bool DiskGenerations { get; init; }
}
