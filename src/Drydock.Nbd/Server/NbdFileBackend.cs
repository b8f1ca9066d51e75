using System.Runtime.InteropServices;
using Drydock.Nbd.Interop;
using Drydock.Nbd.Protocol;
using Microsoft.Win32.SafeHandles;

namespace Drydock.Nbd.Server;

/// <summary>
/// An export backed by a (sparse) file. Allocation comes from <c>lseek(SEEK_DATA/SEEK_HOLE)</c>; TRIM and
/// WRITE_ZEROES punch holes with <c>fallocate</c> where the file system supports it, and otherwise write
/// zeroes. A file system without SEEK_DATA reports everything as data, which is always correct.
/// </summary>
public sealed class NbdFileBackend : NbdExportBackend
{
    private const int ZeroChunk = 1024 * 1024;
    private const uint HoleFlags = (uint)(NbdAllocationFlags.Hole | NbdAllocationFlags.Zero);

    // Shared source of zero bytes for WRITE_ZEROES where holes cannot be punched (never written to).
    private static readonly byte[] Zeroes = new byte[ZeroChunk];

    private readonly SafeFileHandle _handle;
    private readonly ulong _size;
    private readonly bool _readOnly;
    private volatile bool _punchHoleUnsupported;
    private volatile bool _seekDataUnsupported;

    private NbdFileBackend(SafeFileHandle handle, ulong size, bool readOnly, string path)
    {
        _handle = handle;
        _size = size;
        _readOnly = readOnly;
        Path = path;
    }

    /// <summary>The file's path.</summary>
    public string Path { get; }

    /// <inheritdoc/>
    public override ulong Size => _size;

    /// <inheritdoc/>
    public override bool IsReadOnly => _readOnly;

    /// <inheritdoc/>
    public override bool CanZeroFast(bool noHole) => !noHole && !_punchHoleUnsupported && OperatingSystem.IsLinux();

    /// <summary>Opens an existing file; its current length is the export size.</summary>
    /// <param name="path">The file.</param>
    /// <param name="readOnly">Open for reading only.</param>
    /// <returns>The backend; dispose it to close the file.</returns>
    public static NbdFileBackend Open(string path, bool readOnly = false)
    {
        var handle = File.OpenHandle(path, FileMode.Open, readOnly ? FileAccess.Read : FileAccess.ReadWrite, FileShare.ReadWrite);
        try
        {
            var length = RandomAccess.GetLength(handle);
            if (length <= 0)
            {
                throw new ArgumentException($"file {path} is empty; an NBD export needs a positive size", nameof(path));
            }

            return new NbdFileBackend(handle, (ulong)length, readOnly, path);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Creates a new sparse file of <paramref name="size"/> bytes (all holes).</summary>
    /// <param name="path">The file; it must not exist.</param>
    /// <param name="size">Size in bytes.</param>
    /// <returns>The backend; dispose it to close the file.</returns>
    public static NbdFileBackend Create(string path, ulong size)
    {
        ArgumentOutOfRangeException.ThrowIfZero(size);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(size, (ulong)long.MaxValue);
        var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.ReadWrite);
        try
        {
            RandomAccess.SetLength(handle, (long)size);
            return new NbdFileBackend(handle, size, readOnly: false, path);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public override async ValueTask ReadAsync(ulong offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, (ulong)destination.Length);
        while (destination.Length > 0)
        {
            var read = await RandomAccess.ReadAsync(_handle, destination, (long)offset, cancellationToken);
            if (read == 0)
            {
                throw new IOException($"file {Path} ended at offset {offset}, inside the export of {_size} bytes (was it truncated?)");
            }

            destination = destination[read..];
            offset += (ulong)read;
        }
    }

    /// <inheritdoc/>
    public override async ValueTask WriteAsync(ulong offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, (ulong)data.Length);
        await RandomAccess.WriteAsync(_handle, data, (long)offset, cancellationToken);
        if (fua)
        {
            RandomAccess.FlushToDisk(_handle);
        }
    }

    /// <inheritdoc/>
    public override async ValueTask WriteZeroesAsync(ulong offset, ulong length, bool noHole, bool fua, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, length);
        if (noHole || !TryPunchHole(offset, length))
        {
            await WriteZeroBytesAsync(offset, length, cancellationToken);
        }

        if (fua)
        {
            RandomAccess.FlushToDisk(_handle);
        }
    }

