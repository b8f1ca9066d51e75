using Drydock.Hypervisor.Sim;
using Drydock.Repository;
using Drydock.Storage;
using Drydock.Storage.InMemory;
using Drydock.Transfer.Chain;
using Drydock.Transfer.Jobs;
using Drydock.Transfer.Restore;
using Xunit;

namespace Drydock.Transfer.Tests.Jobs;

/// <summary>A simulated host with one domain, an in-memory repository (whose puts can be made to fail) and the jobs.</summary>
internal sealed class JobHarness : IAsyncDisposable
{
    public const int ChunkSize = 64 * 1024;
    public const ulong DiskSize = 4 * 1024 * 1024;

    private readonly string _directory = Directory.CreateTempSubdirectory("drydock-jobs-").FullName;
    private int _restores;

    private JobHarness(SimFleet fleet, SimHost host, SimDomain domain, FaultyBlobStore store, BackupRepository repository)
    {
        Fleet = fleet;
        Host = host;
        Domain = domain;
        Store = store;
        Repository = repository;
        Driver = host.Connect();
    }

    public SimFleet Fleet { get; }

    public SimHost Host { get; }

    public SimDomain Domain { get; }

    public SimDriver Driver { get; }

    public FaultyBlobStore Store { get; }

    public BackupRepository Repository { get; }

    public BackupJobOptions Options { get; } = new() { Pipeline = new() { Connections = 2, ReadsInFlight = 8 } };

    public SimWorkload Workload { get; } = new(7, new SimWorkloadOptions { MaxBlocks = 8 });

    public Guid DomainKey => DomainKeys.ToRepositoryId(Domain.Id);

    public static CancellationToken Ct => TestContext.Current.CancellationToken;

    public static async Task<JobHarness> CreateAsync(params SimDiskSpec[] disks)
    {
        var fleet = new SimFleet(new SimFleetOptions { InMemoryDisks = true });
        var host = await fleet.AddHostAsync("host-1");
        var spec = new SimDomainSpec { Name = "vm-1" };
        foreach (var disk in disks.Length == 0 ? [new SimDiskSpec("vda", DiskSize)] : disks)
        {
            spec.Disks.Add(disk);
        }

        var domain = await host.DefineAsync(spec, Ct);
        await domain.StartAsync(paused: false, Ct);
        var store = new FaultyBlobStore(new InMemoryBlobStore());
        var repository = await BackupRepository.InitAsync(
            store, "passphrase", new RepositoryInitOptions { ChunkSize = ChunkSize, KdfIterations = 1000 }, new RepositoryOptions { MaxParallelism = 2 }, cancellationToken: Ct);
        return new JobHarness(fleet, host, domain, store, repository);
    }

    public Task<BackupJobResult> BackupAsync(RequestedLevel level = RequestedLevel.Auto, IReadOnlyList<string>? disks = null, bool allowFallback = true) =>
        new BackupJob(Driver, Repository, Options).RunAsync(new BackupJobRequest { Domain = Domain.Id, Level = level, Disks = disks, AllowFallback = allowFallback }, cancellationToken: Ct);

    public RestoreJob Restorer() => new(Repository, new RestorePipelineOptions { Connections = 2 });

    /// <summary>Backs up and returns, with the result, every disk's content right after (nothing writes meanwhile, so this
    /// is the content at the capture's instant).</summary>
    public async Task<(BackupJobResult Result, Dictionary<string, byte[]> Images)> BackupAndImageAsync(RequestedLevel level = RequestedLevel.Auto, IReadOnlyList<string>? disks = null)
    {
        var result = await BackupAsync(level, disks);
        var images = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        foreach (var disk in result.Disks)
        {
            images[disk.Target] = await ImageAsync(disk.Target);
        }

        return (result, images);
    }

    public async Task<byte[]> ImageAsync(string target)
    {
        var disk = Domain.Disk(target);
        var image = new byte[disk.Size];
        await disk.ReadAsync(0, image, Ct);
        return image;
    }

