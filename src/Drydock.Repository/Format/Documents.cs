using System.Text.Json.Serialization;

namespace Drydock.Repository.Format;

// The JSON documents of format version 1 (docs/FORMAT.md). Property names are camelCase on disk; unknown
// properties, duplicate properties, missing required properties and nulls in non-nullable properties are
// refused by RepositoryJsonContext. Never rename a persisted property without a format version bump.

/// <summary>How a disk's point was taken.</summary>
public enum DiskBackupLevel
{
    /// <summary>Every chunk was read.</summary>
    Full = 0,

    /// <summary>Only chunks changed since the parent point were read; the rest come from the parent's index.</summary>
    Incremental = 1,

    /// <summary>Only chunks changed since the last full were read; the parent is that full.</summary>
    Differential = 2,
}

/// <summary>A passphrase-wrapped master key (<c>keys/&lt;keyId&gt;</c>).</summary>
public sealed class KeyFileDocument
{
    /// <summary>Always "drydock-key".</summary>
    public required string Format { get; init; }

    /// <summary>Format version (1).</summary>
    public required int Version { get; init; }

    /// <summary>16 hex digits naming this key.</summary>
    public required string KeyId { get; init; }

    /// <summary>The repository the key belongs to.</summary>
    public required Guid RepositoryId { get; init; }

    /// <summary>When the key was made.</summary>
    public required DateTimeOffset CreatedAt { get; init; }

    /// <summary>How the passphrase becomes the key-encryption key.</summary>
    public required KeyFileKdf Kdf { get; init; }

    /// <summary>The wrapped master key.</summary>
    public required KeyFileWrap Wrap { get; init; }
}

/// <summary>The passphrase KDF.</summary>
public sealed class KeyFileKdf
{
    /// <summary>"PBKDF2-HMAC-SHA256".</summary>
    public required string Algorithm { get; init; }

    /// <summary>The iteration count.</summary>
    public required int Iterations { get; init; }

    /// <summary>The salt (base64 in JSON).</summary>
    public required byte[] Salt { get; init; }
}

/// <summary>The wrapped master key.</summary>
public sealed class KeyFileWrap
{
    /// <summary>"AES-256-GCM".</summary>
    public required string Algorithm { get; init; }

    /// <summary>The 12-byte nonce.</summary>
    public required byte[] Nonce { get; init; }

    /// <summary>The 32-byte encrypted master key.</summary>
    public required byte[] Ciphertext { get; init; }

    /// <summary>The 16-byte tag.</summary>
    public required byte[] Tag { get; init; }
}

/// <summary>A signed document: the exact payload bytes and their HMAC-SHA-256 signature.</summary>
public sealed class SignedEnvelope
{
    /// <summary>Always "drydock-signed".</summary>
    public required string Format { get; init; }

    /// <summary>Format version (1).</summary>
    public required int Version { get; init; }

    /// <summary>The document type ("repository", "manifest", "tombstone", "verify", "gc").</summary>
    public required string Type { get; init; }

    /// <summary>The key that signed.</summary>
    public required string KeyId { get; init; }

    /// <summary>"HMAC-SHA256".</summary>
    public required string Algorithm { get; init; }

    /// <summary>The payload: UTF-8 JSON of the document (base64 in the envelope).</summary>
    public required byte[] Payload { get; init; }

    /// <summary>The signature (base64).</summary>
    public required byte[] Signature { get; init; }
}

/// <summary>The repository configuration (<c>drydock.repo</c>).</summary>
public sealed class RepositoryConfigDocument
{
    /// <summary>Always "drydock-repository".</summary>
    public required string Format { get; init; }

    /// <summary>Format version (1).</summary>
    public required int Version { get; init; }

    /// <summary>The repository id.</summary>
    public required Guid RepositoryId { get; init; }

    /// <summary>When the repository was made.</summary>
    public required DateTimeOffset CreatedAt { get; init; }

    /// <summary>The default chunk size of new disks (a power of two).</summary>
    public required int ChunkSize { get; init; }

    /// <summary>"aes-256-gcm" or "none".</summary>
    public required string Encryption { get; init; }

    /// <summary>"hmac-sha256" (encrypted) or "sha256".</summary>
    public required string ChunkIds { get; init; }

    /// <summary>"zstd", "brotli" or "none": what new objects prefer.</summary>
    public required string Compression { get; init; }

    /// <summary>The compression level.</summary>
    public required int CompressionLevel { get; init; }

    /// <summary>The key that signs this configuration.</summary>
    public required string KeyId { get; init; }
}

/// <summary>A restore point: what was backed up, and where its disk indexes are.</summary>
public sealed class PointManifest
{
    /// <summary>Always "drydock-manifest".</summary>
    public required string Format { get; init; }

