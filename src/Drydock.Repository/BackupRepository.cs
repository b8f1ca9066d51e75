using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Drydock.Repository.Compression;
using Drydock.Repository.Crypto;
using Drydock.Repository.Format;
using Drydock.Repository.Maintenance;
using Drydock.Repository.Read;
using Drydock.Repository.Write;
using Drydock.Storage;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Drydock.Repository;

/// <summary>
/// A Drydock backup repository in a blob store: content-addressed chunks, per-disk indexes and signed manifests
/// (docs/FORMAT.md). Knows nothing of hypervisors: callers hand it chunk-aligned bytes per disk.
/// </summary>
public sealed partial class BackupRepository : IDisposable
{
    private readonly RepositoryKeys _keys;

    private BackupRepository(IBlobStore store, RepositoryConfigDocument config, RepositoryKeys keys, RepositoryOptions options, TimeProvider time, ILogger logger)
    {
        Store = store;
        Config = config;
        _keys = keys;
        Options = options;
        Time = time;
        Logger = logger;
        Codec = new ObjectCodec(config.RepositoryId, keys, config.Encryption == "aes-256-gcm", ParseCompression(config.Compression), config.CompressionLevel);
    }

    /// <summary>The store.</summary>
    public IBlobStore Store { get; }

    /// <summary>The verified configuration.</summary>
    public RepositoryConfigDocument Config { get; }

    /// <summary>The repository id.</summary>
    public Guid RepositoryId => Config.RepositoryId;

    /// <summary>The runtime options.</summary>
    public RepositoryOptions Options { get; }

    /// <summary>The object codec (compression, encryption, ids).</summary>
    internal ObjectCodec Codec { get; }

    internal TimeProvider Time { get; }

    internal ILogger Logger { get; }

    internal RepositoryKeys Keys => _keys;

    /// <summary>Creates a new repository in an empty location.</summary>
    /// <param name="store">The store.</param>
    /// <param name="passphrase">The passphrase protecting the master key.</param>
    /// <param name="init">Chunk size, encryption, compression, KDF cost.</param>
    /// <param name="options">Runtime options.</param>
    /// <param name="timeProvider">The clock.</param>
    /// <param name="logger">The logger.</param>
    /// <param name="cancellationToken">Cancels the creation.</param>
    /// <returns>The opened repository.</returns>
    public static async Task<BackupRepository> InitAsync(IBlobStore store, string passphrase, RepositoryInitOptions init, RepositoryOptions? options = null, TimeProvider? timeProvider = null, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        var time = timeProvider ?? TimeProvider.System;
        var geometry = DiskIndex.CheckGeometry(init.ChunkSize, init.ChunkSize);
        if (geometry is not null)
        {
            throw new ArgumentException(geometry, nameof(init));
        }

        if (await store.ExistsAsync(ObjectNames.Config, cancellationToken))
        {
            throw new RepositoryFormatException($"{store.Location} already holds a repository");
        }

        var repositoryId = Guid.NewGuid();
        var now = time.GetUtcNow();
        var (keyFile, master) = KeyFile.Create(passphrase, repositoryId, init.KdfIterations, now);
        var keys = RepositoryKeys.Derive(master, repositoryId, keyFile.KeyId);
        System.Security.Cryptography.CryptographicOperations.ZeroMemory(master);
        var config = new RepositoryConfigDocument
        {
            Format = "drydock-repository",
            Version = 1,
            RepositoryId = repositoryId,
            CreatedAt = now,
            ChunkSize = init.ChunkSize,
            Encryption = init.Encrypt ? "aes-256-gcm" : "none",
            ChunkIds = init.Encrypt ? "hmac-sha256" : "sha256",
            Compression = init.Compression switch
            {
                CompressionAlgorithm.Zstd => "zstd",
                CompressionAlgorithm.Brotli => "brotli",
                CompressionAlgorithm.None => "none",
                _ => throw new ArgumentException("compression must be zstd, brotli or none", nameof(init)),
            },
            CompressionLevel = init.CompressionLevel,
            KeyId = keyFile.KeyId,
        };

        var keyName = ObjectNames.KeysPrefix + keyFile.KeyId;
        await store.PutAsync(keyName, KeyFile.Serialize(keyFile), BlobCondition.CreateOnly, cancellationToken);
        var repository = new BackupRepository(store, config, keys, options ?? new RepositoryOptions(), time, logger ?? NullLogger.Instance);
        try
        {
            var signed = SignedDocuments.Sign("repository", config, RepositoryJsonContext.Default.RepositoryConfigDocument, keys);

            // The config is never encrypted: it says whether the rest is.
            var sealedConfig = UnencryptedConfig(repository, signed);
            await store.PutAsync(ObjectNames.Config, sealedConfig, BlobCondition.CreateOnly, cancellationToken);
            await store.FlushAsync(cancellationToken);
        }
        catch (BlobAlreadyExistsException)
        {
            await store.DeleteAsync(keyName, null, CancellationToken.None);
            repository.Dispose();
            throw new RepositoryFormatException($"{store.Location} already holds a repository (created concurrently)");
        }

        LogOpened(repository.Logger, repositoryId, store.Location, init.Encrypt, init.ChunkSize);
        return repository;
    }

