using System.Security.Cryptography;
using Drydock.Repository.Format;
using Drydock.Repository.Write;
using Drydock.Storage.Azure;
using Drydock.TestKit.Azurite;
using Xunit;
using static Drydock.Repository.Tests.TestRepo;

namespace Drydock.Repository.Tests;

[CollectionDefinition(AzuriteCollection.Name)]
public sealed class AzuriteCollectionDefinition : AzuriteCollection;

/// <summary>The repository end to end on the Azure backend, against a real Azurite.</summary>
[Collection(AzuriteCollection.Name)]
public sealed class AzureRepositoryTests(AzuriteFixture azurite)
{
    private async Task<AzureBlobStore> StoreAsync(int singleUploadLimit = 32 * 1024 * 1024)
    {
        var store = new AzureBlobStore(
            AzureStorageAccount.Parse(azurite.ConnectionString),
            new AzureBlobStoreOptions { Container = azurite.NewContainerName("repo"), Prefix = "fleet-a", SingleUploadLimit = singleUploadLimit, BlockSize = 16 * 1024 });
        await store.CreateContainerIfNotExistsAsync(Ct);
        return store;
    }

    [Fact]
    public async Task Full_and_incremental_points_round_trip_through_azure_and_reopen_with_only_the_key()
    {
        // A small single-upload limit makes indexes and manifests go through Put Block + Put Block List.
        using var store = await StoreAsync(singleUploadLimit: 8 * 1024);
        var domain = Guid.NewGuid();
        var v1 = Image(8, 61, tail: 999);
        var v2 = (byte[])v1.Clone();
        RandomNumberGenerator.Fill(v2.AsSpan(3 * ChunkSize, 4096));
        using (var repository = await BackupRepository.InitAsync(store, Passphrase, new RepositoryInitOptions { ChunkSize = ChunkSize, KdfIterations = 1000 }, Options(), cancellationToken: Ct))
        {
            await using (var session = await repository.BeginPointAsync(new PointRequest { DomainId = domain, DomainName = "vm", WriterId = "w1" }, Ct))
            {
                var disk = await session.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "img", VirtualSize = v1.Length }, Ct);
                await disk.WriteAllAsync(new MemoryStream(v1), Ct);
                await session.CommitAsync(Ct);
            }

            await using (var session = await repository.BeginPointAsync(new PointRequest { DomainId = domain, DomainName = "vm", WriterId = "w2" }, Ct))
            {
                var disk = await session.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "img", VirtualSize = v2.Length, Level = DiskBackupLevel.Incremental, ParentSequence = 1 }, Ct);
                await disk.WriteChunkAsync(3, v2.AsMemory(3 * ChunkSize, ChunkSize), Ct);
                var manifest = await session.CommitAsync(Ct);
                Assert.Equal(1, manifest.Disks[0].Stats.UploadedChunks);
            }
        }

        using var reopened = await BackupRepository.OpenAsync(store, Passphrase, Options(), cancellationToken: Ct);
        foreach (var (sequence, expected) in new[] { (1L, v1), (2L, v2) })
        {
            var point = await reopened.OpenPointAsync(new PointRef("default", domain, sequence), Ct);
            using var output = new MemoryStream();
            await (await point.OpenDiskAsync("vda", Ct)).CopyToAsync(output, Ct);
            Assert.Equal(expected, output.ToArray());
        }

        Assert.True((await reopened.VerifyAsync(new Maintenance.VerifyOptions(), Ct)).Ok);
    }

    [Fact]
    public async Task A_chunk_deleted_from_azure_fails_the_restore_with_the_range()
    {
        using var store = await StoreAsync();
        var domain = Guid.NewGuid();
        var image = Image(4, 62);
        using var repository = await BackupRepository.InitAsync(store, Passphrase, new RepositoryInitOptions { ChunkSize = ChunkSize, KdfIterations = 1000 }, Options(), cancellationToken: Ct);
        await using (var session = await repository.BeginPointAsync(new PointRequest { DomainId = domain, DomainName = "vm", WriterId = "w" }, Ct))
        {
            var disk = await session.AddDiskAsync(new DiskRequest { Name = "vdb", Identity = "img", VirtualSize = image.Length }, Ct);
            await disk.WriteAllAsync(new MemoryStream(image), Ct);
            await session.CommitAsync(Ct);
        }

        var point = await repository.OpenPointAsync(new PointRef("default", domain, 1), Ct);
        var reader = await point.OpenDiskAsync("vdb", Ct);
        Assert.True(await store.DeleteAsync(ObjectNames.Chunk(reader.IdOf(1)), null, Ct));
        var e = await Assert.ThrowsAsync<ChunkMissingException>(() => reader.CopyToAsync(Stream.Null, Ct));
        Assert.Equal("vdb", e.Disk);
        Assert.Equal(ChunkSize, e.Offset);
    }
}