    /// <summary>Format version (1).</summary>
    public required int Version { get; init; }

    /// <summary>The repository the point belongs to.</summary>
    public required Guid RepositoryId { get; init; }

    /// <summary>The tenant.</summary>
    public required string Tenant { get; init; }

    /// <summary>The domain UUID.</summary>
    public required Guid DomainId { get; init; }

    /// <summary>The domain name at backup time.</summary>
    public required string DomainName { get; init; }

    /// <summary>The monotonic sequence number within the domain.</summary>
    public required long Sequence { get; init; }

    /// <summary>Who wrote the point (job id, host).</summary>
    public required string WriterId { get; init; }

    /// <summary>When the backup started (the point-in-time of the capture).</summary>
    public required DateTimeOffset CreatedAt { get; init; }

    /// <summary>When the point was committed.</summary>
    public required DateTimeOffset FinishedAt { get; init; }

    /// <summary>The libvirt domain XML at capture time.</summary>
    public required string DomainXml { get; init; }

    /// <summary>The disks.</summary>
    public required List<DiskManifest> Disks { get; init; }

    /// <summary>Free-form labels (policy name, job id, ...).</summary>
    public Dictionary<string, string> Labels { get; init; } = [];
}

/// <summary>One disk of a point.</summary>
public sealed class DiskManifest
{
    /// <summary>The disk's target name (vda, sdb, ...).</summary>
    public required string Name { get; init; }

    /// <summary>A stable identity of the disk image (e.g. the image path and its generation): a different identity
    /// is a different disk, and an incremental against it is refused.</summary>
    public required string Identity { get; init; }

    /// <summary>The virtual size in bytes.</summary>
    public required long VirtualSize { get; init; }

    /// <summary>The chunk size of the index.</summary>
    public required int ChunkSize { get; init; }

    /// <summary>Full, incremental or differential.</summary>
    public required DiskBackupLevel Level { get; init; }

    /// <summary>The parent point's sequence (incremental and differential only).</summary>
    public long? ParentSequence { get; init; }

    /// <summary>The checkpoint created with this point (the base of the next incremental).</summary>
    public string? CheckpointName { get; init; }

    /// <summary>The checkpoint's XML as saved at creation (for redefinition).</summary>
    public string? CheckpointXml { get; init; }

    /// <summary>The index object's id (64 hex digits).</summary>
    public required string IndexId { get; init; }

    /// <summary>Counters of the backup.</summary>
    public required DiskStats Stats { get; init; }
}

/// <summary>Counters of one disk's backup.</summary>
public sealed class DiskStats
{
    /// <summary>Index entries.</summary>
    public required long Chunks { get; init; }

    /// <summary>Entries that are all zeros.</summary>
    public required long ZeroChunks { get; init; }

    /// <summary>Chunks the caller submitted (read from the disk).</summary>
    public required long SubmittedChunks { get; init; }

    /// <summary>Entries taken unchanged from the parent's index.</summary>
    public required long InheritedChunks { get; init; }

    /// <summary>Chunks uploaded as new objects.</summary>
    public required long UploadedChunks { get; init; }

    /// <summary>Submitted chunks that already existed (dedup).</summary>
    public required long DedupChunks { get; init; }

    /// <summary>Bytes submitted by the caller.</summary>
    public required long BytesSubmitted { get; init; }

    /// <summary>Bytes uploaded (sealed objects).</summary>
    public required long BytesUploaded { get; init; }
}

/// <summary>Left by prune where a manifest was removed, so a later point's parent reference stays explainable.</summary>
public sealed class TombstoneDocument
{
    /// <summary>Always "drydock-tombstone".</summary>
    public required string Format { get; init; }

    /// <summary>Format version (1).</summary>
    public required int Version { get; init; }

    /// <summary>The repository.</summary>
    public required Guid RepositoryId { get; init; }

    /// <summary>The tenant.</summary>
    public required string Tenant { get; init; }

    /// <summary>The domain.</summary>
    public required Guid DomainId { get; init; }

    /// <summary>The removed point's sequence.</summary>
    public required long Sequence { get; init; }

    /// <summary>When it was removed.</summary>
    public required DateTimeOffset PrunedAt { get; init; }

    /// <summary>Why.</summary>
    public required string Reason { get; init; }
}

/// <summary>The outcome of a verify run (<c>verify/&lt;time&gt;-&lt;id&gt;</c>).</summary>
public sealed class VerifyRecordDocument
{
    /// <summary>Always "drydock-verify".</summary>
    public required string Format { get; init; }

    /// <summary>Format version (1).</summary>
    public required int Version { get; init; }

    /// <summary>The repository.</summary>
    public required Guid RepositoryId { get; init; }

