using Xunit;

namespace Drydock.Hypervisor.Contract;

/// <summary>What domain a contract test needs.</summary>
public sealed record ContractDomainSpec
{
    /// <summary>Number of disks (targets are the harness's; at least 2 by default).</summary>
    public int Disks { get; init; } = 2;

    /// <summary>Size of each disk.</summary>
    public ulong DiskSize { get; init; } = 16 * 1024 * 1024;

    /// <summary>F17: the fleece/scratch space is much smaller than the disk (about 1 MiB).</summary>
    public bool LimitedFleece { get; init; }

    /// <summary>F22: the last disk is raw (cannot carry checkpoints).</summary>
    public bool RawLastDisk { get; init; }
}

/// <summary>
/// A real hypervisor with one domain, started for one contract test: the driver under test, a guest-side path to
/// write and read the disks, fault injection, and a check of the real state for leftovers. A harness that cannot
/// inject a fault leaves the default implementation, which skips the test with the reason.
/// </summary>
public abstract class ContractHarness : IAsyncDisposable
{
    /// <summary>The driver under test (replaced by <see cref="ReopenDriverAsync"/>).</summary>
    public abstract IHypervisorDriver Driver { get; }

    /// <summary>The domain's id.</summary>
    public abstract string DomainId { get; }

    /// <summary>The domain's disk targets, in order.</summary>
    public abstract IReadOnlyList<string> Targets { get; }

    /// <summary>Whether the fleece space is limited (<see cref="ContractDomainSpec.LimitedFleece"/> honoured).</summary>
    public virtual bool FleeceLimited => false;

    /// <summary>Writes as the guest does (through the path the snapshot filter sees).</summary>
    public abstract Task WriteAsync(string target, ulong offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default);

    /// <summary>Discards a range as the guest does (it must read back as zeros).</summary>
    public abstract Task TrimAsync(string target, ulong offset, ulong length, CancellationToken cancellationToken = default);

    /// <summary>Reads the live disk as the guest sees it.</summary>
    public abstract Task<byte[]> ReadLiveAsync(string target, ulong offset, int length, CancellationToken cancellationToken = default);

    /// <summary>
    /// What captures and exports left behind, from the real state (nodes, exports, jobs, bitmaps, files): one line
    /// per leftover, empty when clean.
    /// </summary>
    public abstract Task<IReadOnlyList<string>> FindLeftoversAsync(CancellationToken cancellationToken = default);

    /// <summary>Stops the hypervisor cleanly (bitmaps are stored) and starts it again.</summary>
    public virtual Task RestartCleanlyAsync(CancellationToken cancellationToken = default) => Unsupported("a clean restart");

    /// <summary>Kills the hypervisor process uncleanly (F01, F21); the domain stays down until <see cref="StartAgainAsync"/>.</summary>
    public virtual Task KillAsync(CancellationToken cancellationToken = default) => Unsupported("an unclean kill");

    /// <summary>Starts the domain again after <see cref="KillAsync"/>.</summary>
    public virtual Task StartAgainAsync(CancellationToken cancellationToken = default) => Unsupported("a restart after a kill");

    /// <summary>Removes a checkpoint's bitmap from one disk behind the driver's back (F06).</summary>
    public virtual Task RemoveBitmapAsync(string target, string bitmap, CancellationToken cancellationToken = default) => Unsupported("bitmap removal");

    /// <summary>Drops the hypervisor's checkpoint metadata, keeping the bitmaps (F05).</summary>
    public virtual Task LoseCheckpointMetadataAsync(string checkpoint, CancellationToken cancellationToken = default) => Unsupported("metadata loss");

    /// <summary>Creates a checkpoint as another tool would (F15).</summary>
    public virtual Task CreateForeignCheckpointAsync(string name, CancellationToken cancellationToken = default) => Unsupported("foreign checkpoints");

    /// <summary>Grows a disk (F09).</summary>
    public virtual Task ResizeDiskAsync(string target, ulong newSize, CancellationToken cancellationToken = default) => Unsupported("a resize");

    /// <summary>Replaces a disk's image by another one under the same target (F10).</summary>
    public virtual Task ReplaceDiskAsync(string target, CancellationToken cancellationToken = default) => Unsupported("a disk replacement");

    /// <summary>Adds a new, empty qcow2 disk to the running domain under <paramref name="target"/> (F11).</summary>
    public virtual Task HotAddDiskAsync(string target, ulong size, CancellationToken cancellationToken = default) => Unsupported("a disk hot-add");

    /// <summary>Removes a disk from the domain (F11); the domain runs again afterwards.</summary>
    public virtual Task RemoveDiskAsync(string target, CancellationToken cancellationToken = default) => Unsupported("a disk removal");

    /// <summary>Takes a disk's content back in time behind the bitmaps' back (F13).</summary>
    public virtual Task RevertDiskAsync(string target, CancellationToken cancellationToken = default) => Unsupported("a revert");

    /// <summary>Whether a management daemon (libvirtd) stands between the driver and QEMU.</summary>
    public virtual bool HasManagementDaemon => false;

    /// <summary>
    /// Restarts the management daemon (libvirtd) under the running domain, the driver connected (F20); the domain's QEMU
    /// keeps running.
    /// </summary>
    public virtual Task RestartManagementDaemonAsync(CancellationToken cancellationToken = default) => Unsupported("a management daemon restart");

    /// <summary>Abandons the current driver instance as a dying process would (no release) and opens a new one (F03).</summary>
    public virtual Task ReopenDriverAsync(CancellationToken cancellationToken = default) => Unsupported("a driver restart");

    /// <summary>Stops everything the harness started.</summary>
    public abstract ValueTask DisposeAsync();

    /// <summary>Skips the calling test: this harness cannot inject <paramref name="what"/>.</summary>
    protected Task Unsupported(string what)
    {
        Assert.Skip($"{GetType().Name} cannot inject {what}.");
        return Task.CompletedTask;
    }
}