    /// <inheritdoc/>
    public override ValueTask TrimAsync(ulong offset, ulong length, bool fua, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, length);

        // TRIM is a hint: when the file system cannot punch holes, nothing happens.
        TryPunchHole(offset, length);
        if (fua)
        {
            RandomAccess.FlushToDisk(_handle);
        }

        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public override ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        RandomAccess.FlushToDisk(_handle);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public override ValueTask<IReadOnlyList<NbdExtent>> GetAllocationAsync(ulong offset, ulong length, int maxExtents, CancellationToken cancellationToken = default)
    {
        CheckRange(offset, length);
        ArgumentOutOfRangeException.ThrowIfZero(length);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxExtents, 1);
        var end = offset + length;
        var extents = new List<NbdExtent>();
        if (_seekDataUnsupported || !OperatingSystem.IsLinux())
        {
            extents.Add(new NbdExtent(offset, length, 0));
            return new(extents);
        }

        var added = false;
        _handle.DangerousAddRef(ref added);
        try
        {
            var fd = (int)_handle.DangerousGetHandle();
            var at = offset;
            while (at < end && extents.Count < maxExtents)
            {
                var data = Seek(fd, at, NativeMethods.SeekData);
                if (data is null)
                {
                    // The file system cannot tell: report the rest as data.
                    extents.Add(new NbdExtent(at, end - at, 0));
                    break;
                }

                if (data.Value > at)
                {
                    var holeEnd = Math.Min(data.Value, end);
                    extents.Add(new NbdExtent(at, holeEnd - at, HoleFlags));
                    at = holeEnd;
                    continue;
                }

                var hole = Seek(fd, at, NativeMethods.SeekHole) ?? end;
                var dataEnd = Math.Clamp(hole, at + 1, end);
                extents.Add(new NbdExtent(at, dataEnd - at, 0));
                at = dataEnd;
            }
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }

        return new(extents);
    }

    /// <inheritdoc/>
    protected override ValueTask DisposeAsyncCore()
    {
        _handle.Dispose();
        return base.DisposeAsyncCore();
    }

    // SEEK_DATA past the last data fails with ENXIO: the rest of the file is a hole (returns the size).
    // Null means the file system does not support the query.
    private ulong? Seek(int fd, ulong offset, int whence)
    {
        var result = NativeMethods.LSeek(fd, (long)offset, whence);
        if (result >= 0)
        {
            return (ulong)result;
        }

        var errno = Marshal.GetLastPInvokeError();
        if (errno == NativeMethods.ENXIO)
        {
            return _size;
        }

        _seekDataUnsupported = true;
        return null;
    }

    private bool TryPunchHole(ulong offset, ulong length)
    {
        if (_punchHoleUnsupported || !OperatingSystem.IsLinux() || length == 0)
        {
            return length == 0;
        }

        var added = false;
        _handle.DangerousAddRef(ref added);
        try
        {
            var fd = (int)_handle.DangerousGetHandle();
            if (NativeMethods.FAllocate(fd, NativeMethods.FallocPunchHole | NativeMethods.FallocKeepSize, (long)offset, (long)length) == 0)
            {
                return true;
            }

            _punchHoleUnsupported = true;
            return false;
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }
    }

    private async ValueTask WriteZeroBytesAsync(ulong offset, ulong length, CancellationToken cancellationToken)
    {
        var zeroes = new ReadOnlyMemory<byte>(Zeroes);
        for (var at = offset; at < offset + length;)
        {
            var count = (int)Math.Min((ulong)zeroes.Length, offset + length - at);
            await RandomAccess.WriteAsync(_handle, zeroes[..count], (long)at, cancellationToken);
            at += (ulong)count;
        }
    }
}
