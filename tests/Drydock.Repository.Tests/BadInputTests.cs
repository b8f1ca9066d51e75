using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Drydock.Repository.Compression;
using Drydock.Repository.Crypto;
using Drydock.Repository.Format;
using Drydock.Storage;
using Xunit;
using static Drydock.Repository.Tests.TestRepo;

namespace Drydock.Repository.Tests;

/// <summary>"Bad input a repository must reject" (FAULTS.md) and F32/F33/F34.</summary>
public sealed class BadInputTests
{
    private static PointRef P(long sequence, Guid? domain = null) => new("default", domain ?? DomainA, sequence);

    private static async Task<(TestRepo Repo, byte[] Image, ChunkId Id, long Entry)> WithPointAsync(bool encrypt = true)
    {
        var t = await CreateAsync(encrypt);
        var image = Image(8, 11);
        await t.BackupFullAsync(DomainA, image);
        var point = await t.Repository.OpenPointAsync(P(1), Ct);
        var disk = await point.OpenDiskAsync("vda", Ct);

        // Entry 1 is random data: unique, stored once.
        return (t, image, disk.IdOf(1), 1);
    }

    [Fact]
    public async Task Missing_chunk_fails_the_restore_naming_point_disk_and_range_never_zeros()
    {
        // F33.
        var (t, _, id, entry) = await WithPointAsync();
        await using var _ = t;
        await t.Memory.DeleteAsync(ObjectNames.Chunk(id), null, Ct);
        var e = await Assert.ThrowsAsync<ChunkMissingException>(() => t.RestoreAsync(DomainA, 1));
        Assert.Equal(P(1), e.Point);
        Assert.Equal("vda", e.Disk);
        Assert.Equal(entry * ChunkSize, e.Offset);
        Assert.Equal(ChunkSize, e.Length);
        Assert.Contains("bytes 65536..131071", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_flipped_byte_in_an_encrypted_chunk_is_reported_as_tampering_with_the_range()
    {
        // F32, AEAD failure.
        var (t, _, id, entry) = await WithPointAsync();
        await using var _ = t;
        t.Memory.Tamper(ObjectNames.Chunk(id), b => { b[ObjectCodec.HeaderSize + 10] ^= 0x01; return b; });
        var e = await Assert.ThrowsAsync<ObjectTamperedException>(() => t.RestoreAsync(DomainA, 1));
        Assert.Equal(entry * ChunkSize, e.Offset);
        Assert.Contains("tampered", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_flipped_byte_in_a_plain_chunk_is_a_digest_mismatch()
    {
        var (t, _, id, _) = await WithPointAsync(encrypt: false);
        await using var _ = t;
        t.Memory.Tamper(ObjectNames.Chunk(id), b => { b[^1] ^= 0x80; return b; });
        var e = await Assert.ThrowsAsync<ObjectCorruptException>(() => t.RestoreAsync(DomainA, 1));
        Assert.Contains("digest mismatch", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0, "empty object")]
    [InlineData(10, "shorter than the 28-byte header")]
    [InlineData(-5, "truncated")]
    public async Task Truncated_and_empty_chunks_are_rejected(int keep, string expected)
    {
        var (t, _, id, _) = await WithPointAsync();
        await using var _ = t;
        t.Memory.Tamper(ObjectNames.Chunk(id), b => b.AsSpan(0, keep >= 0 ? keep : b.Length + keep).ToArray());
        var e = await Assert.ThrowsAsync<ObjectCorruptException>(() => t.RestoreAsync(DomainA, 1));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        Assert.Equal("vda", e.Disk);
    }

    [Fact]
    public async Task Trailing_garbage_after_an_object_is_rejected()
    {
        var (t, _, id, _) = await WithPointAsync();
        await using var _ = t;
        t.Memory.Tamper(ObjectNames.Chunk(id), b => [.. b, 1, 2, 3]);
        var e = await Assert.ThrowsAsync<ObjectCorruptException>(() => t.RestoreAsync(DomainA, 1));
        Assert.Contains("trailing garbage", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_index_stored_where_a_chunk_is_expected_is_type_confusion()
    {
        var (t, _, id, _) = await WithPointAsync();
        await using var _ = t;
        var indexName = t.Names(ObjectNames.IndexesPrefix).Single();
        using var index = await t.Memory.GetAsync(indexName, 1 << 20, Ct);
        var bytes = index.ToArray();
        t.Memory.Tamper(ObjectNames.Chunk(id), _ => bytes);
        var e = await Assert.ThrowsAsync<ObjectCorruptException>(() => t.RestoreAsync(DomainA, 1));
        Assert.Contains("type confusion", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_chunk_relabelled_as_another_type_fails_authentication_because_the_type_is_in_the_aad()
    {
        using var keys = RepositoryKeys.Derive(new byte[32], Guid.NewGuid(), "k");
        var codec = new ObjectCodec(Guid.NewGuid(), keys, encrypt: true, CompressionAlgorithm.Zstd, 1);
        var sealedObject = codec.Seal(ObjectType.Chunk, new byte[32], "some chunk data"u8);
        sealedObject[5] = (byte)ObjectType.Index;
        var length = codec.ReadPlainLength(ObjectType.Index, sealedObject, 1024, default);
        Assert.Throws<ObjectTamperedException>(() => codec.Open(sealedObject, new byte[32], new byte[length], default));
    }

    [Fact]
    public void A_tampered_uncompressed_chunk_fails_authentication_and_leaves_no_plaintext_in_the_destination()
    {
        // Stored-uncompressed objects are decrypted straight into the caller's buffer: a failed tag must not leave bytes there.
        using var keys = RepositoryKeys.Derive(new byte[32], Guid.NewGuid(), "k");
        var codec = new ObjectCodec(Guid.NewGuid(), keys, encrypt: true, CompressionAlgorithm.Zstd, 1);
        var plain = new byte[512 * 1024];
        new Random(6).NextBytes(plain);
        var sealedObject = codec.Seal(ObjectType.Chunk, new byte[32], plain);
        Assert.Equal((byte)CompressionAlgorithm.None, sealedObject[6]);
        var roundTrip = new byte[plain.Length];
        codec.Open(sealedObject, new byte[32], roundTrip, default);
        Assert.Equal(plain, roundTrip);

        sealedObject[ObjectCodec.HeaderSize + 1000] ^= 0x01;
        var destination = new byte[plain.Length];
        Assert.Throws<ObjectTamperedException>(() => codec.Open(sealedObject, new byte[32], destination, default));
        Assert.DoesNotContain(destination, b => b != 0);
    }

    [Fact]
    public async Task Another_repositorys_object_under_the_same_name_fails_authentication()
    {
        var (t, image, id, _) = await WithPointAsync();
        await using var _ = t;
        await using var other = await CreateAsync();
        await other.BackupFullAsync(DomainA, image);
        var foreignName = other.Names(ObjectNames.ChunksPrefix).First();
        using var foreign = await other.Memory.GetAsync(foreignName, 1 << 20, Ct);
        var bytes = foreign.ToArray();
        t.Memory.Tamper(ObjectNames.Chunk(id), _ => bytes);
        await Assert.ThrowsAsync<ObjectTamperedException>(() => t.RestoreAsync(DomainA, 1));
    }

    [Fact]
    public async Task A_wrong_passphrase_gives_a_clear_wrong_key_error()
    {
        await using var t = await CreateAsync();
        var e = await Assert.ThrowsAsync<WrongKeyException>(() => t.ReopenAsync("not the passphrase"));
        Assert.Contains("passphrase does not unlock", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Another_repositorys_key_file_is_refused_by_name()
    {
        await using var t = await CreateAsync();
        await using var other = await CreateAsync();
        using var key = await other.Memory.GetAsync(other.Names(ObjectNames.KeysPrefix).Single(), 1 << 16, Ct);
        var e = await Assert.ThrowsAsync<WrongKeyException>(() => t.ReopenAsync(keyFile: key.ToArray()));
        Assert.Contains("belongs to repository", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_edited_repository_configuration_is_refused()
    {
        await using var t = await CreateAsync(encrypt: true);
        // Downgrade attempt: rewrite the signed config payload to say "none".
        t.Memory.Tamper(ObjectNames.Config, b =>
        {
            var text = Encoding.UTF8.GetString(b.AsSpan(ObjectCodec.HeaderSize));
            var envelope = JsonSerializer.Deserialize(text, RepositoryJsonContext.Default.SignedEnvelope)!;
            var payload = Encoding.UTF8.GetString(envelope.Payload).Replace("aes-256-gcm", "none", StringComparison.Ordinal).Replace("hmac-sha256", "sha256", StringComparison.Ordinal);
            var edited = new SignedEnvelope { Format = envelope.Format, Version = 1, Type = envelope.Type, KeyId = envelope.KeyId, Algorithm = envelope.Algorithm, Payload = Encoding.UTF8.GetBytes(payload), Signature = envelope.Signature };
            var json = JsonSerializer.SerializeToUtf8Bytes(edited, RepositoryJsonContext.Default.SignedEnvelope);
            var header = b.AsSpan(0, ObjectCodec.HeaderSize).ToArray();
            BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(8), (uint)json.Length);
            BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(12), (uint)json.Length);
            return [.. header, .. json];
        });
        await Assert.ThrowsAsync<SignatureException>(() => t.ReopenAsync());
    }

    // ---- Manifests (F34) -------------------------------------------------------------------------------------

    /// <summary>Rewrites a manifest: <paramref name="editPayload"/> gets the payload JSON; it is re-signed unless told not to.</summary>
    private static async Task RewriteManifestAsync(TestRepo t, PointRef point, Func<string, string> editPayload, bool sign = true, Func<SignedEnvelope, SignedEnvelope>? editEnvelope = null, string? storeAs = null)
    {
        var name = ObjectNames.Manifest(point);
        using var content = await t.Memory.GetAsync(name, 1 << 24, Ct);
        var codec = t.Repository.Codec;
        var envelopeBytes = codec.Open(ObjectType.Manifest, content.Span, Encoding.UTF8.GetBytes(name), 1 << 24, default);
        var envelope = JsonSerializer.Deserialize(envelopeBytes, RepositoryJsonContext.Default.SignedEnvelope)!;
        var payload = Encoding.UTF8.GetBytes(editPayload(Encoding.UTF8.GetString(envelope.Payload)));
        var edited = new SignedEnvelope
        {
            Format = envelope.Format,
            Version = envelope.Version,
            Type = envelope.Type,
            KeyId = envelope.KeyId,
            Algorithm = envelope.Algorithm,
            Payload = payload,
            Signature = sign ? t.Repository.Keys.Sign("manifest", payload) : envelope.Signature,
        };
        edited = editEnvelope?.Invoke(edited) ?? edited;
        var target = storeAs ?? name;
        var sealedObject = codec.Seal(ObjectType.Manifest, Encoding.UTF8.GetBytes(target), JsonSerializer.SerializeToUtf8Bytes(edited, RepositoryJsonContext.Default.SignedEnvelope));
        await t.Memory.PutAsync(target, sealedObject, BlobCondition.Overwrite, Ct);
    }

    [Fact]
    public async Task An_edited_manifest_without_a_new_signature_is_refused()
    {
        var (t, _, _, _) = await WithPointAsync();
        await using var _ = t;
        await RewriteManifestAsync(t, P(1), p => p.Replace("\"writerId\":\"job-1\"", "\"writerId\":\"job-X\"", StringComparison.Ordinal), sign: false);
        var e = await Assert.ThrowsAsync<SignatureException>(() => t.Repository.OpenPointAsync(P(1), Ct));
        Assert.Contains("signature mismatch", e.Message, StringComparison.Ordinal);
        Assert.Equal(P(1), e.Point);
    }

    [Fact]
    public async Task An_unsigned_manifest_is_refused_when_a_key_is_configured()
    {
        var (t, _, _, _) = await WithPointAsync();
        await using var _ = t;
        await RewriteManifestAsync(t, P(1), p => p, editEnvelope: e => new SignedEnvelope { Format = e.Format, Version = e.Version, Type = e.Type, KeyId = e.KeyId, Algorithm = e.Algorithm, Payload = e.Payload, Signature = [] });
        var e = await Assert.ThrowsAsync<SignatureException>(() => t.Repository.OpenPointAsync(P(1), Ct));
        Assert.Contains("unsigned", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("duplicate")]
    [InlineData("trailing")]
    [InlineData("version")]
    [InlineData("unknown-property")]
    [InlineData("not-json")]
    public async Task Malformed_manifests_are_refused_even_when_validly_signed(string kind)
    {
        var (t, _, _, _) = await WithPointAsync();
        await using var _ = t;
        await RewriteManifestAsync(t, P(1), p => kind switch
        {
            "duplicate" => p.Replace("\"tenant\":\"default\"", "\"tenant\":\"default\",\"tenant\":\"other\"", StringComparison.Ordinal),
            "trailing" => p + "{}",
            "version" => p.Replace("\"version\":1", "\"version\":2", StringComparison.Ordinal),
            "unknown-property" => p.Replace("\"tenant\":", "\"surprise\":1,\"tenant\":", StringComparison.Ordinal),
            _ => "{\"format\":",
        });
        var e = await Assert.ThrowsAsync<ManifestInvalidException>(() => t.Repository.OpenPointAsync(P(1), Ct));
        Assert.Equal(P(1), e.Point);
    }

    [Fact]
    public async Task A_manifest_naming_another_domain_than_its_location_is_refused()
    {
        var (t, _, _, _) = await WithPointAsync();
        await using var _ = t;
        // A valid, signed manifest of domain A copied under domain B's name.
        await RewriteManifestAsync(t, P(1), p => p, storeAs: ObjectNames.Manifest(P(1, DomainB)));
        var e = await Assert.ThrowsAsync<ManifestInvalidException>(() => t.Repository.OpenPointAsync(P(1, DomainB), Ct));
        Assert.Contains("is stored as", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_older_manifest_replayed_as_the_newest_is_refused()
    {
        await using var t = await CreateAsync();
        var v1 = Image(4, 12);
        await t.BackupFullAsync(DomainA, v1);
        await t.BackupFullAsync(DomainA, Image(4, 13));

        // Copy #1 over a fresh #3 name: its payload still says #1.
        await RewriteManifestAsync(t, P(1), p => p, storeAs: ObjectNames.Manifest(P(3)));
        await Assert.ThrowsAsync<ManifestInvalidException>(() => t.Repository.OpenLatestAsync("default", DomainA, cancellationToken: Ct));

        // Delete the newest points: the control plane knows #3 was committed.
        await t.Memory.DeleteAsync(ObjectNames.Manifest(P(3)), null, Ct);
        await t.Memory.DeleteAsync(ObjectNames.Manifest(P(2)), null, Ct);
        var e = await Assert.ThrowsAsync<ManifestReplayException>(() => t.Repository.OpenLatestAsync("default", DomainA, knownLatestSequence: 3, cancellationToken: Ct));
        Assert.Contains("#1", e.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<ManifestReplayException>(() => t.Repository.BeginPointAsync(new Write.PointRequest { DomainId = DomainA, DomainName = "a", WriterId = "w", KnownLatestSequence = 3 }, Ct));
    }

    // ---- Codec caps ------------------------------------------------------------------------------------------

    [Fact]
    public void Decompression_beyond_the_declared_size_is_rejected()
    {
        using var keys = RepositoryKeys.Derive(new byte[32], Guid.NewGuid(), "k");
        var codec = new ObjectCodec(Guid.NewGuid(), keys, encrypt: false, CompressionAlgorithm.Zstd, 1);
        var plain = new byte[256 * 1024];
        plain.AsSpan().Fill((byte)'a');
        var sealedObject = codec.Seal(ObjectType.Chunk, new byte[32], plain);
        Assert.Equal((byte)CompressionAlgorithm.Zstd, sealedObject[6]);

        // Claim a smaller plain length than the frame inflates to: a decompression bomb.
        BinaryPrimitives.WriteUInt32BigEndian(sealedObject.AsSpan(8), 64 * 1024);
        var length = codec.ReadPlainLength(ObjectType.Chunk, sealedObject, 64 * 1024, default);
        var e = Assert.Throws<ObjectCorruptException>(() => codec.Open(sealedObject, new byte[32], new byte[length], default));
        Assert.Contains("decompression failed", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Brotli_output_beyond_the_declared_size_is_rejected()
    {
        using var keys = RepositoryKeys.Derive(new byte[32], Guid.NewGuid(), "k");
        var codec = new ObjectCodec(Guid.NewGuid(), keys, encrypt: true, CompressionAlgorithm.Brotli, 1);
        var plain = new byte[128 * 1024];
        var sealedObject = codec.Seal(ObjectType.Chunk, new byte[32], plain);
        Assert.Equal((byte)CompressionAlgorithm.Brotli, sealedObject[6]);
        var payloadLength = (int)BinaryPrimitives.ReadUInt32BigEndian(sealedObject.AsSpan(12));
        Assert.Equal(ObjectCodec.HeaderSize + payloadLength + ObjectCodec.TagSize, sealedObject.Length);

        // Unencrypted brotli payload decoded into a too-small buffer must report the overrun.
        using var plainKeys = RepositoryKeys.Derive(new byte[32], Guid.NewGuid(), "k");
        var plainCodec = new ObjectCodec(Guid.NewGuid(), plainKeys, encrypt: false, CompressionAlgorithm.Brotli, 1);
        var plainObject = plainCodec.Seal(ObjectType.Chunk, new byte[32], plain);
        var brotli = plainObject.AsSpan(ObjectCodec.HeaderSize).ToArray();
        var error = ChunkCompressor.Decompress(CompressionAlgorithm.Brotli, brotli, new byte[1024]);
        Assert.NotNull(error);
        Assert.Contains("exceeds", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Objects_over_the_cap_are_refused_before_allocation()
    {
        using var keys = RepositoryKeys.Derive(new byte[32], Guid.NewGuid(), "k");
        var codec = new ObjectCodec(Guid.NewGuid(), keys, encrypt: false, CompressionAlgorithm.None, 0);
        var sealedObject = codec.Seal(ObjectType.Chunk, new byte[32], new byte[1000]);
        BinaryPrimitives.WriteUInt32BigEndian(sealedObject.AsSpan(8), uint.MaxValue);
        Assert.Throws<ObjectTooLargeException>(() => codec.ReadPlainLength(ObjectType.Chunk, sealedObject, 64 * 1024 * 1024, default));
    }

    [Fact]
    public async Task An_oversized_chunk_object_in_storage_is_refused_without_reading_it()
    {
        var (t, _, id, _) = await WithPointAsync();
        await using var _ = t;
        t.Memory.Tamper(ObjectNames.Chunk(id), _ => new byte[ObjectCodec.MaxSealedLength(DiskIndex.MaxChunkSize) + 1]);
        var e = await Assert.ThrowsAsync<ObjectTooLargeException>(() => t.RestoreAsync(DomainA, 1));
        Assert.Equal("vda", e.Disk);
    }

    [Fact]
    public async Task Plaintext_objects_in_an_encrypted_repository_are_refused()
    {
        var (t, _, id, _) = await WithPointAsync();
        await using var _ = t;
        using var keys = RepositoryKeys.Derive(new byte[32], t.Repository.RepositoryId, "k");
        var plainCodec = new ObjectCodec(t.Repository.RepositoryId, keys, encrypt: false, CompressionAlgorithm.None, 0);
        var point = await t.Repository.OpenPointAsync(P(1), Ct);
        var disk = await point.OpenDiskAsync("vda", Ct);
        var forged = plainCodec.Seal(ObjectType.Chunk, id.ToArray(), new byte[ChunkSize]);
        t.Memory.Tamper(ObjectNames.Chunk(id), _ => forged);
        var e = await Assert.ThrowsAsync<ObjectCorruptException>(() => disk.ReadChunkAsync(1, new byte[ChunkSize], Ct));
        Assert.Contains("not encrypted but the repository is", e.Message, StringComparison.Ordinal);
    }
}
