using Drydock.Nbd.Server;

namespace Drydock.Hypervisor.Sim;

/// <summary>The saved content of a disk (<see cref="SimDisk.SaveImageAsync"/>).</summary>
public sealed class SimDiskImage
{
    internal SimDiskImage(ulong size, IReadOnlyList<(ulong Offset, byte[] Data)> extents)
    {
        Size = size;
        Extents = extents;
    }

    /// <summary>The disk size it was saved from.</summary>
    public ulong Size { get; }

    internal IReadOnlyList<(ulong Offset, byte[] Data)> Extents { get; }
}

/// <summary>
/// A simulated disk: sparse storage (a file or memory, served by Drydock.Nbd's server), its dirty bitmaps, and at
/// most one copy-on-write snapshot. Every change — from the guest workload, the guest NBD export or a restore
/// export — goes through <see cref="WriteAsync"/>, <see cref="WriteZeroesAsync"/> or <see cref="TrimAsync"/>: the
/// snapshot first keeps the old data, then the recording bitmaps mark the range, then the storage changes. Changes
/// and snapshot reads are serialised per disk, so a capture reads exactly the content at its instant.
/// </summary>
#pragma warning disable CA1001 // The SemaphoreSlim's wait handle is never used, so it holds nothing to dispose.
public sealed class SimDisk
#pragma warning restore CA1001
{
    private readonly SemaphoreSlim _io = new(1, 1);
    private readonly Dictionary<string, SimBitmap> _bitmaps = new(StringComparer.Ordinal);

    internal SimDisk(SimDomain domain, string target, string format, NbdExportBackend storage, string identity)
    {
        Domain = domain;
        Target = target;
        Format = format;
        Storage = storage;
        Identity = identity;
    }

    /// <summary>The domain it belongs to.</summary>
    public SimDomain Domain { get; }

    /// <summary>The target name.</summary>
    public string Target { get; }

    /// <summary><c>qcow2</c> (bitmaps) or <c>raw</c> (none).</summary>
    public string Format { get; }

    /// <summary>The size in bytes.</summary>
    public ulong Size => Storage.Size;

    /// <summary>The identity of the image behind the target; changes when it is replaced.</summary>
    public string Identity { get; private set; }

    /// <summary>Grows when the content changes behind the bitmaps' back (revert, replace).</summary>
    public long Generation { get; private set; }

    /// <summary>Whether it can carry bitmaps.</summary>
    public bool SupportsCheckpoints => Format == DiskFormats.Qcow2;

    internal NbdExportBackend Storage { get; private set; }

    /// <summary>Whether a capture's copy-on-write snapshot is attached.</summary>
    public bool HasSnapshot => Snapshot is not null;

    internal SimDiskSnapshot? Snapshot { get; set; }

    /// <summary>The bitmaps, by name (a copy).</summary>
    public IReadOnlyList<SimBitmap> Bitmaps
    {
        get
        {
            lock (_bitmaps)
            {
                return [.. _bitmaps.Values];
            }
        }
    }

    /// <summary>Reads the live content.</summary>
    /// <param name="offset">Offset.</param>
    /// <param name="destination">Filled completely.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>A task.</returns>
    public ValueTask ReadAsync(ulong offset, Memory<byte> destination, CancellationToken cancellationToken = default) =>
        Storage.ReadAsync(offset, destination, cancellationToken);

    /// <summary>Writes as the guest does.</summary>
    /// <param name="offset">Offset.</param>
    /// <param name="data">The bytes.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>A task.</returns>
    public ValueTask WriteAsync(ulong offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default) =>
        ChangeAsync(offset, (ulong)data.Length, () => Storage.WriteAsync(offset, data, fua: false, cancellationToken), cancellationToken);

    /// <summary>Zeroes a range as the guest does.</summary>
    /// <param name="offset">Offset.</param>
    /// <param name="length">Length.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>A task.</returns>
    public ValueTask WriteZeroesAsync(ulong offset, ulong length, CancellationToken cancellationToken = default) =>
        ChangeAsync(offset, length, () => Storage.WriteZeroesAsync(offset, length, noHole: false, fua: false, cancellationToken), cancellationToken);

    /// <summary>Discards a range as the guest does; it reads back as zeroes (like qcow2 with discard=unmap).</summary>
    /// <param name="offset">Offset.</param>
    /// <param name="length">Length.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>A task.</returns>
    public ValueTask TrimAsync(ulong offset, ulong length, CancellationToken cancellationToken = default) => WriteZeroesAsync(offset, length, cancellationToken);

    /// <summary>Saves the disk's content (for a later <see cref="SimDomain.RevertDiskAsync"/>).</summary>
    /// <param name="cancellationToken">Cancels the copy.</param>
    /// <returns>The saved content.</returns>
    public async Task<SimDiskImage> SaveImageAsync(CancellationToken cancellationToken = default)
    {
        await _io.WaitAsync(cancellationToken);
        try
        {
            var extents = new List<(ulong Offset, byte[] Data)>();
            for (ulong at = 0; at < Size;)
            {
                var extent = (await Storage.GetAllocationAsync(at, Math.Min(1024 * 1024, Size - at), 1, cancellationToken))[0];
                var length = Math.Min(extent.Length, 1024 * 1024);
                if (!extent.IsHole)
                {
                    var data = new byte[length];
                    await Storage.ReadAsync(at, data, cancellationToken);
                    extents.Add((at, data));
                }

                at += length;
            }

            return new SimDiskImage(Size, extents);
        }
        finally
        {
            _io.Release();
        }
    }

    /// <summary>Puts saved content back (or zeroes) without the bitmaps seeing it; the generation grows.</summary>
    internal async Task RevertAsync(SimDiskImage? image, CancellationToken cancellationToken)
    {
        if (image is not null && image.Size != Size)
        {
            throw new ArgumentException($"The image is {image.Size} bytes; disk '{Target}' has {Size}.", nameof(image));
        }

        await _io.WaitAsync(cancellationToken);
        try
        {
            await Storage.WriteZeroesAsync(0, Size, noHole: false, fua: false, cancellationToken);
            foreach (var (offset, data) in image?.Extents ?? [])
            {
                await Storage.WriteAsync(offset, data, fua: false, cancellationToken);
            }

            Generation++;
        }
        finally
        {
            _io.Release();
        }
    }

    internal SimBitmap? FindBitmap(string name)
    {
        lock (_bitmaps)
        {
            return _bitmaps.GetValueOrDefault(name);
        }
    }

    internal SimBitmap AddBitmap(string name, uint granularity = NbdDirtyBitmap.DefaultGranularity)
    {
        var bitmap = new SimBitmap(name, Size, granularity);
        lock (_bitmaps)
        {
            if (!_bitmaps.TryAdd(name, bitmap))
            {
                throw new InvalidOperationException($"Disk '{Target}' already has a bitmap '{name}'.");
            }
        }

        return bitmap;
    }

    internal bool RemoveBitmap(string name)
    {
        lock (_bitmaps)
        {
            return _bitmaps.Remove(name);
        }
    }

    /// <summary>Runs <paramref name="action"/> with changes to this disk held off (the capture instant).</summary>
    internal async Task<T> WithChangesHeldAsync<T>(Func<T> action, CancellationToken cancellationToken)
    {
        await _io.WaitAsync(cancellationToken);
        try
        {
            return action();
        }
        finally
        {
            _io.Release();
        }
    }

    internal async Task HoldChangesAsync(CancellationToken cancellationToken) => await _io.WaitAsync(cancellationToken);

    internal void ReleaseChanges() => _io.Release();

    /// <summary>Reads the snapshot's view: kept old data where the live data changed, the live data elsewhere.</summary>
    internal async ValueTask ReadSnapshotAsync(SimDiskSnapshot snapshot, ulong offset, Memory<byte> destination, CancellationToken cancellationToken)
    {
        await _io.WaitAsync(cancellationToken);
        try
        {
            snapshot.ThrowIfUnreadable();
            await snapshot.ReadAsync(offset, destination, cancellationToken);
        }
        finally
        {
            _io.Release();
        }
    }

    internal async ValueTask<IReadOnlyList<Nbd.NbdExtent>> SnapshotAllocationAsync(SimDiskSnapshot snapshot, ulong offset, ulong length, int maxExtents, CancellationToken cancellationToken)
    {
        await _io.WaitAsync(cancellationToken);
        try
        {
            snapshot.ThrowIfUnreadable();
            return await snapshot.GetAllocationAsync(offset, length, maxExtents, cancellationToken);
        }
        finally
        {
            _io.Release();
        }
    }

    /// <summary>Replaces the storage (resize, replace, revert), under the disk's change lock.</summary>
    internal async Task SwapStorageAsync(NbdExportBackend storage, bool newImage, bool contentChangedBehindBitmaps, CancellationToken cancellationToken)
    {
        await _io.WaitAsync(cancellationToken);
        try
        {
            var old = Storage;
            Storage = storage;
            if (newImage)
            {
                Identity = Domain.Host.Fleet.NewIdentity();
                lock (_bitmaps)
                {
                    _bitmaps.Clear();
                }
            }
            else
            {
                lock (_bitmaps)
                {
                    foreach (var bitmap in _bitmaps.Values)
                    {
                        bitmap.Resize(storage.Size);
                    }
                }
            }

            if (contentChangedBehindBitmaps)
            {
                Generation++;
            }

            if (!ReferenceEquals(old, storage))
            {
                await old.DisposeAsync();
            }
        }
        finally
        {
            _io.Release();
        }
    }

    private async ValueTask ChangeAsync(ulong offset, ulong length, Func<ValueTask> change, CancellationToken cancellationToken)
    {
        if (length == 0)
        {
            return;
        }

        if (offset > Size || length > Size - offset)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"Range [{offset}, +{length}) passes the end of disk '{Target}' ({Size} bytes).");
        }

        await _io.WaitAsync(cancellationToken);
        try
        {
            if (Snapshot is { } snapshot)
            {
                await snapshot.PreserveAsync(offset, length, cancellationToken);
            }

            lock (_bitmaps)
            {
                foreach (var bitmap in _bitmaps.Values)
                {
                    if (bitmap.Recording && !bitmap.Inconsistent)
                    {
                        bitmap.Mark(offset, length);
                    }
                }
            }

            await change();
        }
        finally
        {
            _io.Release();
        }
    }
}
