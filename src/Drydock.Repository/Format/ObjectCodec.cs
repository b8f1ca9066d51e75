using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;
using Drydock.Repository.Compression;
using Drydock.Repository.Crypto;

namespace Drydock.Repository.Format;

/// <summary>
/// The object container of format version 1 (docs/FORMAT.md §Objects). Big-endian header of 28 bytes:
/// <code>
///  0  4  magic "DDOB"
///  4  1  container version (1)
///  5  1  object type (<see cref="ObjectType"/>)
///  6  1  compression (<see cref="CompressionAlgorithm"/>)
///  7  1  encryption (0 none, 1 AES-256-GCM)
///  8  4  plain length (bytes after decompression)
/// 12  4  payload length (bytes after the header, without the tag)
/// 16 12  nonce (random per object; zero when not encrypted)
/// 28  .  payload, then a 16-byte GCM tag when encrypted
/// </code>
/// AAD = <c>"drydock-object/v1\0"</c> || repository id (16 bytes, big-endian UUID) || the 28 header bytes ||
/// the object key (the 32-byte id of chunks and indexes; the UTF-8 object name of other objects). The object's
/// total length must be exactly header + payload (+ tag).
/// </summary>
public sealed class ObjectCodec
{
    /// <summary>The header size.</summary>
    public const int HeaderSize = 28;

    /// <summary>The GCM tag size.</summary>
    public const int TagSize = 16;

    private const uint Magic = 0x44444F42; // "DDOB"
    private const byte ContainerVersion = 1;

    private readonly byte[] _repositoryId;
    private readonly RepositoryKeys _keys;

    /// <summary>Creates the codec of one repository.</summary>
    /// <param name="repositoryId">The repository id.</param>
    /// <param name="keys">The derived keys.</param>
    /// <param name="encrypt">Whether objects are encrypted.</param>
    /// <param name="compression">The preferred compression (falls back to Brotli without libzstd).</param>
    /// <param name="level">The compression level.</param>
    public ObjectCodec(Guid repositoryId, RepositoryKeys keys, bool encrypt, CompressionAlgorithm compression, int level)
    {
        _repositoryId = repositoryId.ToByteArray(bigEndian: true);
        _keys = keys;
        Encrypted = encrypt;
        Compression = ChunkCompressor.Effective(compression);
        Level = level;
    }

    /// <summary>Whether objects are encrypted.</summary>
    public bool Encrypted { get; }

    /// <summary>The compression new objects get.</summary>
    public CompressionAlgorithm Compression { get; }

    /// <summary>The compression level.</summary>
    public int Level { get; }

    /// <summary>The keys.</summary>
    public RepositoryKeys Keys => _keys;

    /// <summary>The largest sealed size of <paramref name="plainLength"/> bytes.</summary>
    /// <param name="plainLength">The plaintext length.</param>
    /// <returns>The buffer size sealing needs.</returns>
    public static int MaxSealedLength(int plainLength) => HeaderSize + plainLength + TagSize;

    /// <summary>The id of a plaintext in this repository (keyed when encrypted).</summary>
    /// <param name="plaintext">The bytes.</param>
    /// <returns>The id.</returns>
    public ChunkId ComputeId(ReadOnlySpan<byte> plaintext) => _keys.ComputeId(plaintext, Encrypted);

