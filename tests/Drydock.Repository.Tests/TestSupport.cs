using Drydock.Repository.Compression;
using Drydock.Repository.Format;
using Drydock.Repository.Write;
using Drydock.Storage;
using Drydock.Storage.InMemory;
using Xunit;

namespace Drydock.Repository.Tests;

/// <summary>A clock tests move by hand.</summary>
public sealed class ManualClock : TimeProvider
{
    public DateTimeOffset Now { get; set; } = new(2026, 3, 1, 12, 0, 0, TimeSpan.Zero);

    public override DateTimeOffset GetUtcNow() => Now;

    public void Advance(TimeSpan by) => Now += by;
}

/// <summary>Wraps a store and injects failures per operation.</summary>
public sealed class FaultyStore(IBlobStore inner) : IBlobStore
{
    public Func<string, BlobCondition, Exception?>? OnPut { get; set; }

    public Func<string, Exception?>? OnGet { get; set; }

    public Action<string>? BeforeExists { get; set; }

    public int Puts;

    public string Location => inner.Location;

    public Task<BlobProperties> PutAsync(string name, ReadOnlyMemory<byte> content, BlobCondition condition, CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref Puts);
        return OnPut?.Invoke(name, condition) is { } e ? Task.FromException<BlobProperties>(e) : inner.PutAsync(name, content, condition, cancellationToken);
    }

    public Task<BlobContent> GetAsync(string name, BlobRange range, long maxLength, CancellationToken cancellationToken = default)
        => OnGet?.Invoke(name) is { } e ? Task.FromException<BlobContent>(e) : inner.GetAsync(name, range, maxLength, cancellationToken);

    /// <summary>Called when an existence check has its answer, before the caller sees it.</summary>
    public Action<string>? AfterExists { get; set; }

    public async Task<BlobProperties?> GetPropertiesAsync(string name, CancellationToken cancellationToken = default)
    {
        BeforeExists?.Invoke(name);
        var properties = await inner.GetPropertiesAsync(name, cancellationToken);
        AfterExists?.Invoke(name);
        return properties;
    }

    public Task<bool> DeleteAsync(string name, string? ifMatch = null, CancellationToken cancellationToken = default) => inner.DeleteAsync(name, ifMatch, cancellationToken);

    public Task<BlobListPage> ListPageAsync(string prefix, string? continuation, int maxResults, CancellationToken cancellationToken = default)
        => inner.ListPageAsync(prefix, continuation, maxResults, cancellationToken);

    public int Flushes;

    public Task FlushAsync(CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref Flushes);
        return inner.FlushAsync(cancellationToken);
    }
}

/// <summary>A small repository in memory with a manual clock, and helpers to back up and restore byte arrays.</summary>
public sealed class TestRepo : IAsyncDisposable
{
    public const int ChunkSize = 64 * 1024;
    public const string Passphrase = "correct horse battery staple";

    private TestRepo(InMemoryBlobStore memory, FaultyStore store, ManualClock clock, BackupRepository repository)
    {
        Memory = memory;
        Store = store;
        Clock = clock;
        Repository = repository;
    }

    public InMemoryBlobStore Memory { get; }

    public FaultyStore Store { get; }

    public ManualClock Clock { get; }

    public BackupRepository Repository { get; private set; }

    public static Guid DomainA { get; } = Guid.Parse("11111111-1111-1111-1111-111111111111");

    public static Guid DomainB { get; } = Guid.Parse("22222222-2222-2222-2222-222222222222");

    public static CancellationToken Ct => TestContext.Current.CancellationToken;

    public static async Task<TestRepo> CreateAsync(bool encrypt = true, CompressionAlgorithm compression = CompressionAlgorithm.Zstd, RepositoryOptions? options = null)
    {
        var clock = new ManualClock();
        var memory = new InMemoryBlobStore(clock);
        var store = new FaultyStore(memory);
        var repository = await BackupRepository.InitAsync(
            store,
            Passphrase,
            new RepositoryInitOptions { ChunkSize = ChunkSize, Encrypt = encrypt, Compression = compression, KdfIterations = 1000 },
            options ?? Options(),
            clock,
            cancellationToken: Ct);
        return new TestRepo(memory, store, clock, repository);
    }

