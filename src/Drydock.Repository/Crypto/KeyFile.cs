using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Drydock.Repository.Format;

namespace Drydock.Repository.Crypto;

/// <summary>
/// A passphrase-wrapped master key, stored as <c>keys/&lt;keyId&gt;</c> (JSON, see docs/FORMAT.md §Key file):
/// KEK = PBKDF2-HMAC-SHA-256(passphrase UTF-8, 32-byte random salt, iterations) → 32 bytes; the 32-byte master
/// key is sealed with AES-256-GCM under the KEK, a random 96-bit nonce, and AAD
/// <c>"drydock-key/v1\0" || keyId || "\0" || repositoryId</c>.
/// </summary>
public static class KeyFile
{
    /// <summary>The iteration count new key files get (OWASP's 2023 figure for PBKDF2-HMAC-SHA-256).</summary>
    public const int DefaultIterations = 600_000;

    /// <summary>The fewest iterations a key file may ask for.</summary>
    public const int MinIterations = 1_000;

    /// <summary>The most iterations a key file may ask for (a forged file must not hang the reader).</summary>
    public const int MaxIterations = 50_000_000;

    /// <summary>The largest key file read.</summary>
    public const int MaxLength = 16 * 1024;

    /// <summary>Creates a new random master key and its key file.</summary>
    /// <param name="passphrase">The passphrase.</param>
    /// <param name="repositoryId">The repository the key belongs to.</param>
    /// <param name="iterations">The PBKDF2 iteration count.</param>
    /// <param name="createdAt">The creation time.</param>
    /// <returns>The key file document and the master key (the caller zeroes it).</returns>
    public static (KeyFileDocument Document, byte[] MasterKey) Create(string passphrase, Guid repositoryId, int iterations, DateTimeOffset createdAt)
    {
        ArgumentException.ThrowIfNullOrEmpty(passphrase);
        ArgumentOutOfRangeException.ThrowIfLessThan(iterations, MinIterations);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(iterations, MaxIterations);
        var master = RandomNumberGenerator.GetBytes(32);
        var salt = RandomNumberGenerator.GetBytes(32);
        var nonce = RandomNumberGenerator.GetBytes(12);
        var keyId = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
        var kek = DeriveKek(passphrase, salt, iterations);
        var ciphertext = new byte[32];
        var tag = new byte[16];
        try
        {
            using var aes = new AesGcm(kek, 16);
            aes.Encrypt(nonce, master, ciphertext, tag, Aad(keyId, repositoryId));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(kek);
        }

        var document = new KeyFileDocument
        {
            Format = "drydock-key",
            Version = 1,
            KeyId = keyId,
            RepositoryId = repositoryId,
            CreatedAt = createdAt,
            Kdf = new KeyFileKdf { Algorithm = "PBKDF2-HMAC-SHA256", Iterations = iterations, Salt = salt },
            Wrap = new KeyFileWrap { Algorithm = "AES-256-GCM", Nonce = nonce, Ciphertext = ciphertext, Tag = tag },
        };
        return (document, master);
    }

    /// <summary>Serialises a key file.</summary>
    /// <param name="document">The document.</param>
    /// <returns>UTF-8 JSON.</returns>
    public static byte[] Serialize(KeyFileDocument document) => JsonSerializer.SerializeToUtf8Bytes(document, RepositoryJsonContext.Default.KeyFileDocument);

    /// <summary>Parses a key file strictly.</summary>
    /// <param name="bytes">The file.</param>
    /// <param name="name">The object name, for errors.</param>
    /// <returns>The document.</returns>
    public static KeyFileDocument Parse(ReadOnlySpan<byte> bytes, string name)
    {
        KeyFileDocument? document;
        try
        {
            document = JsonSerializer.Deserialize(bytes, RepositoryJsonContext.Default.KeyFileDocument);
        }
        catch (JsonException e)
        {
            throw new RepositoryFormatException($"Key file {name} is malformed: {e.Message}", e);
        }

        if (document is null || document.Format != "drydock-key")
        {
            throw new RepositoryFormatException($"{name} is not a Drydock key file");
        }

        if (document.Version != 1)
        {
            throw new RepositoryFormatException($"Key file {name} has version {document.Version}; this Drydock reads version 1");
        }

        if (document.Kdf.Algorithm != "PBKDF2-HMAC-SHA256" || document.Kdf.Iterations is < MinIterations or > MaxIterations || document.Kdf.Salt.Length < 16
            || document.Wrap.Algorithm != "AES-256-GCM" || document.Wrap.Nonce.Length != 12 || document.Wrap.Ciphertext.Length != 32 || document.Wrap.Tag.Length != 16)
        {
            throw new RepositoryFormatException($"Key file {name} names an unsupported KDF or wrapping, or has bad parameters");
        }

        return document;
    }

    /// <summary>Unwraps the master key.</summary>
    /// <param name="document">The key file.</param>
    /// <param name="passphrase">The passphrase.</param>
    /// <returns>The 32-byte master key.</returns>
    /// <exception cref="WrongKeyException">The passphrase does not open this key file.</exception>
    public static byte[] Unlock(KeyFileDocument document, string passphrase)
    {
        var kek = DeriveKek(passphrase, document.Kdf.Salt, document.Kdf.Iterations);
        var master = new byte[32];
        try
        {
            using var aes = new AesGcm(kek, 16);
            aes.Decrypt(document.Wrap.Nonce, document.Wrap.Ciphertext, document.Wrap.Tag, master, Aad(document.KeyId, document.RepositoryId));
            return master;
        }
        catch (AuthenticationTagMismatchException e)
        {
            throw new WrongKeyException($"The passphrase does not unlock key {document.KeyId} of repository {document.RepositoryId}", e);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(kek);
        }
    }

    private static byte[] DeriveKek(string passphrase, byte[] salt, int iterations)
    {
        var bytes = Encoding.UTF8.GetBytes(passphrase);
        try
        {
            return Rfc2898DeriveBytes.Pbkdf2(bytes, salt, iterations, HashAlgorithmName.SHA256, 32);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(bytes);
        }
    }

    private static byte[] Aad(string keyId, Guid repositoryId)
        => Encoding.UTF8.GetBytes("drydock-key/v1\0" + keyId + "\0" + repositoryId.ToString("D"));
}
