using System.Buffers.Binary;
using System.Diagnostics;
using Drydock.TestKit;
using Xunit;

namespace Drydock.Interop.Tests.Fixtures;

public sealed class NbdkitServerFixtureTests : IDisposable
{
    private const long MiB = 1024 * 1024;

    private readonly TestDirectory _directory = TestDirectory.Create("nbdkit-test");

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public void Dispose() => _directory.Dispose();

    [Theory]
    [InlineData(ServerTransport.Unix)]
    [InlineData(ServerTransport.Tcp)]
    public async Task Memory_plugin_is_a_writable_disk_over_the_transport_it_claims(ServerTransport transport)
    {
        await using var server = await NbdkitServer.StartAsync(NbdkitOptions.Memory(8 * MiB) with { Transport = transport }, Ct);

        await NbdTools.QemuIoAsync(server.Uri, ImageFormat.Raw, ["write -P 0x44 1M 64k"], cancellationToken: Ct);

        Assert.Equal(8 * MiB, await NbdTools.SizeAsync(server.Uri, Ct));
        Assert.True(await NbdTools.VerifyPatternAsync(server.Uri, ImageFormat.Raw, MiB, 64 * 1024, 0x44, Ct));
        Assert.True(await NbdTools.VerifyPatternAsync(server.Uri, ImageFormat.Raw, 0, MiB, 0, Ct));
        Assert.StartsWith(transport == ServerTransport.Unix ? "nbd+unix:///?socket=/" : "nbd://127.0.0.1:", server.Uri, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Sparse_random_plugin_has_data_and_holes_in_its_map()
    {
        await using var server = await NbdkitServer.StartAsync(NbdkitOptions.SparseRandom(64 * MiB, percent: 10, seed: 5, runLength: 256 * 1024), Ct);

        var map = await NbdTools.MapAsync(server.Uri, cancellationToken: Ct);

        var data = map.Where(e => (e.Type & 1) == 0).Sum(e => e.Length);
        Assert.Equal(64 * MiB, map.Sum(e => e.Length));
        Assert.InRange(data, 2 * MiB, 20 * MiB);
        Assert.Contains(map, e => e.Type == 3);
    }

    [Fact]
    public async Task Pattern_plugin_holds_each_words_offset()
    {
        await using var server = await NbdkitServer.StartAsync(NbdkitOptions.Pattern(MiB), Ct);
        var copy = _directory.File("pattern.raw");

        await NbdTools.CopyAsync(server.Uri, copy, cancellationToken: Ct);

        var bytes = await File.ReadAllBytesAsync(copy, Ct);
        Assert.Equal(MiB, bytes.Length);
        Assert.Equal(0x1238UL, BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan(0x1238)));
        Assert.Equal((ulong)(MiB - 8), BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan((int)MiB - 8)));
    }

    [Fact]
    public async Task Data_and_file_plugins_serve_their_bytes()
    {
        var raw = await QemuImage.CreateRandomRawAsync(_directory.File("f.raw"), 2 * MiB, seed: 11, Ct);
        await using var data = await NbdkitServer.StartAsync(NbdkitOptions.Data("1 2 3 @0x1000 0xff", size: 8192), Ct);
        await using var file = await NbdkitServer.StartAsync(NbdkitOptions.File(raw) with { ReadOnly = true }, Ct);

        var dataCopy = _directory.File("data.raw");
        await NbdTools.CopyAsync(data.Uri, dataCopy, cancellationToken: Ct);
        var bytes = await File.ReadAllBytesAsync(dataCopy, Ct);

        Assert.Equal(8192, bytes.Length);
        Assert.Equal(new byte[] { 1, 2, 3, 0 }, bytes[..4]);
        Assert.Equal(0xff, bytes[0x1000]);
        Assert.True(await NbdTools.CompareAsync(raw, ImageFormat.Raw, file.Uri, ImageFormat.Raw, cancellationToken: Ct));
        Assert.True((await NbdTools.InfoAsync(file.Uri, Ct)).IsReadOnly);
    }

