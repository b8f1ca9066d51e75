using Drydock.Nbd.Protocol;
using Drydock.Nbd.Server;
using Drydock.Nbd.Tests.TestSupport;
using Xunit;
using static Drydock.Nbd.Tests.TestSupport.TestCancellation;

namespace Drydock.Nbd.Tests.Server;

/// <summary>The file backend on the real file system (sparse files, SEEK_DATA/SEEK_HOLE, punched holes).</summary>
public sealed class NbdFileBackendTests : IDisposable
{
    private const uint HoleFlags = (uint)(NbdAllocationFlags.Hole | NbdAllocationFlags.Zero);
    private readonly string _directory = Directory.CreateTempSubdirectory("drydock-nbd-file-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public async Task A_new_sparse_file_is_one_hole_and_written_blocks_become_data()
    {
        await using var backend = NbdFileBackend.Create(Path.Combine(_directory, "disk.img"), 1 << 20);
        Assert.Equal([new NbdExtent(0, 1 << 20, HoleFlags)], await backend.GetAllocationAsync(0, 1 << 20, 100, Ct));

        await backend.WriteAsync(65536, new byte[] { 1, 2, 3 }, fua: true, Ct);
        var extents = await backend.GetAllocationAsync(0, 1 << 20, 100, Ct);

        // File systems allocate whole blocks: the data extent holds the write and lies between holes.
        Assert.Equal(3, extents.Count);
        Assert.True(extents[0].IsHole && !extents[1].IsHole && extents[2].IsHole);
        Assert.InRange(extents[1].Offset, 0UL, 65536UL);
        Assert.InRange(extents[1].End, 65539UL, 1UL << 20);
    }

    [Fact]
    public async Task Trim_and_write_zeroes_punch_holes_and_no_hole_keeps_data()
    {
        var path = Path.Combine(_directory, "disk.img");
        await using var backend = NbdFileBackend.Create(path, 1 << 20);
        await backend.WriteAsync(0, ServerData(1 << 20), fua: false, Ct);

        await backend.TrimAsync(0, 65536, fua: false, Ct);
        await backend.WriteZeroesAsync(131072, 65536, noHole: false, fua: false, Ct);
        await backend.WriteZeroesAsync(262144, 65536, noHole: true, fua: true, Ct);
        await backend.FlushAsync(Ct);

        var extents = await backend.GetAllocationAsync(0, 1 << 20, 100, Ct);
        Assert.Equal(
            [
                new NbdExtent(0, 65536, HoleFlags),
                new NbdExtent(65536, 65536, 0),
                new NbdExtent(131072, 65536, HoleFlags),
                new NbdExtent(196608, (1 << 20) - 196608, 0),
            ],
            extents);
        var zeroes = new byte[65536];
        await backend.ReadAsync(262144, zeroes, Ct);
        Assert.All(zeroes, b => Assert.Equal(0, b));
        await backend.ReadAsync(131072, zeroes, Ct);
        Assert.All(zeroes, b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task A_file_export_round_trips_through_the_client_with_its_allocation()
    {
        await using var server = TestServer.Start(listen: false);
        var path = Path.Combine(_directory, "disk.img");
        await using var backend = NbdFileBackend.Create(path, 4 << 20);
        server.Server.AddExport(new NbdExport("file", backend));
        await using var client = await server.ConnectAsync(TestTransport.InProcess, "file", TestServer.Options(NbdContexts.BaseAllocation));
        var data = ServerData(200_000);

        await client.WriteAsync(1 << 20, data, cancellationToken: Ct);
        var back = new byte[data.Length];
        await client.ReadAsync(1 << 20, back, cancellationToken: Ct);
        var map = (await client.MapAsync(cancellationToken: Ct))[NbdContexts.BaseAllocation];

        Assert.Equal(data, back);
        Assert.Equal(3, map.Count);
        Assert.True(map[0].IsHole && !map[1].IsHole && map[2].IsHole);
        Assert.Equal(data, File.ReadAllBytes(path).AsSpan(1 << 20, data.Length).ToArray());
    }

    [Fact]
    public async Task A_file_opened_read_only_is_exported_read_only()
    {
        var path = Path.Combine(_directory, "ro.img");
        await File.WriteAllBytesAsync(path, ServerData(8192), Ct);
        await using var backend = NbdFileBackend.Open(path, readOnly: true);

        var export = new NbdExport("ro", backend);
        var back = new byte[8192];
        await export.ReadAsync(0, back, Ct);

        Assert.True(export.IsReadOnly);
        Assert.True((export.Flags & NbdTransmissionFlags.ReadOnly) != 0);
        Assert.Equal(ServerData(8192), back);
    }

    [Fact]
    public void An_empty_file_cannot_be_exported()
    {
        var path = Path.Combine(_directory, "empty.img");
        File.WriteAllBytes(path, []);

        Assert.Throws<ArgumentException>(() => NbdFileBackend.Open(path));
    }

    private static byte[] ServerData(int length) => NbdServerRoundTripTests.Random(length, seed: 77);
}
