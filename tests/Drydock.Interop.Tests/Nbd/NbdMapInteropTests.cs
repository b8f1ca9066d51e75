using Xunit;
using Drydock.Nbd.Protocol;
using Drydock.TestKit;

namespace Drydock.Interop.Tests.Nbd;

/// <summary><c>drydock nbd map</c> against real servers must report exactly what nbdinfo reports.</summary>
public sealed class NbdMapInteropTests
{
    private const long MiB = 1024 * 1024;

    [Fact]
    public async Task Map_matches_nbdinfo_for_allocation_and_dirty_bitmap_served_by_qemu_nbd()
    {
        var ct = TestContext.Current.CancellationToken;
        using var directory = TestDirectory.Create("map-qemu-nbd");
        var image = await QemuImage.CreateQcow2Async(directory.File("disk.qcow2"), 64 * MiB, ct);
        await QemuImage.WritePatternAsync(image, ImageFormat.Qcow2, 0, 4 * MiB, 0x11, ct);
        await QemuImage.WriteZeroesAsync(image, ImageFormat.Qcow2, 40 * MiB, 2 * MiB, unmap: false, ct);
        await QemuImage.AddBitmapAsync(image, "since-full", cancellationToken: ct);
        await QemuImage.WritePatternAsync(image, ImageFormat.Qcow2, 1 * MiB, 64 * 1024, 0x22, ct);
        await QemuImage.WritePatternAsync(image, ImageFormat.Qcow2, 20 * MiB, 1 * MiB, 0x33, ct);
        await QemuImage.DiscardAsync(image, ImageFormat.Qcow2, 2 * MiB, 1 * MiB, ct);
        await using var server = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, ReadOnly = true, Bitmaps = ["since-full"] }, ct);

        foreach (var context in new[] { NbdContexts.BaseAllocation, NbdContexts.DirtyBitmap("since-full") })
        {
            var ours = await MapWithDrydockAsync(server.Uri, context);
            var theirs = await NbdTools.MapAsync(server.Uri, context, ct);
            Assert.Equal(CliRunner.Normalize(theirs.Select(e => (e.Offset, e.Length, e.Type))), ours);
        }

        // The bitmap covers what changed after it was added, and nothing else.
        var dirty = (await MapWithDrydockAsync(server.Uri, NbdContexts.DirtyBitmap("since-full"))).Where(e => e.Type == 1).ToList();
        Assert.Equal([(1 * MiB, 64 * 1024L, 1u), (2 * MiB, 1 * MiB, 1u), (20 * MiB, 1 * MiB, 1u)], dirty);
    }

    [Fact]
    public async Task Map_matches_nbdinfo_for_allocation_and_a_bitmap_recorded_by_qemu_storage_daemon()
    {
        var ct = TestContext.Current.CancellationToken;
        using var directory = TestDirectory.Create("map-qsd");
        var image = await QemuImage.CreateQcow2Async(directory.File("disk.qcow2"), 32 * MiB, ct);
        await QemuImage.WritePatternAsync(image, ImageFormat.Qcow2, 0, 8 * MiB, 0x44, ct);
        await using var daemon = await QemuStorageDaemon.StartAsync(cancellationToken: ct);
        await daemon.AddImageNodeAsync(image, "disk0", cancellationToken: ct);
        await daemon.AddBitmapAsync("disk0", "cp1", persistent: true, granularity: 64 * 1024, cancellationToken: ct);
        await daemon.StartNbdServerAsync(cancellationToken: ct);
        var uri = await daemon.AddNbdExportAsync("exp0", "disk0", "live", writable: true, bitmaps: ["cp1"], cancellationToken: ct);

        // Writes through the export are what the bitmap records (a guest's writes, in a real VM).
        await daemon.WriteThroughExportAsync("live", 3 * MiB, 128 * 1024, 0x55, ct);
        await daemon.WriteThroughExportAsync("live", (10 * MiB) + 4096, 4096, 0x66, ct);

        foreach (var name in new[] { NbdContexts.BaseAllocation, NbdContexts.DirtyBitmap("cp1") })
        {
            var drydockMap = await MapWithDrydockAsync(uri, name);
            var nbdinfoMap = await NbdTools.MapAsync(uri, name, ct);
            Assert.Equal(CliRunner.Normalize(nbdinfoMap.Select(e => (e.Offset, e.Length, e.Type))), drydockMap);
        }

        var ours = await MapWithDrydockAsync(uri, NbdContexts.DirtyBitmap("cp1"));

        // At 64 KiB granularity: the 128 KiB write is two granules, the 4 KiB write dirties one granule.
        Assert.Equal([(3 * MiB, 128 * 1024L, 1u), (10 * MiB, 64 * 1024L, 1u)], ours.Where(e => e.Type == 1).ToList());
    }

    [Fact]
    public async Task Map_of_a_bitmap_the_server_does_not_offer_fails_and_says_a_full_read_is_needed()
    {
        var ct = TestContext.Current.CancellationToken;
        using var directory = TestDirectory.Create("map-missing");
        var image = await QemuImage.CreateQcow2Async(directory.File("disk.qcow2"), 8 * MiB, ct);
        await using var server = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, ReadOnly = true }, ct);

        var result = await CliRunner.RunAsync("nbd", "map", "--context", "qemu:dirty-bitmap:gone", server.Uri);

        Assert.Equal(1, result.ExitCode);
        Assert.Contains("qemu:dirty-bitmap:gone", result.Error, StringComparison.Ordinal);
        Assert.Contains("read it in full", result.Error, StringComparison.Ordinal);
        Assert.Empty(result.Output);
    }

    [Fact]
    public async Task Map_matches_nbdinfo_on_nbdkit_sparse_random_with_many_extents()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var server = await NbdkitServer.StartAsync(NbdkitOptions.SparseRandom(256 * MiB, percent: 5, seed: 7, runLength: 64 * 1024), ct);

        var ours = await MapWithDrydockAsync(server.Uri, NbdContexts.BaseAllocation);
        var theirs = await NbdTools.MapAsync(server.Uri, NbdContexts.BaseAllocation, ct);

        Assert.True(ours.Count > 10, $"sparse-random should give many extents, got {ours.Count}");
        Assert.Equal(CliRunner.Normalize(theirs.Select(e => (e.Offset, e.Length, e.Type))), ours);
    }

    private static async Task<List<(long Offset, long Length, uint Type)>> MapWithDrydockAsync(string uri, string context)
    {
        var result = await CliRunner.RunAsync("nbd", "map", "--json", "--context", context, uri);
        Assert.True(result.ExitCode == 0, $"drydock nbd map failed: {result.Error}");
        using var json = result.Json();
        return CliRunner.Normalize(json.RootElement.EnumerateArray().Select(e =>
            (e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("type").GetUInt32())));
    }
}
