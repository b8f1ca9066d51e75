using System.Buffers;
using System.Security.Cryptography;
using Drydock.Repository.Compression;
using Drydock.Repository.Format;
using Drydock.Repository.Write;
using Drydock.Storage;
using Xunit;
using static Drydock.Repository.Tests.TestRepo;

namespace Drydock.Repository.Tests;

public sealed class RoundTripTests
{
    [Theory]
    [InlineData(true, CompressionAlgorithm.Zstd)]
    [InlineData(false, CompressionAlgorithm.Zstd)]
    [InlineData(true, CompressionAlgorithm.Brotli)]
    [InlineData(true, CompressionAlgorithm.None)]
    public async Task Full_backup_restores_byte_exact(bool encrypt, CompressionAlgorithm compression)
    {
        await using var t = await CreateAsync(encrypt, compression);
        var image = Image(16, seed: 1, tail: 1000);
        var manifest = await t.BackupFullAsync(DomainA, image);

        Assert.Equal(image, await t.RestoreAsync(DomainA, 1));
        var stats = manifest.Disks[0].Stats;
        Assert.Equal(17, stats.Chunks);
        Assert.Equal(4, stats.ZeroChunks);
        // Four "fill" chunks are identical: one upload, three dedups. Text chunks are identical too.
        Assert.True(stats.DedupChunks >= 3, $"dedup {stats.DedupChunks}");
        Assert.Equal(stats.Chunks - stats.ZeroChunks - stats.DedupChunks, stats.UploadedChunks);
        Assert.Equal(stats.UploadedChunks, t.Names(ObjectNames.ChunksPrefix).Count());
    }

    [Fact]
    public async Task Commit_flushes_the_store_before_indexes_and_before_the_manifest()
    {
        await using var t = await CreateAsync();
        var flushesAt = new Dictionary<string, int>();
        t.Store.OnPut = (name, _) =>
        {
            var prefix = name[..name.IndexOf('/', StringComparison.Ordinal)];
            flushesAt.TryAdd(prefix, t.Store.Flushes);
            return null;
        };
        var before = t.Store.Flushes;
        await t.BackupFullAsync(DomainA, Image(4, 9));
        Assert.True(flushesAt["indexes"] > before, "chunks flushed before the first index");
        Assert.True(flushesAt["points"] > flushesAt["indexes"], "indexes flushed before the manifest");
        Assert.True(t.Store.Flushes > flushesAt["points"], "the manifest flushed before commit returns");
    }

    [Fact]
    public async Task Compression_algorithm_is_recorded_per_object()
    {
        await using var t = await CreateAsync(encrypt: false, CompressionAlgorithm.Brotli);
        await t.BackupFullAsync(DomainA, Image(4, 2));
        var algorithms = new HashSet<byte>();
        foreach (var name in t.Names(ObjectNames.ChunksPrefix))
        {
            using var content = await t.Memory.GetAsync(name, 1 << 20, Ct);
            algorithms.Add(content.Span[6]);
        }

        // Text compresses (Brotli = 2); random data does not and is stored as is (0).
        Assert.Contains((byte)CompressionAlgorithm.Brotli, algorithms);
        Assert.Contains((byte)CompressionAlgorithm.None, algorithms);
    }

    [Fact]
    public async Task Unencrypted_chunk_ids_are_plain_sha256_and_encrypted_ids_are_keyed()
    {
        var image = Image(2, 3);
        var chunk = image.AsSpan(ChunkSize, ChunkSize).ToArray();
        var plainName = ObjectNames.Chunk(new ChunkId(SHA256.HashData(chunk)));

        await using (var plain = await CreateAsync(encrypt: false))
        {
            await plain.BackupFullAsync(DomainA, image);
            Assert.Contains(plainName, plain.Names(ObjectNames.ChunksPrefix));
        }

        await using var encrypted = await CreateAsync(encrypt: true);
        await encrypted.BackupFullAsync(DomainA, image);
        Assert.DoesNotContain(plainName, encrypted.Names(ObjectNames.ChunksPrefix));
    }

