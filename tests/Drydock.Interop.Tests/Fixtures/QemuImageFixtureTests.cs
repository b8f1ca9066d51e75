using Drydock.TestKit;
using Xunit;

namespace Drydock.Interop.Tests.Fixtures;

public sealed class QemuImageFixtureTests : IDisposable
{
    private const long MiB = 1024 * 1024;

    private readonly TestDirectory _directory = TestDirectory.Create("image");

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public void Dispose() => _directory.Dispose();

    [Fact]
    public async Task Qcow2_image_has_the_size_asked_for_and_holds_written_patterns()
    {
        var image = await QemuImage.CreateQcow2Async(_directory.File("a.qcow2"), 16 * MiB, Ct);

        await QemuImage.WritePatternAsync(image, ImageFormat.Qcow2, MiB, 64 * 1024, 0x5a, Ct);

        var info = await NbdTools.ImageInfoAsync(image, ImageFormat.Qcow2, cancellationToken: Ct);
        Assert.Equal("qcow2", info.Format);
        Assert.Equal(16 * MiB, info.VirtualSize);
        Assert.True(await NbdTools.VerifyPatternAsync(image, ImageFormat.Qcow2, MiB, 64 * 1024, 0x5a, Ct));
        Assert.False(await NbdTools.VerifyPatternAsync(image, ImageFormat.Qcow2, MiB, 64 * 1024, 0x5b, Ct));
        Assert.True(await NbdTools.VerifyPatternAsync(image, ImageFormat.Qcow2, 0, MiB, 0, Ct));
    }

    [Fact]
    public async Task Bitmaps_are_added_listed_disabled_and_removed()
    {
        var image = await QemuImage.CreateQcow2Async(_directory.File("b.qcow2"), 8 * MiB, Ct);

        await QemuImage.AddBitmapAsync(image, "b1", cancellationToken: Ct);
        await QemuImage.AddBitmapAsync(image, "b2", granularity: 128 * 1024, disabled: true, cancellationToken: Ct);
        var bitmaps = await QemuImage.ListBitmapsAsync(image, Ct);

        Assert.Equal(["b1", "b2"], bitmaps.Select(b => b.Name));
        Assert.True(bitmaps[0].IsEnabled);
        Assert.Equal(64 * 1024, bitmaps[0].Granularity);
        Assert.False(bitmaps[1].IsEnabled);
        Assert.Equal(128 * 1024, bitmaps[1].Granularity);

        await QemuImage.SetBitmapEnabledAsync(image, "b2", enabled: true, Ct);
        await QemuImage.RemoveBitmapAsync(image, "b1", Ct);
        bitmaps = await QemuImage.ListBitmapsAsync(image, Ct);

        Assert.Equal("b2", Assert.Single(bitmaps).Name);
        Assert.True(bitmaps[0].IsEnabled);
    }

    [Fact]
    public async Task Random_raw_image_is_dense_deterministic_and_position_addressed()
    {
        var a = await QemuImage.CreateRandomRawAsync(_directory.File("a.raw"), 3 * MiB + 5, seed: 42, Ct);
        var b = await QemuImage.CreateRandomRawAsync(_directory.File("b.raw"), 3 * MiB + 5, seed: 42, Ct);
        var c = await QemuImage.CreateRandomRawAsync(_directory.File("c.raw"), 3 * MiB + 5, seed: 43, Ct);

        var bytes = await File.ReadAllBytesAsync(a, Ct);
        Assert.Equal(3 * MiB + 5, bytes.Length);
        Assert.Equal(TestData.Create(0, bytes.Length, 42), bytes);
        Assert.Equal(TestData.Create(12345, 100, 42), bytes.AsSpan(12345, 100).ToArray());
        Assert.True(await NbdTools.CompareAsync(a, ImageFormat.Raw, b, ImageFormat.Raw, cancellationToken: Ct));
        Assert.False(await NbdTools.CompareAsync(a, ImageFormat.Raw, c, ImageFormat.Raw, cancellationToken: Ct));
        // qemu rounds a raw file up to whole sectors: the 507 bytes after the end read as a zero hole.
        var map = await NbdTools.ImageMapAsync(a, ImageFormat.Raw, Ct);
        Assert.True(map[0].Data);
        Assert.True(map[0].Length >= 3 * MiB);
    }

    [Fact]
    public async Task Sparse_raw_image_has_data_exactly_where_it_says()
    {
        var path = _directory.File("sparse.raw");

        var extents = await QemuImage.CreateSparseRawAsync(path, 64 * MiB, dataFraction: 0.05, seed: 7, cancellationToken: Ct);

        var dataBytes = extents.Sum(e => e.Length);
        Assert.InRange(dataBytes, (long)(0.04 * 64 * MiB), (long)(0.06 * 64 * MiB));
        Assert.Equal(64 * MiB, new FileInfo(path).Length);
        var map = await NbdTools.ImageMapAsync(path, ImageFormat.Raw, Ct);
        Assert.Equal(extents, map.Where(e => e.Data).Select(e => (e.Offset, e.Length)));
        var (offset, length) = extents[^1];
        await using var file = File.OpenRead(path);
        var buffer = new byte[length];
        file.Position = offset;
        await file.ReadExactlyAsync(buffer, Ct);
        Assert.Equal(TestData.Create(offset, (int)length, 7), buffer);
    }

    [Fact]
    public async Task Allocated_zero_images_read_as_zeros_but_are_all_data()
    {
        var raw = await QemuImage.CreateAllocatedZeroRawAsync(_directory.File("zero.raw"), 4 * MiB, Ct);
        var qcow2 = await QemuImage.CreateAllocatedZeroQcow2Async(_directory.File("zero.qcow2"), 4 * MiB, Ct);

        var rawMap = await NbdTools.ImageMapAsync(raw, ImageFormat.Raw, Ct);
        var qcow2Map = await NbdTools.ImageMapAsync(qcow2, ImageFormat.Qcow2, Ct);

        Assert.Equal((0L, 4 * MiB, true), (rawMap.Single().Offset, rawMap.Single().Length, rawMap.Single().Data));
        Assert.All(qcow2Map, e => Assert.True(e.Data && !e.Zero));
        Assert.True(await NbdTools.VerifyPatternAsync(raw, ImageFormat.Raw, 0, 4 * MiB, 0, Ct));
        Assert.True(await NbdTools.VerifyPatternAsync(qcow2, ImageFormat.Qcow2, 0, 4 * MiB, 0, Ct));
    }

    [Fact]
    public async Task Random_raw_converts_to_an_identical_qcow2()
    {
        var raw = await QemuImage.CreateRandomRawAsync(_directory.File("r.raw"), 2 * MiB, seed: 3, Ct);

        var qcow2 = await QemuImage.ConvertAsync(raw, ImageFormat.Raw, _directory.File("r.qcow2"), ImageFormat.Qcow2, Ct);

        Assert.True(await NbdTools.CompareAsync(raw, ImageFormat.Raw, qcow2, ImageFormat.Qcow2, cancellationToken: Ct));
    }
}
