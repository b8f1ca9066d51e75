using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using Drydock.Nbd;
using Drydock.Nbd.Client;
using Drydock.Repository;
using Drydock.Repository.Write;
using Drydock.Storage;
using Drydock.Storage.FileSystem;
using Drydock.Storage.InMemory;
using Drydock.TestKit;
using Drydock.Transfer.Backup;
using Drydock.Transfer.Restore;

namespace Drydock.Benchmarks.Transfer;

/// <summary>
/// A diagnostic, not a comparison: the CPU seconds of each stage of the chunk path on one cached benchmark image, run
/// in a loop so that <c>perf record</c> (with <c>DOTNET_PerfMapEnabled=1</c>) sees mostly steady state. Stages:
/// <c>nbd</c> (read every chunk over NBD, 4 connections, 16 in flight, and drop it), <c>writer</c> (the image file
/// straight into a <see cref="DiskWriter"/>, no NBD), <c>backup</c> (<see cref="BackupPipeline"/>, both), <c>restore</c>
/// (<see cref="RestorePipeline.ToFileAsync"/> to raw, after one backup), <c>read</c> (every chunk read from the repository and
/// dropped, after one backup). Store: <c>memory</c>, <c>fs</c> or <c>fs-buffered</c> (a
/// repository under the work directory, fsync on; fs-buffered without O_DIRECT) or <c>null</c> (in memory, but chunk objects are dropped: the pipeline
/// without the in-memory store's copy of every chunk; not restorable).
/// </summary>
/// <example><c>Drydock.Benchmarks chunk-path --image random --stage backup --store memory --runs 5</c></example>
internal sealed class ChunkPathProfile(string image, string stage, string storeKind, int level, int runs, string work, TextWriter log)
{
    private const string Passphrase = "benchmark";
    private static readonly Guid Domain = Guid.Parse("00000000-0000-0000-0000-0000000000b7");