    /// <summary>Opens an existing repository.</summary>
    /// <param name="store">The store.</param>
    /// <param name="passphrase">The passphrase.</param>
    /// <param name="options">Runtime options.</param>
    /// <param name="timeProvider">The clock.</param>
    /// <param name="logger">The logger.</param>
    /// <param name="keyFile">A key file kept outside the repository, used instead of the one in <c>keys/</c>.</param>
    /// <param name="cancellationToken">Cancels the open.</param>
    /// <returns>The repository.</returns>
    /// <exception cref="WrongKeyException">The passphrase or key file does not open it.</exception>
    /// <exception cref="RepositoryFormatException">No repository there, or an unsupported version.</exception>
    public static async Task<BackupRepository> OpenAsync(IBlobStore store, string passphrase, RepositoryOptions? options = null, TimeProvider? timeProvider = null, ILogger? logger = null, byte[]? keyFile = null, CancellationToken cancellationToken = default)
    {
        var time = timeProvider ?? TimeProvider.System;
        byte[] configBytes;
        try
        {
            using var content = await store.GetAsync(ObjectNames.Config, 1024 * 1024, cancellationToken);
            configBytes = content.ToArray();
        }
        catch (BlobNotFoundException e)
        {
            throw new RepositoryFormatException($"{store.Location} is not a Drydock repository (no {ObjectNames.Config})", e);
        }

        // The config is an unencrypted Config object holding a signed envelope; read the key id from the envelope
        // first, unlock that key, then verify the signature.
        var envelopeBytes = OpenConfigContainer(configBytes);
        SignedEnvelope envelope;
        RepositoryConfigDocument unverified;
        try
        {
            envelope = JsonSerializer.Deserialize(envelopeBytes, RepositoryJsonContext.Default.SignedEnvelope) ?? throw new JsonException("null");
            unverified = JsonSerializer.Deserialize(envelope.Payload, RepositoryJsonContext.Default.RepositoryConfigDocument) ?? throw new JsonException("null");
        }
        catch (JsonException e)
        {
            throw new RepositoryFormatException($"{ObjectNames.Config} is malformed: {e.Message}", e);
        }

        if (unverified.Format != "drydock-repository" || unverified.Version != 1)
        {
            throw new RepositoryFormatException($"{ObjectNames.Config} is format '{unverified.Format}' version {unverified.Version}; this Drydock reads drydock-repository version 1");
        }

        KeyFileDocument keyDocument;
        if (keyFile is not null)
        {
            keyDocument = KeyFile.Parse(keyFile, "(key file)");
        }
        else
        {
            var keyName = ObjectNames.KeysPrefix + envelope.KeyId;
            if (!BlobName.IsValid(keyName))
            {
                throw new RepositoryFormatException($"{ObjectNames.Config} names an invalid key id");
            }

            try
            {
                using var content = await store.GetAsync(keyName, KeyFile.MaxLength, cancellationToken);
                keyDocument = KeyFile.Parse(content.Span, keyName);
            }
            catch (BlobNotFoundException e)
            {
                throw new WrongKeyException($"Key {envelope.KeyId} is not in the repository; pass the key file", e);
            }
        }

        if (keyDocument.RepositoryId != unverified.RepositoryId)
        {
            throw new WrongKeyException($"The key belongs to repository {keyDocument.RepositoryId}, this is repository {unverified.RepositoryId}");
        }

        var master = KeyFile.Unlock(keyDocument, passphrase);
        var keys = RepositoryKeys.Derive(master, keyDocument.RepositoryId, keyDocument.KeyId);
        System.Security.Cryptography.CryptographicOperations.ZeroMemory(master);
        RepositoryConfigDocument config;
        try
        {
            config = SignedDocuments.Verify("repository", envelopeBytes, RepositoryJsonContext.Default.RepositoryConfigDocument, keys, new RepositoryLocationInfo(ObjectName: ObjectNames.Config));
        }
        catch
        {
            keys.Dispose();
            throw;
        }

        if (DiskIndex.CheckGeometry(config.ChunkSize, config.ChunkSize) is { } bad || config.Encryption is not ("aes-256-gcm" or "none")
            || config.ChunkIds != (config.Encryption == "none" ? "sha256" : "hmac-sha256") || config.Compression is not ("zstd" or "brotli" or "none"))
        {
            keys.Dispose();
            throw new RepositoryFormatException($"{ObjectNames.Config} has unsupported settings");
        }

        var repository = new BackupRepository(store, config, keys, options ?? new RepositoryOptions(), time, logger ?? NullLogger.Instance);
        LogOpened(repository.Logger, config.RepositoryId, store.Location, repository.Codec.Encrypted, config.ChunkSize);
        return repository;
    }