    [Fact]
    public async Task Error_filter_makes_nbdcopy_fail_with_the_injected_error()
    {
        await using var server = await NbdkitServer.StartAsync(
            NbdkitOptions.Pattern(4 * MiB).WithErrorFilter(rate: 1.0, error: "EIO", operation: "pread"), Ct);

        var result = await NbdTools.CopyAsync(server.Uri, "null:", new NbdCopyOptions { ThrowOnFailure = false }, Ct);

        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("Input/output error", result.StandardError, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Error_filter_with_a_trigger_file_fails_only_while_the_file_exists()
    {
        // The pattern plugin has no holes, so nbdcopy must read every byte.
        var trigger = Path.Combine(_directory.Path, "fail-now");
        await using var faulty = await NbdkitServer.StartAsync(
            NbdkitOptions.Pattern(MiB).WithErrorFilter(rate: 1.0, operation: "pread", triggerFile: trigger), Ct);

        var before = await NbdTools.CopyAsync(faulty.Uri, "null:", new NbdCopyOptions { ThrowOnFailure = false }, Ct);
        await File.WriteAllTextAsync(trigger, "", Ct);
        var during = await NbdTools.CopyAsync(faulty.Uri, "null:", new NbdCopyOptions { ThrowOnFailure = false }, Ct);
        File.Delete(trigger);
        var after = await NbdTools.CopyAsync(faulty.Uri, "null:", new NbdCopyOptions { ThrowOnFailure = false }, Ct);

        Assert.True(before.Succeeded, before.StandardError);
        Assert.False(during.Succeeded);
        Assert.True(after.Succeeded, after.StandardError);
    }

    [Fact]
    public async Task Delay_filter_adds_latency_to_every_read()
    {
        await using var server = await NbdkitServer.StartAsync(NbdkitOptions.Memory(MiB).WithDelay(read: TimeSpan.FromMilliseconds(100)), Ct);
        var stopwatch = Stopwatch.StartNew();

        // Five sequential reads in one qemu-io session: at least five delays.
        await NbdTools.QemuIoAsync(server.Uri, ImageFormat.Raw, ["read 0 4k", "read 4k 4k", "read 8k 4k", "read 12k 4k", "read 16k 4k"], readOnly: true, cancellationToken: Ct);

        Assert.True(stopwatch.Elapsed >= TimeSpan.FromMilliseconds(500), $"took {stopwatch.Elapsed}");
    }

    [Fact]
    public async Task Noextents_filter_turns_a_sparse_map_into_all_data()
    {
        await using var sparse = await NbdkitServer.StartAsync(NbdkitOptions.SparseRandom(16 * MiB, percent: 5, runLength: 256 * 1024), Ct);
        await using var flat = await NbdkitServer.StartAsync(NbdkitOptions.SparseRandom(16 * MiB, percent: 5, runLength: 256 * 1024).WithNoExtents(), Ct);

        var sparseMap = await NbdTools.MapAsync(sparse.Uri, cancellationToken: Ct);
        var flatMap = await NbdTools.MapAsync(flat.Uri, cancellationToken: Ct);

        Assert.True(sparseMap.Count > 1);
        Assert.Equal((0L, 16 * MiB, 0u), (flatMap.Single().Offset, flatMap.Single().Length, flatMap.Single().Type));
    }

    [Fact]
    public async Task Blocksize_policy_and_multi_conn_filters_change_what_the_server_advertises()
    {
        await using var plain = await NbdkitServer.StartAsync(NbdkitOptions.Memory(MiB).WithMultiConn("disable"), Ct);
        await using var limited = await NbdkitServer.StartAsync(
            NbdkitOptions.Memory(MiB).WithBlocksizePolicy(minimum: 4096, preferred: 65536, maximum: 1048576).WithMultiConn("emulate"), Ct);

        var plainInfo = await NbdTools.InfoAsync(plain.Uri, Ct);
        var limitedInfo = await NbdTools.InfoAsync(limited.Uri, Ct);

        Assert.False(plainInfo.CanMultiConn);
        Assert.True(limitedInfo.CanMultiConn);
        Assert.Equal((4096L, 65536L, 1048576L), (limitedInfo.BlockSizeMinimum, limitedInfo.BlockSizePreferred, limitedInfo.BlockSizeMaximum));
    }

    [Fact]
    public async Task Blocksize_filter_splits_large_requests_for_the_plugin()
    {
        await using var server = await NbdkitServer.StartAsync(
            NbdkitOptions.Pattern(4 * MiB).WithBlocksize(minimumBlock: 4096, maximumData: 65536), Ct);
        var copy = _directory.File("split.raw");

        await NbdTools.CopyAsync(server.Uri, copy, new NbdCopyOptions { RequestSize = 1024 * 1024 }, Ct);

        var bytes = await File.ReadAllBytesAsync(copy, Ct);
        Assert.Equal((ulong)(3 * MiB), BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan((int)(3 * MiB))));
    }

    [Fact]
    public async Task Nbd_plugin_proxies_a_qemu_nbd_export()
    {
        var image = await QemuImage.CreateQcow2Async(_directory.File("p.qcow2"), 4 * MiB, Ct);
        await QemuImage.WritePatternAsync(image, ImageFormat.Qcow2, 0, MiB, 0x77, Ct);
        await using var qemu = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, ReadOnly = true }, Ct);
        await using var proxy = await NbdkitServer.StartAsync(NbdkitOptions.Nbd(qemu.SocketPath!, qemu.ExportName) with { ExportName = "proxied" }, Ct);

        Assert.EndsWith("socket=" + proxy.SocketPath, proxy.Uri, StringComparison.Ordinal);
        Assert.Contains("///proxied?", proxy.Uri, StringComparison.Ordinal);
        Assert.True(await NbdTools.VerifyPatternAsync(proxy.Uri, ImageFormat.Raw, 0, MiB, 0x77, Ct));
    }

    [Fact]
    public async Task Bad_plugin_parameters_fail_start_with_nbdkit_stderr()
    {
        var error = await Assert.ThrowsAsync<ServiceStartException>(() =>
            NbdkitServer.StartAsync(new NbdkitOptions { Plugin = "memory", Parameters = ["size=banana"] }, Ct));

        Assert.Contains("nbdkit exited", error.Message, StringComparison.Ordinal);
        Assert.Contains("banana", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Dispose_stops_nbdkit_and_removes_its_directory()
    {
        var server = await NbdkitServer.StartAsync(NbdkitOptions.Memory(MiB), Ct);

        await server.DisposeAsync();

        Assert.True(server.Process.HasExited);
        Assert.False(server.Process.GroupExists());
        Assert.False(Directory.Exists(server.DirectoryPath));
    }
}
