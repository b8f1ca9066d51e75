using Drydock.Nbd;

namespace Drydock.Hypervisor;

/// <summary>Writable NBD exports of a paused domain's disks, for a restore (<see cref="IHypervisorDriver.OpenRestoreExportAsync"/>).</summary>
public sealed record RestoreExport
{
    /// <summary>The export's identifier, for <see cref="IHypervisorDriver.CloseRestoreExportAsync"/>.</summary>
    public required string Id { get; init; }

    /// <summary>The domain.</summary>
    public required string DomainId { get; init; }

    /// <summary>One entry per exported disk.</summary>
    public required IReadOnlyList<RestoreExportDisk> Disks { get; init; }
}

/// <summary>One writable disk export.</summary>
/// <param name="Target">The disk's target name.</param>
/// <param name="Endpoint">The writable NBD export.</param>
/// <param name="VirtualSize">The disk's size in bytes.</param>
public sealed record RestoreExportDisk(string Target, NbdUri Endpoint, ulong VirtualSize);