    public async Task<int> RunAsync(CancellationToken cancellationToken)
    {
        var path = Path.Combine(work, image + ".raw");
        if (!File.Exists(path))
        {
            await log.WriteLineAsync($"{path} is missing: run backup-restore once to make it");
            return 2;
        }

        var size = new FileInfo(path).Length;
        var repositoryPath = Path.Combine(work, "profile-repo");
        await using var server = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = path, Format = ImageFormat.Raw, ReadOnly = true }, cancellationToken);
        var endpoint = NbdUri.Parse(server.Uri);
        IBlobStore? kept = null;
        for (var run = 0; run <= runs; run++)
        {
            // Run 0 warms up (JIT, page cache, tiering) and is not reported.
            IBlobStore NewStore()
            {
                if (storeKind == "memory")
                {
                    return new InMemoryBlobStore();
                }

                if (storeKind == "null")
                {
                    return new ChunkDroppingStore(new InMemoryBlobStore());
                }

                if (Directory.Exists(repositoryPath))
                {
                    Directory.Delete(repositoryPath, recursive: true);
                }

                // fs-buffered: the store without O_DIRECT writes, for A/B runs.
                return new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = repositoryPath, DirectWriteThreshold = storeKind == "fs-buffered" ? 0 : 256 * 1024 });
            }

            string outcome;
            var before = Snapshot.Take();
            switch (stage)
            {
                case "nbd":
                    outcome = await NbdOnlyAsync(endpoint, size, cancellationToken);
                    break;
                case "writer":
                    outcome = await WriterOnlyAsync(path, size, NewStore(), cancellationToken);
                    break;
                case "backup":
                    outcome = await BackupAsync(endpoint, size, NewStore(), cancellationToken);
                    break;
                case "restore" or "read":
                    if (kept is null)
                    {
                        kept = NewStore();
                        await BackupAsync(endpoint, size, kept, cancellationToken);
                        before = Snapshot.Take();
                    }

                    outcome = stage == "read" ? await ReadAsync(kept, cancellationToken) : await RestoreAsync(kept, cancellationToken);
                    break;
                default:
                    await log.WriteLineAsync($"unknown stage {stage} (nbd, writer, backup, restore, read)");
                    return 2;
            }

            var delta = Snapshot.Take() - before;
            await log.WriteLineAsync(string.Create(
                CultureInfo.InvariantCulture,
                $"{(run == 0 ? "warm-up" : $"run {run}")}: {stage} {image} ({storeKind}) CPU {delta.Cpu.TotalSeconds:0.00} s (user {delta.User.TotalSeconds:0.00}, sys {delta.Cpu.TotalSeconds - delta.User.TotalSeconds:0.00}), wall {delta.Wall.TotalSeconds:0.00} s, allocated {delta.Allocated / 1048576.0:0} MiB, GCs {delta.Gen0}/{delta.Gen1}/{delta.Gen2}; {outcome}"));
        }

        return 0;
    }

    private static async Task<string> NbdOnlyAsync(NbdUri endpoint, long size, CancellationToken cancellationToken)
    {
        const int Chunk = 2 * 1024 * 1024;
        await using var client = await NbdClient.ConnectAsync(endpoint, new NbdClientOptions { Connections = 4, ExpectedSize = (ulong)size }, cancellationToken);
        long next = -1;
        var count = (size + Chunk - 1) / Chunk;

        async Task LoopAsync()
        {
            var buffer = ArrayPool<byte>.Shared.Rent(Chunk);
            try
            {
                for (var k = Interlocked.Increment(ref next); k < count; k = Interlocked.Increment(ref next))
                {
                    var length = (int)Math.Min(Chunk, size - (k * Chunk));
                    await client.ReadAsync((ulong)(k * Chunk), buffer.AsMemory(0, length), cancellationToken);
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }

        await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => LoopAsync()));
        return string.Create(CultureInfo.InvariantCulture, $"{count} chunks");
    }

    private async Task<string> WriterOnlyAsync(string path, long size, IBlobStore store, CancellationToken cancellationToken)
    {
        using var repository = await InitAsync(store, cancellationToken);
        var stats = await BackupRestoreBenchmark.WriteImageAsync(repository, Domain, path, size, "profile", cancellationToken);
        return string.Create(CultureInfo.InvariantCulture, $"{stats.UploadedChunks} uploaded, {stats.ZeroChunks} zero, {stats.BytesUploaded / (double)size:0.000} stored");
    }

    private async Task<string> BackupAsync(NbdUri endpoint, long size, IBlobStore store, CancellationToken cancellationToken)
    {
        using var repository = await InitAsync(store, cancellationToken);
        var (result, manifest) = await BackupRestoreBenchmark.FullBackupAsync(repository, Domain, endpoint, size, "profile", cancellationToken);
        var stats = manifest.Disks[0].Stats;
        return string.Create(CultureInfo.InvariantCulture, $"{result.ChunksRead} read, {stats.UploadedChunks} uploaded, {stats.ZeroChunks} zero, {stats.BytesUploaded / (double)size:0.000} stored");
    }

    private async Task<string> RestoreAsync(IBlobStore store, CancellationToken cancellationToken)
    {
        var output = Path.Combine(work, "profile-restored.raw");
        File.Delete(output);
        using var repository = await BackupRepository.OpenAsync(store, Passphrase, cancellationToken: cancellationToken);
        var point = await repository.OpenLatestAsync("default", Domain, cancellationToken: cancellationToken)
            ?? throw new InvalidOperationException("no point in the profile repository");
        var disk = await point.OpenDiskAsync("vda", cancellationToken);
        var result = await new RestorePipeline().ToFileAsync(disk, output, DiskImageFormat.Raw, cancellationToken: cancellationToken);
        File.Delete(output);
        return string.Create(CultureInfo.InvariantCulture, $"{result.ChunksWritten} chunks written");
    }

    // The repository's read path alone: every chunk fetched, authenticated, decompressed and re-hashed, then dropped.
    private static async Task<string> ReadAsync(IBlobStore store, CancellationToken cancellationToken)
    {
        using var repository = await BackupRepository.OpenAsync(store, Passphrase, cancellationToken: cancellationToken);
        var point = await repository.OpenLatestAsync("default", Domain, cancellationToken: cancellationToken)
            ?? throw new InvalidOperationException("no point in the profile repository");
        var disk = await point.OpenDiskAsync("vda", cancellationToken);
        long next = -1;

        async Task LoopAsync()
        {
            var buffer = ArrayPool<byte>.Shared.Rent(disk.ChunkSize);
            try
            {
                for (var i = Interlocked.Increment(ref next); i < disk.ChunkCount; i = Interlocked.Increment(ref next))
                {
                    await disk.ReadChunkAsync(i, buffer.AsMemory(0, disk.RangeOf(i).Length), cancellationToken);
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }

        await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(LoopAsync, cancellationToken)));
        return string.Create(CultureInfo.InvariantCulture, $"{disk.ChunkCount} chunks read");
    }

    private Task<BackupRepository> InitAsync(IBlobStore store, CancellationToken cancellationToken)
        => BackupRepository.InitAsync(store, Passphrase, new RepositoryInitOptions { KdfIterations = 1000, CompressionLevel = level }, cancellationToken: cancellationToken);

    private readonly record struct Snapshot(TimeSpan Cpu, TimeSpan User, TimeSpan Wall, long Allocated, int Gen0, int Gen1, int Gen2)
    {
        public static Snapshot Take()
        {
            using var process = Process.GetCurrentProcess();
            return new Snapshot(process.TotalProcessorTime, process.UserProcessorTime, TimeSpan.FromSeconds(Stopwatch.GetTimestamp() / (double)Stopwatch.Frequency), GC.GetTotalAllocatedBytes(precise: false), GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2));
        }

        public static Snapshot operator -(Snapshot a, Snapshot b)
            => new(a.Cpu - b.Cpu, a.User - b.User, a.Wall - b.Wall, a.Allocated - b.Allocated, a.Gen0 - b.Gen0, a.Gen1 - b.Gen1, a.Gen2 - b.Gen2);
    }
}
