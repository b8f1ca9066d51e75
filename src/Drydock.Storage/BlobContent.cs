using System.Buffers;

namespace Drydock.Storage;

/// <summary>Bytes read from a store, held in a pooled buffer until disposed.</summary>
public sealed class BlobContent : IDisposable
{
    private byte[]? _buffer;
    private readonly int _length;

    /// <summary>Takes ownership of a buffer rented from <see cref="ArrayPool{T}.Shared"/>.</summary>
    /// <param name="rented">The rented buffer.</param>
    /// <param name="length">How many leading bytes are the content.</param>
    /// <param name="properties">The object's properties.</param>
    public BlobContent(byte[] rented, int length, BlobProperties properties)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, rented.Length);
        _buffer = rented;
        _length = length;
        Properties = properties;
    }

    /// <summary>The object's properties at the time of the read.</summary>
    public BlobProperties Properties { get; }

    /// <summary>The bytes read.</summary>
    public ReadOnlyMemory<byte> Memory => new(_buffer ?? throw new ObjectDisposedException(nameof(BlobContent)), 0, _length);

    /// <summary>The bytes read.</summary>
    public ReadOnlySpan<byte> Span => Memory.Span;

    /// <summary>The number of bytes read.</summary>
    public int Length => _length;

    /// <summary>Copies the bytes out into a new array.</summary>
    /// <returns>A copy of the content.</returns>
    public byte[] ToArray() => Memory.ToArray();

    /// <summary>Rents a buffer and copies <paramref name="source"/> into it.</summary>
    /// <param name="source">The bytes.</param>
    /// <param name="properties">The object's properties.</param>
    /// <returns>The content.</returns>
    public static BlobContent Copy(ReadOnlySpan<byte> source, BlobProperties properties)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(1, source.Length));
        source.CopyTo(buffer);
        return new BlobContent(buffer, source.Length, properties);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        var buffer = Interlocked.Exchange(ref _buffer, null);
        if (buffer is not null)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
