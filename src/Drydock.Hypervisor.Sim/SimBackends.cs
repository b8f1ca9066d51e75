using Drydock.Nbd;
using Drydock.Nbd.Server;

namespace Drydock.Hypervisor.Sim;

/// <summary>The live disk as an NBD export backend: the guest export and restore exports write through the disk.</summary>
/// <remarks>Closed when its export is removed: a client still connected then gets errors, as from a stopped QEMU.</remarks>
internal sealed class SimLiveBackend(SimDisk disk) : NbdExportBackend
{
    private volatile bool _closed;

    public override ulong Size => disk.Size;

    public override bool CanZeroFast(bool noHole) => !noHole;

    public void Close() => _closed = true;

    public override ValueTask ReadAsync(ulong offset, Memory<byte> destination, CancellationToken cancellationToken = default) =>
        Open().ReadAsync(offset, destination, cancellationToken);

    public override ValueTask WriteAsync(ulong offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken = default) =>
        Open().WriteAsync(offset, data, cancellationToken);

    public override ValueTask WriteZeroesAsync(ulong offset, ulong length, bool noHole, bool fua, CancellationToken cancellationToken = default) =>
        Open().WriteZeroesAsync(offset, length, cancellationToken);

    public override ValueTask TrimAsync(ulong offset, ulong length, bool fua, CancellationToken cancellationToken = default) =>
        Open().TrimAsync(offset, length, cancellationToken);

    public override ValueTask FlushAsync(CancellationToken cancellationToken = default) => Open().Storage.FlushAsync(cancellationToken);

    public override ValueTask<IReadOnlyList<NbdExtent>> GetAllocationAsync(ulong offset, ulong length, int maxExtents, CancellationToken cancellationToken = default) =>
        Open().Storage.GetAllocationAsync(offset, length, maxExtents, cancellationToken);

    private SimDisk Open() => _closed ? throw new IOException($"Disk '{disk.Target}' of domain '{disk.Domain.Name}' is no longer served here.") : disk;
}

/// <summary>A capture's read-only point-in-time view as an NBD export backend.</summary>
internal sealed class SimSnapshotBackend(SimDiskSnapshot snapshot) : NbdExportBackend
{
    public override ulong Size => snapshot.Size;

    public override bool IsReadOnly => true;

    public override ValueTask ReadAsync(ulong offset, Memory<byte> destination, CancellationToken cancellationToken = default) =>
        snapshot.Disk.ReadSnapshotAsync(snapshot, offset, destination, cancellationToken);

    public override ValueTask WriteAsync(ulong offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("A capture is read-only.");

    public override ValueTask WriteZeroesAsync(ulong offset, ulong length, bool noHole, bool fua, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("A capture is read-only.");

    public override ValueTask TrimAsync(ulong offset, ulong length, bool fua, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("A capture is read-only.");

    public override ValueTask FlushAsync(CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

    public override ValueTask<IReadOnlyList<NbdExtent>> GetAllocationAsync(ulong offset, ulong length, int maxExtents, CancellationToken cancellationToken = default) =>
        snapshot.Disk.SnapshotAllocationAsync(snapshot, offset, length, maxExtents, cancellationToken);
}
