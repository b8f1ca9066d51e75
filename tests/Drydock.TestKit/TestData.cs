using System.Buffers.Binary;

namespace Drydock.TestKit;

/// <summary>
/// Deterministic, incompressible test data addressed by position: the byte at offset <c>p</c> of the stream
/// for <c>seed</c> is always the same, so a test can check any range it reads without keeping a copy.
/// Each 8-byte word is the SplitMix64 finaliser of (seed, word index), little-endian. Fast: a few GB/s.
/// </summary>
public static class TestData
{
    /// <summary>Fills <paramref name="buffer"/> with the stream for <paramref name="seed"/> starting at <paramref name="offset"/>.</summary>
    public static void Fill(Span<byte> buffer, long offset, ulong seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        var position = offset;
        var span = buffer;

        // Head: bytes before the first 8-byte boundary.
        while (span.Length > 0 && (position & 7) != 0)
        {
            span[0] = ByteAt(position, seed);
            span = span[1..];
            position++;
        }

        var word = (ulong)position >> 3;
        while (span.Length >= 8)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(span, Mix(seed, word));
            span = span[8..];
            word++;
            position += 8;
        }

        for (var i = 0; i < span.Length; i++)
        {
            span[i] = ByteAt(position + i, seed);
        }
    }

    /// <summary>The bytes of the stream for <paramref name="seed"/> in [<paramref name="offset"/>, +<paramref name="length"/>).</summary>
    public static byte[] Create(long offset, int length, ulong seed)
    {
        var bytes = new byte[length];
        Fill(bytes, offset, seed);
        return bytes;
    }

    /// <summary>The byte at <paramref name="position"/> of the stream for <paramref name="seed"/>.</summary>
    public static byte ByteAt(long position, ulong seed) =>
        (byte)(Mix(seed, (ulong)position >> 3) >> (int)((position & 7) * 8));

    private static ulong Mix(ulong seed, ulong index)
    {
        var z = seed + ((index + 1) * 0x9E3779B97F4A7C15UL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