    /// <summary>Lists committed points (by their manifest names; nothing is verified yet).</summary>
    /// <param name="tenant">Only this tenant, if set.</param>
    /// <param name="domainId">Only this domain, if set (needs <paramref name="tenant"/>).</param>
    /// <param name="cancellationToken">Cancels the listing.</param>
    /// <returns>Points in tenant, domain, sequence order.</returns>
    public async Task<IReadOnlyList<PointRef>> ListPointsAsync(string? tenant = null, Guid? domainId = null, CancellationToken cancellationToken = default)
    {
        var prefix = ObjectNames.PointsPrefix;
        if (tenant is not null)
        {
            prefix = domainId is { } d ? ObjectNames.DomainPoints(tenant, d) : prefix + tenant + "/";
        }

        var points = new List<PointRef>();
        await foreach (var item in Store.ListAsync(prefix, cancellationToken))
        {
            if (ObjectNames.TryParsePoint(item.Name, ObjectNames.PointsPrefix, out var point))
            {
                points.Add(point);
            }
        }

        return points;
    }

    /// <summary>Reads and fully checks a manifest: signature, version, strict JSON, and that it is stored where it says.</summary>
    /// <param name="point">The point.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The manifest.</returns>
    public async Task<PointManifest> ReadManifestAsync(PointRef point, CancellationToken cancellationToken = default)
    {
        var name = ObjectNames.Manifest(point);
        var where = new RepositoryLocationInfo(point, ObjectName: name);
        var manifest = await ReadSignedAsync(name, ObjectType.Manifest, "manifest", RepositoryJsonContext.Default.PointManifest, where, cancellationToken)
            ?? throw new ManifestInvalidException("manifest does not exist", where);
        ValidateManifest(manifest, point, where);
        return manifest;
    }

    /// <summary>Opens a point for restore after checking its manifest and its lineage.</summary>
    /// <param name="point">The point.</param>
    /// <param name="cancellationToken">Cancels the open.</param>
    /// <returns>The point.</returns>
    public async Task<RestorePoint> OpenPointAsync(PointRef point, CancellationToken cancellationToken = default)
    {
        var manifest = await ReadManifestAsync(point, cancellationToken);
        await CheckLineageAsync(point, manifest, cancellationToken);
        return new RestorePoint(this, point, manifest);
    }