    /// <summary>Compresses (when it pays) and encrypts (when configured) into <paramref name="destination"/>.</summary>
    /// <param name="type">The object type.</param>
    /// <param name="objectKey">The id bytes or the UTF-8 name, bound into the AAD.</param>
    /// <param name="plaintext">The content.</param>
    /// <param name="destination">At least <see cref="MaxSealedLength"/> bytes.</param>
    /// <param name="compressionOverride">Forces an algorithm (tests, config objects); null for the configured one.</param>
    /// <returns>The sealed length.</returns>
    public int Seal(ObjectType type, ReadOnlySpan<byte> objectKey, ReadOnlySpan<byte> plaintext, Span<byte> destination, CompressionAlgorithm? compressionOverride = null)
    {
        var algorithm = compressionOverride ?? Compression;
        var payload = destination[HeaderSize..];
        int payloadLength;
        var scratch = ArrayPool<byte>.Shared.Rent(ChunkCompressor.MaxCompressedLength(plaintext.Length));
        try
        {
            ReadOnlySpan<byte> body;
            if (algorithm != CompressionAlgorithm.None && !LooksIncompressible(algorithm, plaintext, scratch)
                && ChunkCompressor.TryCompress(algorithm, Level, plaintext, scratch, out var compressed))
            {
                body = scratch.AsSpan(0, compressed);
            }
            else
            {
                algorithm = CompressionAlgorithm.None;
                body = plaintext;
            }

            payloadLength = body.Length;
            var header = destination[..HeaderSize];
            BinaryPrimitives.WriteUInt32BigEndian(header, Magic);
            header[4] = ContainerVersion;
            header[5] = (byte)type;
            header[6] = (byte)algorithm;
            header[7] = Encrypted ? (byte)1 : (byte)0;
            BinaryPrimitives.WriteUInt32BigEndian(header[8..], checked((uint)plaintext.Length));
            BinaryPrimitives.WriteUInt32BigEndian(header[12..], checked((uint)payloadLength));
            var nonce = header.Slice(16, 12);
            if (Encrypted)
            {
                RandomNumberGenerator.Fill(nonce);
                using var aes = new AesGcm(_keys.EncryptionKey, TagSize);
                var aad = Aad(header, objectKey);
                aes.Encrypt(nonce, body, payload[..payloadLength], payload.Slice(payloadLength, TagSize), aad);
                return HeaderSize + payloadLength + TagSize;
            }

            nonce.Clear();
            body.CopyTo(payload);
            return HeaderSize + payloadLength;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratch);
        }
    }

    /// <summary>Seals into a new array.</summary>
    /// <param name="type">The object type.</param>
    /// <param name="objectKey">The AAD object key.</param>
    /// <param name="plaintext">The content.</param>
    /// <param name="compressionOverride">Forces an algorithm.</param>
    /// <returns>The sealed object.</returns>
    public byte[] Seal(ObjectType type, ReadOnlySpan<byte> objectKey, ReadOnlySpan<byte> plaintext, CompressionAlgorithm? compressionOverride = null)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(MaxSealedLength(plaintext.Length));
        try
        {
            var n = Seal(type, objectKey, plaintext, buffer, compressionOverride);
            return buffer.AsSpan(0, n).ToArray();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Checks an object's header and returns its plain length, before anything is allocated for it.</summary>
    /// <param name="expected">The type the caller expects (a different one is type confusion).</param>
    /// <param name="sealedObject">The whole object.</param>
    /// <param name="maxPlainLength">The cap on the plain length.</param>
    /// <param name="where">Where, for errors.</param>
    /// <returns>The plain length.</returns>
    public int ReadPlainLength(ObjectType expected, ReadOnlySpan<byte> sealedObject, int maxPlainLength, RepositoryLocationInfo where)
    {
        if (sealedObject.Length == 0)
        {
            throw new ObjectCorruptException("empty object", where);
        }

        if (sealedObject.Length < HeaderSize)
        {
            throw new ObjectCorruptException($"truncated: {sealedObject.Length} bytes, shorter than the {HeaderSize}-byte header", where);
        }

        if (BinaryPrimitives.ReadUInt32BigEndian(sealedObject) != Magic)
        {
            throw new ObjectCorruptException("bad magic (not a Drydock object)", where);
        }

        if (sealedObject[4] != ContainerVersion)
        {
            throw new ObjectCorruptException($"container version {sealedObject[4]} is not supported (this Drydock reads version {ContainerVersion})", where);
        }

        if (sealedObject[5] != (byte)expected)
        {
            throw new ObjectCorruptException($"type confusion: expected a {expected} object, found type {sealedObject[5]}", where);
        }

        if (sealedObject[6] > (byte)CompressionAlgorithm.Deflate)
        {
            throw new ObjectCorruptException($"unknown compression {sealedObject[6]}", where);
        }

        var encrypted = sealedObject[7] switch
        {
            0 => false,
            1 => true,
            _ => throw new ObjectCorruptException($"unknown encryption {sealedObject[7]}", where),
        };

        // An encrypted repository never accepts plaintext objects (and the reverse): a downgrade is tampering.
        if (encrypted != Encrypted && expected != ObjectType.Config)
        {
            throw new ObjectCorruptException(encrypted ? "object is encrypted but the repository is not" : "object is not encrypted but the repository is", where);
        }

        var plainLength = BinaryPrimitives.ReadUInt32BigEndian(sealedObject[8..]);
        var payloadLength = BinaryPrimitives.ReadUInt32BigEndian(sealedObject[12..]);
        if (plainLength > (uint)maxPlainLength)
        {
            throw new ObjectTooLargeException(plainLength, maxPlainLength, where);
        }

        if (payloadLength > plainLength)
        {
            throw new ObjectCorruptException($"payload of {payloadLength} bytes is larger than the plain length {plainLength}", where);
        }

        var expectedTotal = HeaderSize + (long)payloadLength + (encrypted ? TagSize : 0);
        if (sealedObject.Length != expectedTotal)
        {
            throw new ObjectCorruptException(
                sealedObject.Length < expectedTotal
                    ? $"truncated: {sealedObject.Length} bytes, header says {expectedTotal}"
                    : $"{sealedObject.Length - expectedTotal} bytes of trailing garbage",
                where);
        }

        return (int)plainLength;
    }

    /// <summary>Authenticates, decrypts and decompresses an object checked by <see cref="ReadPlainLength"/>.</summary>
    /// <param name="sealedObject">The whole object.</param>
    /// <param name="objectKey">The AAD object key.</param>
    /// <param name="destination">Exactly the plain length.</param>
    /// <param name="where">Where, for errors.</param>
    public void Open(ReadOnlySpan<byte> sealedObject, ReadOnlySpan<byte> objectKey, Span<byte> destination, RepositoryLocationInfo where)
    {
        var header = sealedObject[..HeaderSize];
        var algorithm = (CompressionAlgorithm)header[6];
        var payloadLength = (int)BinaryPrimitives.ReadUInt32BigEndian(header[12..]);
        var payload = sealedObject.Slice(HeaderSize, payloadLength);
        if (header[7] == 1 && algorithm == CompressionAlgorithm.None && payloadLength == destination.Length)
        {
            // Stored uncompressed (incompressible chunks): decrypt straight into the caller's buffer, no copy. On a
            // tag mismatch AesGcm clears what it wrote, and the caller gets the exception, never the bytes.
            using var aes = new AesGcm(_keys.EncryptionKey, TagSize);
            try
            {
                aes.Decrypt(header.Slice(16, 12), payload, sealedObject.Slice(HeaderSize + payloadLength, TagSize), destination, Aad(header, objectKey));
            }
            catch (AuthenticationTagMismatchException e)
            {
                throw new ObjectTamperedException(where, e);
            }

            return;
        }

        if (header[7] == 1)
        {
            var plain = ArrayPool<byte>.Shared.Rent(Math.Max(1, payloadLength));
            try
            {
                using var aes = new AesGcm(_keys.EncryptionKey, TagSize);
                try
                {
                    aes.Decrypt(header.Slice(16, 12), payload, sealedObject.Slice(HeaderSize + payloadLength, TagSize), plain.AsSpan(0, payloadLength), Aad(header, objectKey));
                }
                catch (AuthenticationTagMismatchException e)
                {
                    throw new ObjectTamperedException(where, e);
                }

                Decompress(algorithm, plain.AsSpan(0, payloadLength), destination, where);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(plain);
            }

            return;
        }

        Decompress(algorithm, payload, destination, where);
    }

    /// <summary>Checks, opens and returns a small object as a new array.</summary>
    /// <param name="expected">The expected type.</param>
    /// <param name="sealedObject">The whole object.</param>
    /// <param name="objectKey">The AAD object key.</param>
    /// <param name="maxPlainLength">The cap.</param>
    /// <param name="where">Where, for errors.</param>
    /// <returns>The plaintext.</returns>
    public byte[] Open(ObjectType expected, ReadOnlySpan<byte> sealedObject, ReadOnlySpan<byte> objectKey, int maxPlainLength, RepositoryLocationInfo where)
    {
        var length = ReadPlainLength(expected, sealedObject, maxPlainLength, where);
        var plain = new byte[length];
        Open(sealedObject, objectKey, plain, where);
        return plain;
    }

    /// <summary>Compresses three 16 KiB samples (start, middle, end) of a large plaintext; if none shrinks by 3 %, the
    /// whole is treated as incompressible (random data, already-compressed or encrypted files) and stored raw
    /// without spending a full compression pass on it.</summary>
    private bool LooksIncompressible(CompressionAlgorithm algorithm, ReadOnlySpan<byte> plaintext, Span<byte> scratch)
    {
        const int Sample = 16 * 1024;
        if (plaintext.Length < 16 * Sample)
        {
            return false;
        }

        foreach (var start in (ReadOnlySpan<int>)[0, (plaintext.Length / 2) - (Sample / 2), plaintext.Length - Sample])
        {
            if (ChunkCompressor.TryCompress(algorithm, Level, plaintext.Slice(start, Sample), scratch, out var written) && written < Sample * 97 / 100)
            {
                return false;
            }
        }

        return true;
    }

    private static void Decompress(CompressionAlgorithm algorithm, ReadOnlySpan<byte> payload, Span<byte> destination, RepositoryLocationInfo where)
    {
        var error = ChunkCompressor.Decompress(algorithm, payload, destination);
        if (error is not null)
        {
            throw new ObjectCorruptException("decompression failed: " + error, where);
        }
    }

    private byte[] Aad(ReadOnlySpan<byte> header, ReadOnlySpan<byte> objectKey)
    {
        var prefix = "drydock-object/v1\0"u8;
        var aad = new byte[prefix.Length + 16 + HeaderSize + objectKey.Length];
        prefix.CopyTo(aad);
        _repositoryId.CopyTo(aad, prefix.Length);
        header[..HeaderSize].CopyTo(aad.AsSpan(prefix.Length + 16));
        objectKey.CopyTo(aad.AsSpan(prefix.Length + 16 + HeaderSize));
        return aad;
    }
}
