using System.Security.Cryptography;
using System.Text;
using Drydock.Repository.Format;

namespace Drydock.Repository.Crypto;

/// <summary>
/// The keys derived from a repository's 256-bit master key with HKDF-SHA-256 (RFC 5869), salt = the repository id
/// (16 bytes, RFC 4122 byte order), one <c>info</c> string per purpose:
/// <c>"drydock/v1/object-encryption"</c> (AES-256-GCM), <c>"drydock/v1/chunk-id"</c> (HMAC-SHA-256 ids) and
/// <c>"drydock/v1/signing"</c> (HMAC-SHA-256 signatures of manifests and other documents).
/// </summary>
public sealed class RepositoryKeys : IDisposable
{
    private readonly byte[] _encryption;
    private readonly byte[] _id;
    private readonly byte[] _signing;

    private RepositoryKeys(byte[] encryption, byte[] id, byte[] signing, string keyId)
    {
        _encryption = encryption;
        _id = id;
        _signing = signing;
        KeyId = keyId;
    }

    /// <summary>The id of the key file the master key came from.</summary>
    public string KeyId { get; }

    /// <summary>The AES-256-GCM key for objects.</summary>
    internal ReadOnlySpan<byte> EncryptionKey => _encryption;

    /// <summary>Derives the purpose keys.</summary>
    /// <param name="masterKey">The 32-byte master key.</param>
    /// <param name="repositoryId">The repository id (the HKDF salt).</param>
    /// <param name="keyId">The key file id.</param>
    /// <returns>The keys.</returns>
    public static RepositoryKeys Derive(ReadOnlySpan<byte> masterKey, Guid repositoryId, string keyId)
    {
        if (masterKey.Length != 32)
        {
            throw new ArgumentException("The master key is 32 bytes.", nameof(masterKey));
        }

        var salt = repositoryId.ToByteArray(bigEndian: true);
        return new RepositoryKeys(
            Hkdf(masterKey, salt, "drydock/v1/object-encryption"),
            Hkdf(masterKey, salt, "drydock/v1/chunk-id"),
            Hkdf(masterKey, salt, "drydock/v1/signing"),
            keyId);
    }

    /// <summary>The id of a plaintext: HMAC-SHA-256 under the id key when <paramref name="keyed"/>, else SHA-256.</summary>
    /// <param name="plaintext">The uncompressed bytes.</param>
    /// <param name="keyed">Whether ids are keyed (encrypted repositories).</param>
    /// <returns>The id.</returns>
    public ChunkId ComputeId(ReadOnlySpan<byte> plaintext, bool keyed)
    {
        Span<byte> digest = stackalloc byte[32];
        if (keyed)
        {
            HMACSHA256.HashData(_id, plaintext, digest);
        }
        else
        {
            SHA256.HashData(plaintext, digest);
        }

        var id = new ChunkId(digest);

        // The all-zero id is reserved; a real digest of all zero bits has probability 2^-256.
        return id.IsZero ? throw new CryptographicException("digest collided with the reserved zero id") : id;
    }

    /// <summary>HMAC-SHA-256 over <c>"drydock-signed/v1\0" || type || "\0" || payload</c>.</summary>
    /// <param name="documentType">The document type (binds the signature to it: no type confusion).</param>
    /// <param name="payload">The exact payload bytes.</param>
    /// <returns>The 32-byte signature.</returns>
    public byte[] Sign(string documentType, ReadOnlySpan<byte> payload)
    {
        using var hmac = IncrementalHash.CreateHMAC(HashAlgorithmName.SHA256, _signing);
        hmac.AppendData("drydock-signed/v1\0"u8);
        hmac.AppendData(Encoding.UTF8.GetBytes(documentType));
        hmac.AppendData("\0"u8);
        hmac.AppendData(payload);
        return hmac.GetHashAndReset();
    }

    /// <summary>Checks a signature in constant time.</summary>
    /// <param name="documentType">The document type.</param>
    /// <param name="payload">The payload bytes.</param>
    /// <param name="signature">The signature to check.</param>
    /// <returns>Whether it matches.</returns>
    public bool Verify(string documentType, ReadOnlySpan<byte> payload, ReadOnlySpan<byte> signature)
        => CryptographicOperations.FixedTimeEquals(Sign(documentType, payload), signature);

    /// <inheritdoc />
    public void Dispose()
    {
        CryptographicOperations.ZeroMemory(_encryption);
        CryptographicOperations.ZeroMemory(_id);
        CryptographicOperations.ZeroMemory(_signing);
    }

    private static byte[] Hkdf(ReadOnlySpan<byte> master, byte[] salt, string info)
    {
        var output = new byte[32];
        HKDF.DeriveKey(HashAlgorithmName.SHA256, master, output, salt, Encoding.ASCII.GetBytes(info));
        return output;
    }
}