    public static RepositoryOptions Options() => new() { MaxParallelism = 2, QueueDepth = 3, GcPollInterval = TimeSpan.FromMilliseconds(1) };

    public async Task<BackupRepository> ReopenAsync(string passphrase = Passphrase, byte[]? keyFile = null)
        => await BackupRepository.OpenAsync(Store, passphrase, Options(), Clock, keyFile: keyFile, cancellationToken: Ct);

    /// <summary>A disk image mixing zero chunks, text, random bytes and a repeated chunk.</summary>
    public static byte[] Image(int chunks, int seed, int tail = 0)
    {
        var data = new byte[(chunks * ChunkSize) + tail];
        var random = new Random(seed);
        for (var c = 0; c < chunks; c++)
        {
            var span = data.AsSpan(c * ChunkSize, ChunkSize);
            switch (c % 4)
            {
                case 0:
                    break; // zeros
                case 1:
                    random.NextBytes(span);
                    break;
                case 2:
                    for (var i = 0; i < span.Length; i++)
                    {
                        span[i] = (byte)("the quick brown fox "[i % 20] + (seed % 3));
                    }

                    break;
                default:
                    span.Fill((byte)(seed + 7)); // identical in every chunk of this kind: dedups
                    break;
            }
        }

        random.NextBytes(data.AsSpan(chunks * ChunkSize, tail));
        return data;
    }

    public async Task<PointManifest> BackupFullAsync(Guid domain, byte[] image, string disk = "vda", string writer = "job-1")
    {
        await using var session = await Repository.BeginPointAsync(new PointRequest { DomainId = domain, DomainName = "vm-" + domain.ToString()[..4], WriterId = writer, DomainXml = "<domain/>" }, Ct);
        var d = await session.AddDiskAsync(new DiskRequest { Name = disk, Identity = "img-" + disk, VirtualSize = image.Length, CheckpointName = "cp" }, Ct);
        using var stream = new MemoryStream(image);
        await d.WriteAllAsync(stream, Ct);
        return await session.CommitAsync(Ct);
    }

    /// <summary>An incremental that submits only the chunks that differ from <paramref name="before"/>.</summary>
    public async Task<PointManifest> BackupIncrementalAsync(Guid domain, long parent, byte[] before, byte[] after, string disk = "vda", DiskBackupLevel level = DiskBackupLevel.Incremental, IEnumerable<long>? alsoSubmit = null)
    {
        await using var session = await Repository.BeginPointAsync(new PointRequest { DomainId = domain, DomainName = "vm", WriterId = "job-inc" }, Ct);
        var d = await session.AddDiskAsync(new DiskRequest { Name = disk, Identity = "img-" + disk, VirtualSize = after.Length, Level = level, ParentSequence = parent }, Ct);
        var extra = new HashSet<long>(alsoSubmit ?? []);
        extra.UnionWith(d.RefreshRequired);
        for (long i = 0; i < d.ChunkCount; i++)
        {
            var offset = (int)(i * ChunkSize);
            var length = d.LengthOf(i);
            var changed = offset + length > before.Length || !after.AsSpan(offset, length).SequenceEqual(before.AsSpan(offset, length));
            if (changed || extra.Contains(i))
            {
                await d.WriteChunkAsync(i, after.AsMemory(offset, length), Ct);
            }
        }

        return await session.CommitAsync(Ct);
    }

    public async Task<byte[]> RestoreAsync(Guid domain, long sequence, string disk = "vda", BackupRepository? repository = null)
    {
        var point = await (repository ?? Repository).OpenPointAsync(new PointRef("default", domain, sequence), Ct);
        var reader = await point.OpenDiskAsync(disk, Ct);
        using var output = new MemoryStream();
        await reader.CopyToAsync(output, Ct);
        return output.ToArray();
    }

    public IEnumerable<string> Names(string prefix)
        => Memory.ListAsync(prefix, Ct).Select(p => p.Name).ToBlockingEnumerable(Ct);

    public async ValueTask DisposeAsync()
    {
        Repository.Dispose();
        await Task.CompletedTask;
    }
}