    /// <summary>Opens the newest point of a domain.</summary>
    /// <param name="tenant">The tenant.</param>
    /// <param name="domainId">The domain.</param>
    /// <param name="knownLatestSequence">The control plane's record of the newest committed sequence; storage
    /// holding an older newest point is a rollback or a replayed manifest and is refused.</param>
    /// <param name="cancellationToken">Cancels the open.</param>
    /// <returns>The point, or null if the domain has none (and none was expected).</returns>
    public async Task<RestorePoint?> OpenLatestAsync(string tenant, Guid domainId, long? knownLatestSequence = null, CancellationToken cancellationToken = default)
    {
        var points = await ListPointsAsync(tenant, domainId, cancellationToken);
        var latest = points.Count == 0 ? (PointRef?)null : points[^1];
        if (knownLatestSequence is { } known && (latest is null || latest.Value.Sequence < known))
        {
            throw new ManifestReplayException(
                string.Create(CultureInfo.InvariantCulture, $"The newest point in storage is #{latest?.Sequence ?? 0} but the control plane committed #{known}: points were removed or an old manifest replayed"),
                new RepositoryLocationInfo(new PointRef(tenant, domainId, known)));
        }

        return latest is null ? null : await OpenPointAsync(latest.Value, cancellationToken);
    }

    /// <summary>Starts a backup session for one domain (takes the domain's writer lease).</summary>
    /// <param name="request">What is being backed up.</param>
    /// <param name="cancellationToken">Cancels the start.</param>
    /// <returns>The writer; dispose it to abort if <see cref="PointWriter.CommitAsync"/> is not reached.</returns>
    public Task<PointWriter> BeginPointAsync(PointRequest request, CancellationToken cancellationToken = default)
        => PointWriter.StartAsync(this, request, cancellationToken);

    /// <summary>Checks chunks and points and records the result (see <see cref="Verifier"/>).</summary>
    /// <param name="options">Full or sampled.</param>
    /// <param name="cancellationToken">Cancels the run.</param>
    /// <returns>The report.</returns>
    public Task<VerifyReport> VerifyAsync(VerifyOptions options, CancellationToken cancellationToken = default)
        => new Verifier(this).RunAsync(options, cancellationToken);

    /// <summary>Applies a retention policy (see <see cref="Pruner"/>).</summary>
    /// <param name="policy">The policy.</param>
    /// <param name="options">Dry run, protected points, holder.</param>
    /// <param name="cancellationToken">Cancels the run.</param>
    /// <returns>The report.</returns>
    /// <exception cref="ArgumentException">The policy has no rule (see <see cref="RetentionPolicy.Validate"/>).</exception>
    public Task<PruneReport> PruneAsync(RetentionPolicy policy, PruneOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(policy);
        policy.Validate();
        return new Pruner(this).RunAsync(policy, options, cancellationToken);
    }

    /// <summary>Deletes unreferenced chunks and indexes older than the grace window (see <see cref="GarbageCollector"/>).</summary>
    /// <param name="options">Grace window, dry run, holder.</param>
    /// <param name="cancellationToken">Cancels the run.</param>
    /// <returns>The report.</returns>
    public Task<GcReport> CollectGarbageAsync(GcOptions options, CancellationToken cancellationToken = default)
        => new GarbageCollector(this).RunAsync(options, cancellationToken);

    /// <inheritdoc />
    public void Dispose() => _keys.Dispose();

