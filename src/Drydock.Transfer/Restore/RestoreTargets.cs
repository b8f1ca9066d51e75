using Drydock.Nbd.Client;
using Drydock.Storage;
using Microsoft.Win32.SafeHandles;

namespace Drydock.Transfer.Restore;

/// <summary>Where a restore writes chunks (calls for disjoint ranges may run concurrently).</summary>
internal interface IRestoreTarget
{
    /// <summary>Whether writes should come from buffers aligned for O_DIRECT (see <see cref="DirectIo.AllocateAligned"/>).</summary>
    bool WantsAlignedBuffers { get; }

    /// <summary>Reads the target's current bytes (changed-only restores).</summary>
    Task ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken);

    /// <summary>Writes a chunk.</summary>
    Task WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken);

    /// <summary>Makes a range read as zeroes; <paramref name="scratch"/> (the range's length) may be used as a zero buffer.</summary>
    Task ZeroAsync(long offset, Memory<byte> scratch, CancellationToken cancellationToken);
}

/// <summary>An NBD export, through a connection that is re-opened when it drops (every operation is idempotent).</summary>
internal sealed class NbdTarget(ReconnectingClient connection) : IRestoreTarget
{
    private volatile bool _noWriteZeroes;

    public bool WantsAlignedBuffers => false;

    public Task ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) =>
        connection.RunAsync((client, ct) => client.ReadAsync((ulong)offset, buffer, ct), cancellationToken);

    public Task WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        connection.RunAsync((client, ct) => client.WriteAsync((ulong)offset, data, cancellationToken: ct), cancellationToken);

    public async Task ZeroAsync(long offset, Memory<byte> scratch, CancellationToken cancellationToken)
    {
        if (!_noWriteZeroes)
        {
            try
            {
                // Holes allowed: the target stays sparse where it can.
                await connection.RunAsync((client, ct) => client.WriteZeroesAsync((ulong)offset, (ulong)scratch.Length, NbdZeroOptions.None, ct), cancellationToken);
                return;
            }
            catch (NotSupportedException)
            {
                _noWriteZeroes = true;
            }
        }

        scratch.Span.Clear();
        await WriteAsync(offset, scratch, cancellationToken);
    }
}

/// <summary>
/// A local file sized to the disk (only fresh-target restores: zero chunks are never written). Writes whose buffer, offset
/// and length are aligned go through <paramref name="direct"/> (the same file opened with O_DIRECT) when there is one:
/// the bytes skip the page cache, whose copy and writeback cost the restoring process several CPU-seconds per GiB on a
/// virtio disk; the rest (a short last chunk) are buffered. The caller's fsync of <paramref name="handle"/> covers both.
/// </summary>
internal sealed class FileTarget(SafeFileHandle handle, SafeFileHandle? direct, string path) : IRestoreTarget
{
    private const int EInval = 22;
    private volatile bool _directRefused;

    public bool WantsAlignedBuffers => true;

    public Task ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) =>
        throw new NotSupportedException($"{path}: a new file is never read back");

    public Task WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (direct is not null && !_directRefused && IsAligned(offset, data))
        {
            try
            {
                RandomAccess.Write(direct, data.Span, offset);
                return Task.CompletedTask;
            }
            catch (IOException e) when (e.HResult == EInval)
            {
                // The filesystem opened the file for O_DIRECT but refuses the writes: buffered from now on.
                _directRefused = true;
            }
        }

        RandomAccess.Write(handle, data.Span, offset);
        return Task.CompletedTask;
    }

    private static unsafe bool IsAligned(long offset, ReadOnlyMemory<byte> data)
    {
        const int Mask = DirectIo.Alignment - 1;
        if ((offset & Mask) != 0 || (data.Length & Mask) != 0 || data.Length == 0)
        {
            return false;
        }

        using var pin = data.Pin();
        return ((nint)pin.Pointer & Mask) == 0;
    }

    public Task ZeroAsync(long offset, Memory<byte> scratch, CancellationToken cancellationToken) =>
        throw new NotSupportedException($"{path}: a new file already reads as zeroes");
}
