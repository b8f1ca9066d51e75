using Drydock.Hypervisor;
using Drydock.Nbd.Server;
using Drydock.Repository;
using Drydock.Repository.Format;
using Drydock.Repository.Read;
using Drydock.Repository.Write;
using Drydock.Storage.InMemory;
using Drydock.TestKit;
using Drydock.Transfer.Backup;
using Xunit;

namespace Drydock.Transfer.Tests.TestSupport;

/// <summary>A progress sink that runs on the reporting thread (Progress&lt;T&gt; would post to the thread pool).</summary>
public sealed class InlineProgress<T>(Action<T> onReport) : IProgress<T>
{
    public void Report(T value) => onReport(value);
}

/// <summary>
/// One test's world: a temp directory, a real NBD server on a Unix socket serving a sparse in-memory disk (with a fault
/// plan), and a real repository on an in-memory blob store with 64 KiB chunks.
/// </summary>
public sealed class TransferHarness : IAsyncDisposable
{
    public const int ChunkSize = 64 * 1024;
    public const string DiskName = "vda";

    private TransferHarness(TestDirectory directory, NbdServer server, NbdExport disk, NbdFaultPlan plan, InMemoryBlobStore store, BackupRepository repository)
    {
        Directory = directory;
        Server = server;
        Disk = disk;
        Plan = plan;
        Store = store;
        Repository = repository;
    }

    public static Guid Domain { get; } = Guid.Parse("33333333-3333-3333-3333-333333333333");

    public static CancellationToken Ct => TestContext.Current.CancellationToken;

    public TestDirectory Directory { get; }

    public NbdServer Server { get; }

    /// <summary>The source disk ("the guest writes here").</summary>
    public NbdExport Disk { get; }

    public NbdFaultPlan Plan { get; }

    public InMemoryBlobStore Store { get; }

    public BackupRepository Repository { get; }

    public static async Task<TransferHarness> StartAsync(long diskSize)
    {
        var directory = TestDirectory.Create("xfer");
        var plan = new NbdFaultPlan();
        var server = new NbdServer(new NbdServerOptions { Faults = plan });
        var disk = server.AddExport(new NbdExport(DiskName, new NbdMemoryBackend((ulong)diskSize)));
        server.ListenUnix(directory.SocketPath("nbd.sock"));
        var store = new InMemoryBlobStore();
        var repository = await BackupRepository.InitAsync(
            store,
            "transfer tests",
            new RepositoryInitOptions { ChunkSize = ChunkSize, KdfIterations = 1000 },
            new RepositoryOptions { MaxParallelism = 2, QueueDepth = 4, GcPollInterval = TimeSpan.FromMilliseconds(1) },
            cancellationToken: Ct);
        return new TransferHarness(directory, server, disk, plan, store, repository);
    }

    /// <summary>A sparse disk mixing holes, dense data, partial-chunk data, allocated zeros and a short tail.</summary>
    public async Task WriteMixedContentAsync(int seed = 1)
    {
        var random = new Random(seed);
        var size = (long)Disk.Size;
        async Task Data(long offset, int length)
        {
            var bytes = new byte[length];
            random.NextBytes(bytes);
            await Disk.WriteAsync((ulong)offset, bytes, cancellationToken: Ct);
        }

        await Data(0, 3 * ChunkSize);                          // chunks 0-2 dense
        await Data((5 * ChunkSize) + 4096, 8192);              // chunk 5: two separate pieces of data in a hole
        await Data((5 * ChunkSize) + 40960, 4096);
        await Data((9 * ChunkSize) + (ChunkSize / 2), ChunkSize); // straddles chunks 9 and 10
        await Disk.WriteAsync(12 * ChunkSize, new byte[ChunkSize], cancellationToken: Ct); // chunk 12: allocated zeros
        await Data(20 * ChunkSize, 2 * ChunkSize);             // chunks 20-21
        await Data(size - 4096, 4096);                         // the short last chunk
    }

    public CaptureDisk Capture(string? changedBlocksContext = null) => new()
    {
        Target = DiskName,
        Endpoint = Server.GetUnixUri(DiskName),
        VirtualSize = Disk.Size,
        Identity = "img-vda",
        ChangedBlocksContext = changedBlocksContext,
    };

    /// <summary>Backs up the disk and commits the point.</summary>
    public async Task<(PointManifest Manifest, DiskBackupResult Result)> BackupAsync(
        DiskBackupLevel level = DiskBackupLevel.Full,
        long? parent = null,
        string? changedBlocksContext = null,
        BackupPipelineOptions? options = null,
        Action<DiskWriter>? inspect = null)
    {
        await using var session = await BeginAsync();
        var writer = await AddDiskAsync(session, level, parent);
        inspect?.Invoke(writer);
        var result = await new BackupPipeline(options ?? FastOptions()).RunAsync(Capture(changedBlocksContext), writer, cancellationToken: Ct);
        var manifest = await session.CommitAsync(Ct);
        return (manifest, result);
    }

    public Task<PointWriter> BeginAsync() =>
        Repository.BeginPointAsync(new PointRequest { DomainId = Domain, DomainName = "vm", WriterId = "test" }, Ct);

    public Task<DiskWriter> AddDiskAsync(PointWriter session, DiskBackupLevel level = DiskBackupLevel.Full, long? parent = null) =>
        session.AddDiskAsync(new DiskRequest { Name = DiskName, Identity = "img-vda", VirtualSize = (long)Disk.Size, Level = level, ParentSequence = parent }, Ct);

    public async Task<DiskReader> OpenAsync(long sequence)
    {
        var point = await Repository.OpenPointAsync(new PointRef("default", Domain, sequence), Ct);
        return await point.OpenDiskAsync(DiskName, Ct);
    }

    public static BackupPipelineOptions FastOptions(Action<BackupPipelineOptions>? configure = null)
    {
        var options = new BackupPipelineOptions { Connections = 2, ReadsInFlight = 4, RequestTimeout = TimeSpan.FromSeconds(10) };
        configure?.Invoke(options);
        return options;
    }

    /// <summary>The disk's current bytes.</summary>
    public Task<byte[]> ContentAsync() => ContentAsync(Disk);

    public static async Task<byte[]> ContentAsync(NbdExport export)
    {
        var bytes = new byte[(int)export.Size];
        await export.ReadAsync(0, bytes, Ct);
        return bytes;
    }

    /// <summary>Bytes the file system allocated for a file (st_blocks * 512).</summary>
    public static async Task<long> AllocatedBytesAsync(string path)
    {
        var result = await ProcessRunner.RunAsync("stat", ["-c", "%b %B", path], Ct);
        var parts = result.StandardOutput.Trim().Split(' ');
        return long.Parse(parts[0], System.Globalization.CultureInfo.InvariantCulture) * long.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture);
    }

    public async ValueTask DisposeAsync()
    {
        await Server.DisposeAsync();
        Repository.Dispose();
        Directory.Dispose();
    }
}