    [Fact]
    public async Task Incremental_uploads_only_changed_chunks_and_both_points_restore()
    {
        await using var t = await CreateAsync();
        var v1 = Image(16, 4);
        await t.BackupFullAsync(DomainA, v1);
        var v2 = (byte[])v1.Clone();
        RandomNumberGenerator.Fill(v2.AsSpan(5 * ChunkSize + 100, 10));
        RandomNumberGenerator.Fill(v2.AsSpan(12 * ChunkSize, 5));
        var manifest = await t.BackupIncrementalAsync(DomainA, 1, v1, v2);

        var stats = manifest.Disks[0].Stats;
        Assert.Equal(2, stats.SubmittedChunks);
        Assert.Equal(14, stats.InheritedChunks);
        Assert.Equal(2, stats.UploadedChunks);
        Assert.Equal(1, manifest.Disks[0].ParentSequence);
        Assert.Equal(v1, await t.RestoreAsync(DomainA, 1));
        Assert.Equal(v2, await t.RestoreAsync(DomainA, 2));
    }

    [Fact]
    public async Task A_grown_disk_records_the_new_size_and_restores_exactly()
    {
        // F09.
        await using var t = await CreateAsync();
        var v1 = Image(8, 5, tail: 123);
        await t.BackupFullAsync(DomainA, v1);
        var v2 = new byte[(11 * ChunkSize) + 77];
        v1.CopyTo(v2, 0);
        RandomNumberGenerator.Fill(v2.AsSpan(v1.Length));
        var manifest = await t.BackupIncrementalAsync(DomainA, 1, v1, v2);
        Assert.Equal(v2.Length, manifest.Disks[0].VirtualSize);
        Assert.Equal(v2, await t.RestoreAsync(DomainA, 2));
    }

    [Fact]
    public async Task A_point_restores_from_a_fresh_process_with_only_the_location_and_the_key()
    {
        await using var t = await CreateAsync();
        var image = Image(6, 6);
        await t.BackupFullAsync(DomainA, image);
        using var keyContent = await t.Memory.GetAsync(t.Names(ObjectNames.KeysPrefix).Single(), 1 << 16, Ct);
        var keyFile = keyContent.ToArray();

        using (var reopened = await t.ReopenAsync())
        {
            Assert.Equal(image, await t.RestoreAsync(DomainA, 1, repository: reopened));
        }

        // Even with keys/ gone, a key file kept elsewhere opens it.
        await t.Memory.DeleteAsync(t.Names(ObjectNames.KeysPrefix).Single(), null, Ct);
        using var withFile = await t.ReopenAsync(keyFile: keyFile);
        Assert.Equal(image, await t.RestoreAsync(DomainA, 1, repository: withFile));
    }

    [Fact]
    public async Task Init_refuses_a_location_that_already_holds_a_repository()
    {
        await using var t = await CreateAsync();
        await Assert.ThrowsAsync<RepositoryFormatException>(() => BackupRepository.InitAsync(t.Store, "x", new RepositoryInitOptions { KdfIterations = 1000 }, cancellationToken: Ct));
    }

    [Fact]
    public async Task Restore_of_a_single_chunk_and_zero_entries_need_no_read()
    {
        await using var t = await CreateAsync();
        var image = Image(4, 7);
        await t.BackupFullAsync(DomainA, image);
        t.Store.OnGet = name => name.StartsWith(ObjectNames.ChunksPrefix, StringComparison.Ordinal) ? new InvalidOperationException("no chunk reads expected") : null;
        var point = await t.Repository.OpenPointAsync(new PointRef("default", DomainA, 1), Ct);
        var disk = await point.OpenDiskAsync("vda", Ct);
        Assert.True(disk.IsZero(0));
        var buffer = new byte[ChunkSize];
        buffer[5] = 9;
        await disk.ReadChunkAsync(0, buffer, Ct);
        Assert.All(buffer, b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task A_full_backup_that_leaves_chunks_unwritten_is_refused_naming_the_range()
    {
        await using var t = await CreateAsync();
        await using var session = await t.Repository.BeginPointAsync(new PointRequest { DomainId = DomainA, DomainName = "a", WriterId = "w" }, Ct);
        var disk = await session.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "i", VirtualSize = 4 * ChunkSize }, Ct);
        await disk.WriteChunkAsync(0, new byte[ChunkSize], Ct);
        disk.MarkZero(3);
        var e = await Assert.ThrowsAsync<CommitRefusedException>(() => session.CommitAsync(Ct));
        Assert.Equal("vda", e.Disk);
        Assert.Equal(ChunkSize, e.Offset);
        Assert.Equal(2 * ChunkSize, e.Length);
        Assert.Empty(t.Names(ObjectNames.PointsPrefix));
    }

