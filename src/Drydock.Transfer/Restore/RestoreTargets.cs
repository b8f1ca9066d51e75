using Drydock.Nbd.Client;
using Microsoft.Win32.SafeHandles;

namespace Drydock.Transfer.Restore;

/// <summary>Where a restore writes chunks (calls for disjoint ranges may run concurrently).</summary>
internal interface IRestoreTarget
{
    /// <summary>Reads the target's current bytes (changed-only restores).</summary>
    Task ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken);

    /// <summary>Writes a chunk.</summary>
    Task WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken);

    /// <summary>Makes a range read as zeroes; <paramref name="scratch"/> (the range's length) may be used as a zero buffer.</summary>
    Task ZeroAsync(long offset, Memory<byte> scratch, CancellationToken cancellationToken);
}

/// <summary>An NBD export.</summary>
internal sealed class NbdTarget(NbdClient client) : IRestoreTarget
{
    private volatile bool _noWriteZeroes;

    public Task ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) =>
        client.ReadAsync((ulong)offset, buffer, cancellationToken);

    public Task WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        client.WriteAsync((ulong)offset, data, cancellationToken: cancellationToken);

    public async Task ZeroAsync(long offset, Memory<byte> scratch, CancellationToken cancellationToken)
    {
        if (!_noWriteZeroes)
        {
            try
            {
                // Holes allowed: the target stays sparse where it can.
                await client.WriteZeroesAsync((ulong)offset, (ulong)scratch.Length, NbdZeroOptions.None, cancellationToken);
                return;
            }
            catch (NotSupportedException)
            {
                _noWriteZeroes = true;
            }
        }

        scratch.Span.Clear();
        await client.WriteAsync((ulong)offset, scratch, cancellationToken: cancellationToken);
    }
}

/// <summary>A local file sized to the disk (only fresh-target restores: zero chunks are never written).</summary>
internal sealed class FileTarget(SafeFileHandle handle, string path) : IRestoreTarget
{
    public Task ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) =>
        throw new NotSupportedException($"{path}: a new file is never read back");

    public Task WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        RandomAccess.Write(handle, data.Span, offset);
        return Task.CompletedTask;
    }

    public Task ZeroAsync(long offset, Memory<byte> scratch, CancellationToken cancellationToken) =>
        throw new NotSupportedException($"{path}: a new file already reads as zeroes");
}
