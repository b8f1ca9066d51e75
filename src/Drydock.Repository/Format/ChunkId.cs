using System.Buffers.Binary;

namespace Drydock.Repository.Format;

/// <summary>A 32-byte object id: SHA-256 of the plaintext, or HMAC-SHA-256 under the repository's id key when
/// encrypted. All 32 bytes zero is the reserved id of an all-zero chunk, which is never stored.</summary>
public readonly struct ChunkId : IEquatable<ChunkId>
{
    /// <summary>The id size in bytes.</summary>
    public const int Size = 32;

    private readonly ulong _a;
    private readonly ulong _b;
    private readonly ulong _c;
    private readonly ulong _d;

    /// <summary>Reads an id from 32 bytes.</summary>
    /// <param name="bytes">Exactly 32 bytes.</param>
    public ChunkId(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Size)
        {
            throw new ArgumentException("A chunk id is 32 bytes.", nameof(bytes));
        }

        _a = BinaryPrimitives.ReadUInt64BigEndian(bytes);
        _b = BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]);
        _c = BinaryPrimitives.ReadUInt64BigEndian(bytes[16..]);
        _d = BinaryPrimitives.ReadUInt64BigEndian(bytes[24..]);
    }

    /// <summary>The reserved id of an all-zero chunk.</summary>
    public static ChunkId Zero => default;

    /// <summary>Whether this is the all-zero chunk.</summary>
    public bool IsZero => (_a | _b | _c | _d) == 0;

    /// <summary>Writes the 32 bytes.</summary>
    /// <param name="destination">At least 32 bytes.</param>
    public void WriteTo(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, _a);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], _b);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], _c);
        BinaryPrimitives.WriteUInt64BigEndian(destination[24..], _d);
    }

    /// <summary>The 32 bytes.</summary>
    /// <returns>A new array.</returns>
    public byte[] ToArray()
    {
        var bytes = new byte[Size];
        WriteTo(bytes);
        return bytes;
    }

    /// <summary>Parses 64 lowercase hex digits.</summary>
    /// <param name="hex">The text.</param>
    /// <param name="id">The id.</param>
    /// <returns>Whether it parsed.</returns>
    public static bool TryParse(string hex, out ChunkId id)
    {
        id = default;
        if (hex.Length != Size * 2)
        {
            return false;
        }

        Span<byte> bytes = stackalloc byte[Size];
        if (Convert.FromHexString(hex, bytes, out _, out var written) != System.Buffers.OperationStatus.Done || written != Size)
        {
            return false;
        }

        id = new ChunkId(bytes);
        return true;
    }

    /// <summary>Parses 64 hex digits or throws <see cref="FormatException"/>.</summary>
    /// <param name="hex">The text.</param>
    /// <returns>The id.</returns>
    public static ChunkId Parse(string hex) => TryParse(hex, out var id) ? id : throw new FormatException($"'{hex}' is not a chunk id.");

    /// <inheritdoc />
    public bool Equals(ChunkId other) => _a == other._a && _b == other._b && _c == other._c && _d == other._d;

    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is ChunkId other && Equals(other);

    /// <inheritdoc />
    public override int GetHashCode() => (int)_a ^ (int)(_a >> 32);

    /// <summary>64 lowercase hex digits.</summary>
    /// <returns>The text.</returns>
    public override string ToString()
    {
        Span<byte> bytes = stackalloc byte[Size];
        WriteTo(bytes);
        return Convert.ToHexStringLower(bytes);
    }

    /// <summary>Equality.</summary>
    public static bool operator ==(ChunkId left, ChunkId right) => left.Equals(right);

    /// <summary>Inequality.</summary>
    public static bool operator !=(ChunkId left, ChunkId right) => !left.Equals(right);
}