    /// <summary>Reads a chunk into <paramref name="destination"/> (exactly the entry's length) and checks it fully.</summary>
    internal async Task ReadChunkAsync(ChunkId id, Memory<byte> destination, RepositoryLocationInfo where, CancellationToken cancellationToken)
    {
        if (id.IsZero)
        {
            destination.Span.Clear();
            return;
        }

        var name = ObjectNames.Chunk(id);
        where = where with { ObjectName = name };
        BlobContent content;
        try
        {
            content = await Store.GetAsync(name, ObjectCodec.MaxSealedLength(DiskIndex.MaxChunkSize), cancellationToken);
        }
        catch (BlobNotFoundException e)
        {
            RepositoryInstruments.ChunksBad.Add(1);
            throw new ChunkMissingException(where, e);
        }
        catch (BlobTooLargeException e)
        {
            throw new ObjectTooLargeException(e.Length, e.MaxLength, where);
        }

        using (content)
        {
            var plainLength = Codec.ReadPlainLength(ObjectType.Chunk, content.Span, destination.Length, where);
            if (plainLength != destination.Length)
            {
                throw new ObjectCorruptException(string.Create(CultureInfo.InvariantCulture, $"chunk holds {plainLength} bytes, the index entry is {destination.Length}"), where);
            }

            Span<byte> key = stackalloc byte[ChunkId.Size];
            id.WriteTo(key);
            try
            {
                Codec.Open(content.Span, key, destination.Span, where);
                if (Codec.ComputeId(destination.Span) != id)
                {
                    throw new ObjectCorruptException("digest mismatch: the content does not hash to its id", where);
                }
            }
            catch (ObjectCorruptException)
            {
                RepositoryInstruments.ChunksBad.Add(1);
                throw;
            }

            RepositoryInstruments.ChunksRead.Add(1);
        }
    }

    /// <summary>Reads, opens and validates a disk index named by a manifest.</summary>
    internal async Task<DiskIndex> ReadIndexAsync(DiskManifest disk, RepositoryLocationInfo where, CancellationToken cancellationToken)
    {
        if (!ChunkId.TryParse(disk.IndexId, out var id) || id.IsZero)
        {
            throw new ManifestInvalidException($"disk {disk.Name} has an invalid index id", where);
        }

        var geometry = DiskIndex.CheckGeometry(disk.VirtualSize, disk.ChunkSize);
        if (geometry is not null)
        {
            throw new IndexInvalidException(geometry, where);
        }

        var name = ObjectNames.Index(id);
        where = where with { ObjectName = name };
        var cap = DiskIndex.SerializedLength(DiskIndex.EntryCount(disk.VirtualSize, disk.ChunkSize));
        BlobContent content;
        try
        {
            content = await Store.GetAsync(name, ObjectCodec.MaxSealedLength((int)cap), cancellationToken);
        }
        catch (BlobNotFoundException e)
        {
            throw new IndexInvalidException("index object is missing", where, e);
        }
        catch (BlobTooLargeException e)
        {
            throw new ObjectTooLargeException(e.Length, e.MaxLength, where);
        }

        using (content)
        {
            var plainLength = Codec.ReadPlainLength(ObjectType.Index, content.Span, (int)cap, where);
            var plain = ArrayPool<byte>.Shared.Rent(Math.Max(1, plainLength));
            try
            {
                var span = plain.AsSpan(0, plainLength);
                Codec.Open(content.Span, id.ToArray(), span, where);
                if (Codec.ComputeId(span) != id)
                {
                    throw new ObjectCorruptException("index digest mismatch", where);
                }

                return DiskIndex.Parse(span, disk.VirtualSize, disk.ChunkSize, where with { ObjectName = null });
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(plain);
            }
        }
    }

    /// <summary>Reads a signed, sealed document; null if it does not exist.</summary>
    internal async Task<T?> ReadSignedAsync<T>(string name, ObjectType type, string documentType, JsonTypeInfo<T> typeInfo, RepositoryLocationInfo where, CancellationToken cancellationToken)
        where T : class
    {
        BlobContent content;
        try
        {
            content = await Store.GetAsync(name, ObjectCodec.MaxSealedLength(Options.MaxDocumentSize), cancellationToken);
        }
        catch (BlobNotFoundException)
        {
            return null;
        }
        catch (BlobTooLargeException e)
        {
            throw new ObjectTooLargeException(e.Length, e.MaxLength, where);
        }

        using (content)
        {
            var envelope = Codec.Open(type, content.Span, Encoding.UTF8.GetBytes(name), Options.MaxDocumentSize, where);
            return SignedDocuments.Verify(documentType, envelope, typeInfo, _keys, where);
        }
    }