    [Fact]
    public async Task Writing_a_chunk_twice_or_with_the_wrong_length_is_rejected()
    {
        await using var t = await CreateAsync();
        await using var session = await t.Repository.BeginPointAsync(new PointRequest { DomainId = DomainA, DomainName = "a", WriterId = "w" }, Ct);
        var disk = await session.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "i", VirtualSize = (2 * ChunkSize) + 10 }, Ct);
        await Assert.ThrowsAsync<ArgumentException>(async () => await disk.WriteChunkAsync(2, new byte[ChunkSize], Ct));
        await disk.WriteChunkAsync(2, new byte[10], Ct);
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await disk.WriteChunkAsync(2, new byte[10], Ct));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await disk.WriteChunkAsync(3, new byte[10], Ct));
    }

    [Fact]
    public async Task Chunks_handed_over_in_rented_arrays_restore_byte_exact_and_bad_ones_are_rejected()
    {
        await using var t = await CreateAsync();
        var image = Image(3, seed: 4, tail: 10);
        await using (var session = await t.Repository.BeginPointAsync(new PointRequest { DomainId = DomainA, DomainName = "a", WriterId = "w" }, Ct))
        {
            var disk = await session.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "i", VirtualSize = image.Length }, Ct);
            await Assert.ThrowsAsync<ArgumentException>(async () => await disk.WriteRentedChunkAsync(3, ArrayPool<byte>.Shared.Rent(ChunkSize), ChunkSize, Ct));
            await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await disk.WriteRentedChunkAsync(0, ArrayPool<byte>.Shared.Rent(10), ChunkSize + 1, Ct));
            for (var i = 0; i < disk.ChunkCount; i++)
            {
                var length = disk.LengthOf(i);
                var rented = ArrayPool<byte>.Shared.Rent(length);
                image.AsSpan(i * ChunkSize, length).CopyTo(rented);
                await disk.WriteRentedChunkAsync(i, rented, length, Ct);
            }

            await session.CommitAsync(Ct);
        }

        Assert.Equal(image, await t.RestoreAsync(DomainA, 1));
    }

    [Fact]
    public async Task Filesystem_backend_round_trips_a_point()
    {
        var root = Directory.CreateTempSubdirectory("drydock-repo-").FullName;
        try
        {
            var store = new Drydock.Storage.FileSystem.FileSystemBlobStore(new Drydock.Storage.FileSystem.FileSystemBlobStoreOptions { Root = root });
            using var repository = await BackupRepository.InitAsync(store, "pw", new RepositoryInitOptions { ChunkSize = ChunkSize, KdfIterations = 1000 }, Options(), cancellationToken: Ct);
            var image = Image(8, 8, tail: 5);
            await using (var session = await repository.BeginPointAsync(new PointRequest { DomainId = DomainA, DomainName = "a", WriterId = "w" }, Ct))
            {
                var disk = await session.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "i", VirtualSize = image.Length }, Ct);
                await disk.WriteAllAsync(new MemoryStream(image), Ct);
                await session.CommitAsync(Ct);
            }

            using var reopened = await BackupRepository.OpenAsync(store, "pw", Options(), cancellationToken: Ct);
            var point = await reopened.OpenPointAsync(new PointRef("default", DomainA, 1), Ct);
            using var output = new MemoryStream();
            await (await point.OpenDiskAsync("vda", Ct)).CopyToAsync(output, Ct);
            Assert.Equal(image, output.ToArray());
            Assert.True(await store.ExistsAsync(ObjectNames.Config, Ct));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}
