using System.Buffers;
using System.IO.Compression;

namespace Drydock.Repository.Compression;

/// <summary>Compresses and decompresses object payloads with the algorithm recorded per object.</summary>
public static class ChunkCompressor
{
    /// <summary>Whether zstd (libzstd.so.1) is usable here; when it is not, new objects use Brotli.</summary>
    public static bool ZstdAvailable => Zstd.IsAvailable;

    /// <summary>The algorithm new objects get when the configuration asks for <paramref name="preferred"/>.</summary>
    /// <param name="preferred">The configured algorithm.</param>
    /// <returns>The configured algorithm, or Brotli if it is zstd and zstd is absent.</returns>
    public static CompressionAlgorithm Effective(CompressionAlgorithm preferred)
        => preferred == CompressionAlgorithm.Zstd && !Zstd.IsAvailable ? CompressionAlgorithm.Brotli : preferred;

    /// <summary>A destination size always large enough for <see cref="TryCompress"/> to decide.</summary>
    /// <param name="length">The input length.</param>
    /// <returns>The buffer size to rent.</returns>
    public static int MaxCompressedLength(int length) => length + (length >> 7) + 1024;

    /// <summary>Compresses; reports <see langword="false"/> when the output would not be smaller than the input.</summary>
    /// <param name="algorithm">The algorithm (not None).</param>
    /// <param name="level">The level (zstd 1..19, Brotli quality 0..11; clamped).</param>
    /// <param name="source">The input.</param>
    /// <param name="destination">At least <see cref="MaxCompressedLength"/> bytes.</param>
    /// <param name="written">The compressed size.</param>
    /// <returns>Whether compression paid off.</returns>
    public static bool TryCompress(CompressionAlgorithm algorithm, int level, ReadOnlySpan<byte> source, Span<byte> destination, out int written)
    {
        written = 0;
        var limit = destination[..Math.Min(destination.Length, Math.Max(0, source.Length - 1))];
        switch (algorithm)
        {
            case CompressionAlgorithm.Zstd:
                written = Zstd.Compress(source, limit, Math.Clamp(level, -7, 19));
                return written > 0;
            case CompressionAlgorithm.Brotli:
                return BrotliEncoder.TryCompress(source, limit, out written, Math.Clamp(level, 0, 11), 22) && written > 0;
            case CompressionAlgorithm.Deflate:
                throw new NotSupportedException("Deflate is read-only in format version 1.");
            case CompressionAlgorithm.None:
            default:
                return false;
        }
    }

    /// <summary>Decompresses exactly <paramref name="destination"/>.Length bytes.</summary>
    /// <param name="algorithm">The recorded algorithm.</param>
    /// <param name="source">The payload.</param>
    /// <param name="destination">Exactly the recorded plain length.</param>
    /// <returns><see langword="null"/> on success, else why it failed (including output longer or shorter than expected).</returns>
    public static string? Decompress(CompressionAlgorithm algorithm, ReadOnlySpan<byte> source, Span<byte> destination)
    {
        switch (algorithm)
        {
            case CompressionAlgorithm.None:
                if (source.Length != destination.Length)
                {
                    return $"stored payload is {source.Length} bytes, header says {destination.Length}";
                }

                source.CopyTo(destination);
                return null;
            case CompressionAlgorithm.Zstd:
            {
                if (!Zstd.IsAvailable)
                {
                    return "object is zstd-compressed and libzstd.so.1 is not available";
                }

                var (n, error) = Zstd.Decompress(source, destination);
                if (error is not null)
                {
                    // dstSize_tooSmall is how zstd reports output over the declared size.
                    return $"zstd: {error}";
                }

                return n == destination.Length ? null : $"zstd produced {n} bytes, header says {destination.Length}";
            }

            case CompressionAlgorithm.Brotli:
            {
                using var decoder = new BrotliDecoder();
                var status = decoder.Decompress(source, destination, out var consumed, out var n);
                return status switch
                {
                    OperationStatus.Done when n == destination.Length && consumed == source.Length => null,
                    OperationStatus.DestinationTooSmall => $"brotli output exceeds the declared {destination.Length} bytes",
                    OperationStatus.Done => $"brotli produced {n} bytes from {consumed} of {source.Length}, header says {destination.Length}",
                    _ => $"brotli: {status}",
                };
            }

            case CompressionAlgorithm.Deflate:
            {
                using var input = new MemoryStream(source.ToArray(), writable: false);
                using var inflater = new DeflateStream(input, CompressionMode.Decompress);
                var total = 0;
                while (total < destination.Length)
                {
                    var n = inflater.Read(destination[total..]);
                    if (n == 0)
                    {
                        break;
                    }

                    total += n;
                }

                Span<byte> probe = stackalloc byte[1];
                if (inflater.Read(probe) != 0)
                {
                    return $"deflate output exceeds the declared {destination.Length} bytes";
                }

                return total == destination.Length ? null : $"deflate produced {total} bytes, header says {destination.Length}";
            }

            default:
                return $"unknown compression algorithm {(byte)algorithm}";
        }
    }
}