    /// <summary>Signs, seals and writes a document.</summary>
    internal async Task<BlobProperties> WriteSignedAsync<T>(string name, ObjectType type, string documentType, T document, JsonTypeInfo<T> typeInfo, BlobCondition condition, CancellationToken cancellationToken)
    {
        var signed = SignedDocuments.Sign(documentType, document, typeInfo, _keys);
        var sealedObject = Codec.Seal(type, Encoding.UTF8.GetBytes(name), signed);
        return await Store.PutAsync(name, sealedObject, condition, cancellationToken);
    }

    /// <summary>Loads the ids of quarantined chunks.</summary>
    internal async Task<HashSet<ChunkId>> ReadQuarantineAsync(CancellationToken cancellationToken)
    {
        var set = new HashSet<ChunkId>();
        await foreach (var item in Store.ListAsync(ObjectNames.QuarantinePrefix, cancellationToken))
        {
            if (ChunkId.TryParse(item.Name[ObjectNames.QuarantinePrefix.Length..], out var id))
            {
                set.Add(id);
            }
        }

        return set;
    }

    /// <summary>Checks the parent chain of a point: every parent exists (or was pruned, with a signed tombstone),
    /// belongs to the same repository, tenant and domain, has the same disk identity, and has a lower sequence.</summary>
    internal async Task CheckLineageAsync(PointRef point, PointManifest manifest, CancellationToken cancellationToken)
    {
        foreach (var disk in manifest.Disks)
        {
            var where = new RepositoryLocationInfo(point, disk.Name);
            var child = disk;
            var childSequence = point.Sequence;
            for (var depth = 0; child.Level != DiskBackupLevel.Full; depth++)
            {
                if (depth >= Options.MaxLineageDepth)
                {
                    throw new LineageBrokenException($"more than {Options.MaxLineageDepth} parents", where);
                }

                if (child.ParentSequence is not { } parentSequence)
                {
                    throw new LineageBrokenException($"a {child.Level} disk has no parent", where);
                }

                if (parentSequence >= childSequence)
                {
                    throw new LineageBrokenException(string.Create(CultureInfo.InvariantCulture, $"parent #{parentSequence} is not older than #{childSequence} (a cycle)"), where);
                }

                var parentRef = point with { Sequence = parentSequence };
                PointManifest? parent;
                try
                {
                    parent = await ReadSignedAsync(ObjectNames.Manifest(parentRef), ObjectType.Manifest, "manifest", RepositoryJsonContext.Default.PointManifest, new RepositoryLocationInfo(parentRef), cancellationToken);
                }
                catch (RepositoryException e)
                {
                    throw new LineageBrokenException(string.Create(CultureInfo.InvariantCulture, $"parent #{parentSequence} is unreadable: {e.Message}"), where);
                }

                if (parent is null)
                {
                    var tombstone = await ReadSignedAsync(ObjectNames.Tombstone(parentRef), ObjectType.Tombstone, "tombstone", RepositoryJsonContext.Default.TombstoneDocument, new RepositoryLocationInfo(parentRef), cancellationToken);
                    if (tombstone is not null && tombstone.Sequence == parentSequence && tombstone.DomainId == point.DomainId && tombstone.Tenant == point.Tenant && tombstone.RepositoryId == RepositoryId)
                    {
                        // Pruned on purpose: every point is a logical full, so the chain ends well here.
                        break;
                    }

                    throw new LineageBrokenException(string.Create(CultureInfo.InvariantCulture, $"parent #{parentSequence} is missing and was not pruned (a lost point in the middle of the lineage)"), where);
                }

                if (parent.RepositoryId != RepositoryId || parent.DomainId != point.DomainId || parent.Tenant != point.Tenant || parent.Sequence != parentSequence)
                {
                    throw new LineageBrokenException(string.Create(CultureInfo.InvariantCulture, $"parent #{parentSequence} is foreign (another repository, tenant or domain)"), where);
                }

                var parentDisk = parent.Disks.FirstOrDefault(d => d.Name == child.Name);
                if (parentDisk is null || parentDisk.Identity != child.Identity)
                {
                    throw new LineageBrokenException(string.Create(CultureInfo.InvariantCulture, $"parent #{parentSequence} has no disk {child.Name} with identity '{child.Identity}'"), where);
                }

                if (child.Level == DiskBackupLevel.Differential && parentDisk.Level != DiskBackupLevel.Full)
                {
                    throw new LineageBrokenException(string.Create(CultureInfo.InvariantCulture, $"the parent #{parentSequence} of a differential is not a full"), where);
                }

                child = parentDisk;
                childSequence = parentSequence;
            }
        }
    }

