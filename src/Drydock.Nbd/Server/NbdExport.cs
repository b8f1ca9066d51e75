using Drydock.Nbd.Protocol;

namespace Drydock.Nbd.Server;

/// <summary>
/// One export of an <see cref="NbdServer"/>: a name, a backend, the limits clients must respect, and its
/// dirty bitmaps. Its IO methods are also how code acts as the guest (the simulated hypervisor writes
/// through them): every write, zeroing and trim is recorded in the enabled bitmaps, whoever makes it.
/// Every connection to the export shares the backend, so the server advertises NBD_FLAG_CAN_MULTI_CONN.
/// </summary>
public sealed class NbdExport
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, NbdDirtyBitmap> _bitmaps = new(StringComparer.Ordinal);
    private NbdDirtyBitmap[] _bitmapList = [];

    /// <summary>Creates an export.</summary>
    /// <param name="name">Export name ("" is the default export).</param>
    /// <param name="backend">Where the bytes live; the export does not dispose it.</param>
    /// <param name="readOnly">Refuse writes from NBD clients (code may still write through this object).</param>
    /// <param name="description">Text for NBD_INFO_DESCRIPTION and NBD_OPT_LIST.</param>
    /// <param name="blockSizes">Limits clients must respect. Default: minimum 1, preferred 4096, maximum 32 MiB.</param>
    /// <exception cref="ArgumentException">A name is not a valid protocol string or the block sizes are inconsistent.</exception>
    public NbdExport(string name, NbdExportBackend backend, bool readOnly = false, string? description = null, NbdBlockSizes? blockSizes = null)
    {
        NbdStrings.Encode(name, "export name");
        if (description is not null)
        {
            NbdStrings.Encode(description, "export description");
        }

        var sizes = blockSizes ?? NbdBlockSizes.Default;
        try
        {
            sizes.Validate();
        }
        catch (NbdProtocolException e)
        {
            throw new ArgumentException(e.Message, nameof(blockSizes), e);
        }

        if (backend.Size % sizes.Minimum != 0)
        {
            throw new ArgumentException($"export size {backend.Size} is not a multiple of the minimum block size {sizes.Minimum}", nameof(blockSizes));
        }

        Name = name;
        Backend = backend;
        Description = description;
        BlockSizes = sizes;
        IsReadOnly = readOnly || backend.IsReadOnly;
    }

    /// <summary>The export name.</summary>
    public string Name { get; }

    /// <summary>The description, if any.</summary>
    public string? Description { get; }

    /// <summary>The backend.</summary>
    public NbdExportBackend Backend { get; }

    /// <summary>Size in bytes.</summary>
    public ulong Size => Backend.Size;

    /// <summary>Whether NBD clients may not write.</summary>
    public bool IsReadOnly { get; }

    /// <summary>Block-size constraints advertised with NBD_INFO_BLOCK_SIZE and enforced on requests.</summary>
    public NbdBlockSizes BlockSizes { get; }

    /// <summary>The transmission flags the export advertises.</summary>
    public NbdTransmissionFlags Flags
    {
        get
        {
            var flags = NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFlush | NbdTransmissionFlags.SendFua
                        | NbdTransmissionFlags.CanMultiConn | NbdTransmissionFlags.SendCache;
            return IsReadOnly
                ? flags | NbdTransmissionFlags.ReadOnly
                : flags | NbdTransmissionFlags.SendTrim | NbdTransmissionFlags.SendWriteZeroes | NbdTransmissionFlags.SendFastZero;
        }
    }

    /// <summary>The dirty bitmaps, in creation order.</summary>
    public IReadOnlyList<NbdDirtyBitmap> Bitmaps => Volatile.Read(ref _bitmapList);

    /// <summary>Creates a dirty bitmap, served as <c>qemu:dirty-bitmap:NAME</c>.</summary>
    /// <param name="name">Bitmap name (unique within the export).</param>
    /// <param name="granularity">Bytes per bit: a power of two, at least 512 and at least the minimum block size.</param>
    /// <param name="enabled">Whether it records writes from now on.</param>
    /// <returns>The bitmap, all clean.</returns>
    /// <exception cref="InvalidOperationException">A bitmap of that name exists.</exception>
    public NbdDirtyBitmap CreateBitmap(string name, uint granularity = NbdDirtyBitmap.DefaultGranularity, bool enabled = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        NbdStrings.Encode(NbdContexts.DirtyBitmap(name), "bitmap context name");
        ArgumentOutOfRangeException.ThrowIfLessThan(granularity, BlockSizes.Minimum);
        var bitmap = new NbdDirtyBitmap(name, Size, granularity, enabled);
        lock (_lock)
        {
            if (!_bitmaps.TryAdd(name, bitmap))
            {
                throw new InvalidOperationException($"export '{Name}' already has a dirty bitmap named '{name}'");
            }

            Volatile.Write(ref _bitmapList, [.. _bitmapList, bitmap]);
        }

        return bitmap;
    }

    /// <summary>Removes a dirty bitmap. Connections that selected it keep reading their copy of the reference.</summary>
    /// <param name="name">Bitmap name.</param>
    /// <returns>False when there was none.</returns>
    public bool RemoveBitmap(string name)
    {
        lock (_lock)
        {
            if (!_bitmaps.Remove(name, out var bitmap))
            {
                return false;
            }

            Volatile.Write(ref _bitmapList, [.. _bitmapList.Where(b => b != bitmap)]);
            return true;
        }
    }

    /// <summary>Finds a dirty bitmap.</summary>
    /// <param name="name">Bitmap name.</param>
    /// <returns>The bitmap, or null.</returns>
    public NbdDirtyBitmap? FindBitmap(string name)
    {
        lock (_lock)
        {
            return _bitmaps.GetValueOrDefault(name);
        }
    }

    /// <summary>Reads from the export.</summary>
    /// <param name="offset">Offset.</param>
    /// <param name="destination">Filled completely.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>A task that completes when the data is in place.</returns>
    public ValueTask ReadAsync(ulong offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, (ulong)destination.Length);
        return Backend.ReadAsync(offset, destination, cancellationToken);
    }

    /// <summary>Writes to the export and records the range in the enabled bitmaps.</summary>
    /// <param name="offset">Offset.</param>
    /// <param name="data">The bytes.</param>
    /// <param name="fua">Persist before completing.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>A task that completes when written.</returns>
    public ValueTask WriteAsync(ulong offset, ReadOnlyMemory<byte> data, bool fua = false, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, (ulong)data.Length);
        Record(offset, (ulong)data.Length);
        return Backend.WriteAsync(offset, data, fua, cancellationToken);
    }

    /// <summary>Zeroes a range and records it in the enabled bitmaps.</summary>
    /// <param name="offset">Offset.</param>
    /// <param name="length">Length.</param>
    /// <param name="noHole">Keep the range allocated.</param>
    /// <param name="fua">Persist before completing.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>A task that completes when the range reads as zeroes.</returns>
    public ValueTask WriteZeroesAsync(ulong offset, ulong length, bool noHole = false, bool fua = false, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, length);
        Record(offset, length);
        return Backend.WriteZeroesAsync(offset, length, noHole, fua, cancellationToken);
    }

    /// <summary>Trims a range and records it in the enabled bitmaps (its content may change).</summary>
    /// <param name="offset">Offset.</param>
    /// <param name="length">Length.</param>
    /// <param name="fua">Persist before completing.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>A task that completes when done.</returns>
    public ValueTask TrimAsync(ulong offset, ulong length, bool fua = false, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, length);
        Record(offset, length);
        return Backend.TrimAsync(offset, length, fua, cancellationToken);
    }

    /// <summary>Flushes the backend.</summary>
    /// <param name="cancellationToken">Cancels the flush.</param>
    /// <returns>A task that completes when written data is persistent.</returns>
    public ValueTask FlushAsync(CancellationToken cancellationToken = default) => Backend.FlushAsync(cancellationToken);

    // Marked before the backend changes, so a concurrent checkpoint never misses a change that lands.
    private void Record(ulong offset, ulong length)
    {
        if (length == 0)
        {
            return;
        }

        foreach (var bitmap in Bitmaps)
        {
            bitmap.Record(offset, length);
        }
    }

    private void CheckRange(ulong offset, ulong length)
    {
        if (offset > Size || length > Size - offset)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"range [{offset}, +{length}) passes the end of export '{Name}' ({Size} bytes)");
        }
    }
}