    /// <summary>Restores one point to raw files and returns their content by disk.</summary>
    public async Task<Dictionary<string, byte[]>> RestoreAsync(long sequence)
    {
        var directory = Path.Combine(_directory, "restore-" + Interlocked.Increment(ref _restores));
        var result = await Restorer().ToDirectoryAsync(new RestoreJobRequest { Domain = Domain.Id, Sequence = sequence }, directory, DiskImageFormat.Raw, cancellationToken: Ct);
        var images = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        foreach (var (disk, path) in result.Disks)
        {
            images[disk.Disk] = await File.ReadAllBytesAsync(path, Ct);
        }

        return images;
    }

    public async Task AssertRestoresAsync(long sequence, Dictionary<string, byte[]> expected)
    {
        var restored = await RestoreAsync(sequence);
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), restored.Keys.Order(StringComparer.Ordinal));
        foreach (var (disk, image) in expected)
        {
            Assert.Equal(image.Length, restored[disk].Length);
            Assert.True(image.AsSpan().SequenceEqual(restored[disk]), $"disk {disk} of point #{sequence} differs from the disk at capture time");
        }
    }

    /// <summary>Runs guest operations and returns the repository chunks they touched, per disk.</summary>
    public async Task<Dictionary<string, HashSet<long>>> WorkAsync(int operations)
    {
        var touched = new Dictionary<string, HashSet<long>>(StringComparer.Ordinal);
        foreach (var op in await Domain.RunWorkloadAsync(Workload, operations, Ct))
        {
            var chunks = touched.TryGetValue(op.Target, out var set) ? set : touched[op.Target] = [];
            for (var chunk = (long)op.Offset / ChunkSize; chunk <= (long)(op.Offset + op.Length - 1) / ChunkSize; chunk++)
            {
                chunks.Add(chunk);
            }
        }

        return touched;
    }

    /// <summary>Fills every disk with data so fulls have something to read.</summary>
    public async Task FillAsync()
    {
        foreach (var disk in Domain.Disks)
        {
            var data = new byte[disk.Size];
            new Random(disk.Target[^1]).NextBytes(data);
            await disk.WriteAsync(0, data, Ct);
        }
    }

    public async Task<IReadOnlyList<PointRef>> PointsAsync() => await Repository.ListPointsAsync("default", DomainKey, Ct);

    public async Task<List<string>> CheckpointNamesAsync() => [.. (await Driver.ListCheckpointsAsync(Domain.Id, Ct)).Select(c => c.Name)];

    public async ValueTask DisposeAsync()
    {
        Repository.Dispose();
        await Fleet.DisposeAsync();
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>A blob store whose puts of chunks can be made to fail, or to run a hook first (F04, F21).</summary>
internal sealed class FaultyBlobStore(IBlobStore inner) : IBlobStore
{
    private int _chunkPuts;

    public bool FailChunkPuts { get; set; }

    /// <summary>Runs (once) before the first chunk put.</summary>
    public Func<Task>? BeforeFirstChunkPut { get; set; }

    public string Location => inner.Location;

    public async Task<BlobProperties> PutAsync(string name, ReadOnlyMemory<byte> content, BlobCondition condition, CancellationToken cancellationToken = default)
    {
        if (name.StartsWith("chunks/", StringComparison.Ordinal))
        {
            if (FailChunkPuts)
            {
                throw new BlobStoreUnavailableException("injected: storage unavailable", Location, name);
            }

            if (Interlocked.Increment(ref _chunkPuts) == 1 && BeforeFirstChunkPut is { } hook)
            {
                await hook();
            }
        }

        return await inner.PutAsync(name, content, condition, cancellationToken);
    }

    public Task<BlobContent> GetAsync(string name, BlobRange range, long maxLength, CancellationToken cancellationToken = default) =>
        inner.GetAsync(name, range, maxLength, cancellationToken);

    public Task<BlobProperties?> GetPropertiesAsync(string name, CancellationToken cancellationToken = default) => inner.GetPropertiesAsync(name, cancellationToken);

    public Task<bool> DeleteAsync(string name, string? ifMatch = null, CancellationToken cancellationToken = default) => inner.DeleteAsync(name, ifMatch, cancellationToken);

    public Task<BlobListPage> ListPageAsync(string prefix, string? continuation, int maxResults, CancellationToken cancellationToken = default) =>
        inner.ListPageAsync(prefix, continuation, maxResults, cancellationToken);

    public Task FlushAsync(CancellationToken cancellationToken = default) => inner.FlushAsync(cancellationToken);
}