    /// <summary>When the run started.</summary>
    public required DateTimeOffset StartedAt { get; init; }

    /// <summary>When it finished.</summary>
    public required DateTimeOffset FinishedAt { get; init; }

    /// <summary>The percentage of chunks read (100 = full).</summary>
    public required double SamplePercent { get; init; }

    /// <summary>Distinct chunks read and checked.</summary>
    public required long ChunksChecked { get; init; }

    /// <summary>Every point looked at.</summary>
    public required List<VerifyPointResult> Points { get; init; }
}

/// <summary>One point's verify outcome.</summary>
public sealed class VerifyPointResult
{
    /// <summary>The tenant.</summary>
    public required string Tenant { get; init; }

    /// <summary>The domain.</summary>
    public required Guid DomainId { get; init; }

    /// <summary>The sequence.</summary>
    public required long Sequence { get; init; }

    /// <summary>"ok" or "damaged".</summary>
    public required string Status { get; init; }

    /// <summary>What is wrong, where.</summary>
    public required List<VerifyProblem> Problems { get; init; }
}

/// <summary>One problem found by verify.</summary>
public sealed class VerifyProblem
{
    /// <summary>The disk, if the problem is in one.</summary>
    public string? Disk { get; init; }

    /// <summary>The first byte of the affected range.</summary>
    public long? Offset { get; init; }

    /// <summary>The affected length.</summary>
    public long? Length { get; init; }

    /// <summary>The chunk, if the problem is a chunk.</summary>
    public string? ChunkId { get; init; }

    /// <summary>What is wrong.</summary>
    public required string Problem { get; init; }
}

/// <summary>A mark-and-sweep GC run's marker (<c>gc/&lt;time&gt;-&lt;id&gt;</c>), read by committing writers.</summary>
public sealed class GcMarkerDocument
{
    /// <summary>Always "drydock-gc".</summary>
    public required string Format { get; init; }

    /// <summary>Format version (1).</summary>
    public required int Version { get; init; }

    /// <summary>The repository.</summary>
    public required Guid RepositoryId { get; init; }

    /// <summary>Who runs the GC.</summary>
    public required string Holder { get; init; }

    /// <summary>When marking started.</summary>
    public required DateTimeOffset StartedAt { get; init; }

    /// <summary>"marking", "sweeping" or "finished".</summary>
    public required string State { get; init; }

    /// <summary>When the sweep finished.</summary>
    public DateTimeOffset? FinishedAt { get; init; }

    /// <summary>Chunk ids the sweep deletes (hex).</summary>
    public required List<string> Candidates { get; init; }

    /// <summary>Index ids the sweep deletes (hex).</summary>
    public required List<string> OrphanIndexes { get; init; }
}

/// <summary>A lease object (<c>locks/...</c>).</summary>
public sealed class LeaseDocument
{
    /// <summary>Who holds it.</summary>
    public required string Holder { get; init; }

    /// <summary>A random token of this acquisition.</summary>
    public required string Token { get; init; }

    /// <summary>Takeover count: increases each time an expired lease is taken over.</summary>
    public required long Epoch { get; init; }

    /// <summary>When it was taken.</summary>
    public required DateTimeOffset AcquiredAt { get; init; }

    /// <summary>When it lapses unless renewed.</summary>
    public required DateTimeOffset ExpiresAt { get; init; }
}

/// <summary>A chunk verify found bad (<c>quarantine/&lt;id&gt;</c>): writers re-upload instead of reusing it.</summary>
public sealed class QuarantineDocument
{
    /// <summary>The chunk id (hex).</summary>
    public required string ChunkId { get; init; }

    /// <summary>What was wrong.</summary>
    public required string Reason { get; init; }

    /// <summary>When verify found it.</summary>
    public required DateTimeOffset DetectedAt { get; init; }
}

/// <summary>Source-generated, strict JSON for every document.</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    AllowDuplicateProperties = false,
    RespectNullableAnnotations = true,
    RespectRequiredConstructorParameters = true,
    UseStringEnumConverter = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    MaxDepth = 16)]
[JsonSerializable(typeof(KeyFileDocument))]
[JsonSerializable(typeof(SignedEnvelope))]
[JsonSerializable(typeof(RepositoryConfigDocument))]
[JsonSerializable(typeof(PointManifest))]
[JsonSerializable(typeof(TombstoneDocument))]
[JsonSerializable(typeof(VerifyRecordDocument))]
[JsonSerializable(typeof(GcMarkerDocument))]
[JsonSerializable(typeof(LeaseDocument))]
[JsonSerializable(typeof(QuarantineDocument))]
public sealed partial class RepositoryJsonContext : JsonSerializerContext;