    internal void ValidateManifest(PointManifest manifest, PointRef point, RepositoryLocationInfo where)
    {
        if (manifest.Format != "drydock-manifest")
        {
            throw new ManifestInvalidException($"format '{manifest.Format}' is not drydock-manifest", where);
        }

        if (manifest.Version != 1)
        {
            throw new ManifestInvalidException(string.Create(CultureInfo.InvariantCulture, $"version {manifest.Version} is unknown (this Drydock reads version 1)"), where);
        }

        if (manifest.RepositoryId != RepositoryId)
        {
            throw new ManifestInvalidException($"it belongs to repository {manifest.RepositoryId}", where);
        }

        if (manifest.Tenant != point.Tenant || manifest.DomainId != point.DomainId || manifest.Sequence != point.Sequence)
        {
            throw new ManifestInvalidException(
                string.Create(CultureInfo.InvariantCulture, $"it names {manifest.Tenant}/{manifest.DomainId:D}#{manifest.Sequence} but is stored as {point}"), where);
        }

        if (manifest.Disks.Count == 0)
        {
            throw new ManifestInvalidException("no disks", where);
        }

        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var disk in manifest.Disks)
        {
            var at = where with { Disk = disk.Name };
            if (!IsValidDiskName(disk.Name) || !names.Add(disk.Name))
            {
                throw new ManifestInvalidException($"disk name '{disk.Name}' is invalid or repeated", at);
            }

            if (!Enum.IsDefined(disk.Level))
            {
                throw new ManifestInvalidException("unknown backup level", at);
            }

            if (DiskIndex.CheckGeometry(disk.VirtualSize, disk.ChunkSize) is { } geometry)
            {
                throw new ManifestInvalidException(geometry, at);
            }

            if ((disk.Level == DiskBackupLevel.Full) != (disk.ParentSequence is null))
            {
                throw new ManifestInvalidException("a full disk has a parent, or an incremental one has none", at);
            }
        }
    }

    internal static bool IsValidDiskName(string name)
        => name.Length is >= 1 and <= 64 && name.All(c => c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or (>= '0' and <= '9') or '.' or '_' or '-') && name[0] != '.';

    private static CompressionAlgorithm ParseCompression(string name) => name switch
    {
        "zstd" => CompressionAlgorithm.Zstd,
        "brotli" => CompressionAlgorithm.Brotli,
        _ => CompressionAlgorithm.None,
    };

    private static byte[] UnencryptedConfig(BackupRepository repository, byte[] signed)
    {
        // Config objects are sealed by a codec without encryption so that they can be read before unlocking.
        var plainCodec = new ObjectCodec(repository.RepositoryId, repository._keys, encrypt: false, CompressionAlgorithm.None, 0);
        return plainCodec.Seal(ObjectType.Config, Encoding.UTF8.GetBytes(ObjectNames.Config), signed, CompressionAlgorithm.None);
    }

    private static byte[] OpenConfigContainer(byte[] configBytes)
    {
        // Checking the container needs no key when it is unencrypted; use a throwaway codec.
        var where = new RepositoryLocationInfo(ObjectName: ObjectNames.Config);
        using var scratchKeys = RepositoryKeys.Derive(new byte[32], Guid.Empty, "-");
        var codec = new ObjectCodec(Guid.Empty, scratchKeys, encrypt: false, CompressionAlgorithm.None, 0);
        try
        {
            return codec.Open(ObjectType.Config, configBytes, Encoding.UTF8.GetBytes(ObjectNames.Config), 1024 * 1024, where);
        }
        catch (ObjectCorruptException e)
        {
            throw new RepositoryFormatException($"{ObjectNames.Config} is not a Drydock repository configuration: {e.Reason}", e);
        }
    }
}
