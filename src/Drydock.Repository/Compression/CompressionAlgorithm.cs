namespace Drydock.Repository.Compression;

/// <summary>How an object's payload is compressed; the value is stored in every object header.</summary>
public enum CompressionAlgorithm : byte
{
    /// <summary>Stored as is (also used whenever compression would not make it smaller).</summary>
    None = 0,

    /// <summary>Zstandard (RFC 8878) frame, through libzstd.</summary>
    Zstd = 1,

    /// <summary>Brotli (RFC 7932) stream: the fallback when libzstd is absent.</summary>
    Brotli = 2,

    /// <summary>Raw Deflate (RFC 1951): readable, never written by this version.</summary>
    Deflate = 3,
}
