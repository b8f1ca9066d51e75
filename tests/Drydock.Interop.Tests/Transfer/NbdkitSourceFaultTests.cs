using System.Globalization;
using Drydock.Hypervisor;
using Drydock.Nbd;
using Drydock.Repository;
using Drydock.Repository.Format;
using Drydock.Repository.Write;
using Drydock.Storage.FileSystem;
using Drydock.TestKit;
using Drydock.Transfer;
using Drydock.Transfer.Backup;
using Xunit;

namespace Drydock.Interop.Tests.Transfer;

/// <summary>
/// F26 against a real NBD server: nbdkit's eval plugin serves an image and answers EIO for reads that touch one
/// sector, as a failing disk does. The backup must fail naming that offset, never store zeros for it, and publish
/// nothing.
/// </summary>
public sealed class NbdkitSourceFaultTests
{
    private const int MiB = 1024 * 1024;
    private const long Size = 16L * MiB;
    private const long BadSector = (9L * MiB) + (5 * 4096);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task F26_an_EIO_from_the_server_fails_the_backup_naming_the_offset_and_publishes_nothing()
    {
        using var directory = TestDirectory.Create("nbdkit-eio");
        var image = directory.File("disk.raw");
        var content = new byte[Size];
        TestData.Fill(content, 0, seed: 26);
        await File.WriteAllBytesAsync(image, content, Ct);
        var bad = BadSector.ToString(CultureInfo.InvariantCulture);
        // eval's pread gets: method, handle, count, offset. An error is "ERRNO message" on stderr and exit status 1.
        var pread = $"if [ $4 -le {bad} ] && [ $(($4 + $3)) -gt {bad} ]; then echo 'EIO injected bad sector' >&2; exit 1; fi; "
            + $"dd if={image} iflag=skip_bytes,count_bytes skip=$4 count=$3 status=none";
        await using var server = await NbdkitServer.StartAsync(
            new NbdkitOptions
            {
                Plugin = "eval",
                Parameters = [$"get_size=echo {Size}", $"pread={pread}", "can_multi_conn=exit 0"],
                ReadOnly = true,
            },
            Ct);

        var store = new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = directory.CreateSubdirectory("repo"), Durable = false });
        using var repository = await BackupRepository.InitAsync(store, "passphrase", new RepositoryInitOptions { ChunkSize = 1 * MiB, KdfIterations = 1000 }, cancellationToken: Ct);
        var domain = Guid.NewGuid();
        var failure = await Assert.ThrowsAsync<SourceReadException>(async () =>
        {
            await using var session = await repository.BeginPointAsync(new PointRequest { DomainId = domain, DomainName = "vm", WriterId = "test" }, Ct);
            var writer = await session.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "img", VirtualSize = Size, Level = DiskBackupLevel.Full }, Ct);
            var capture = new CaptureDisk { Target = "vda", Endpoint = NbdUri.Parse(server.Uri), VirtualSize = (ulong)Size, Identity = "img" };
            await new BackupPipeline(new BackupPipelineOptions { Connections = 2, ReadsInFlight = 4, RequestTimeout = TimeSpan.FromSeconds(30) })
                .RunAsync(capture, writer, cancellationToken: Ct);
            await session.CommitAsync(Ct);
        });

        Assert.Equal("vda", failure.Disk);
        // The whole 1 MiB chunk request fails: the error names the request's offset (the chunk holding the sector).
        Assert.Equal(9L * MiB, failure.Offset);
        Assert.Contains("offset " + (9 * MiB).ToString(CultureInfo.InvariantCulture), failure.Message, StringComparison.Ordinal);
        Assert.IsType<NbdRequestException>(failure.InnerException);
        Assert.Empty(await repository.ListPointsAsync("default", domain, Ct));
    }
}
