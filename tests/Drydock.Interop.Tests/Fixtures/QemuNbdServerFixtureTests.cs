using Drydock.Nbd;
using Drydock.TestKit;
using Xunit;

namespace Drydock.Interop.Tests.Fixtures;

public sealed class QemuNbdServerFixtureTests : IDisposable
{
    private const long MiB = 1024 * 1024;

    private readonly TestDirectory _directory = TestDirectory.Create("qn-test");

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public void Dispose() => _directory.Dispose();

    [Theory]
    [InlineData(ServerTransport.Unix)]
    [InlineData(ServerTransport.Tcp)]
    public async Task Serves_the_image_over_the_transport_it_claims(ServerTransport transport)
    {
        var image = await PatternedImageAsync("t.qcow2");

        await using var server = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, Transport = transport }, Ct);

        var info = await NbdTools.InfoAsync(server.Uri, Ct);
        Assert.Equal("disk", info.ExportName);
        Assert.Equal(16 * MiB, info.Size);
        Assert.True(await NbdTools.VerifyPatternAsync(server.Uri, ImageFormat.Raw, 0, 4 * MiB, 0x01, Ct));
        Assert.StartsWith(transport == ServerTransport.Unix ? "nbd+unix:///disk?socket=/" : "nbd://127.0.0.1:", server.Uri, StringComparison.Ordinal);
        Assert.Equal(transport == ServerTransport.Unix, server.SocketPath is not null);
        Assert.Equal(transport == ServerTransport.Tcp, server.Port is not null);
    }

    [Fact]
    public async Task Fixture_uri_parses_with_NbdUri_and_its_canonical_form_works_with_nbdinfo()
    {
        var image = await QemuImage.CreateQcow2Async(_directory.File("u.qcow2"), 4 * MiB, Ct);
        await using var server = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, ExportName = "my disk/1" }, Ct);

        var uri = NbdUri.Parse(server.Uri);

        Assert.Equal(server.SocketPath, uri.SocketPath);
        Assert.Equal("my disk/1", uri.ExportName);
        Assert.Equal(4 * MiB, await NbdTools.SizeAsync(uri.ToString(), Ct));
        Assert.Equal(["my disk/1"], await NbdTools.ListExportsAsync(uri.ToString(), Ct));
    }

    [Fact]
    public async Task Bitmap_context_shows_exactly_the_range_written_after_the_bitmap_was_added()
    {
        var image = await PatternedImageAsync("bm.qcow2");
        await QemuImage.AddBitmapAsync(image, "since-full", cancellationToken: Ct);
        await QemuImage.WritePatternAsync(image, ImageFormat.Qcow2, MiB, 64 * 1024, 0x02, Ct);

        await using var server = await QemuNbdServer.StartAsync(
            new QemuNbdOptions { ImagePath = image, ReadOnly = true, Bitmaps = ["since-full"] }, Ct);

        var dirty = (await NbdTools.MapAsync(server.Uri, "qemu:dirty-bitmap:since-full", Ct)).Where(e => (e.Type & 1) != 0);
        Assert.Equal([(MiB, 64 * 1024L)], dirty.Select(e => (e.Offset, e.Length)));
        var info = await NbdTools.InfoAsync(server.Uri, Ct);
        Assert.Contains("qemu:dirty-bitmap:since-full", info.MetaContexts);
        Assert.Contains("base:allocation", info.MetaContexts);
    }

    [Fact]
    public async Task Base_allocation_shows_data_and_holes()
    {
        var image = await PatternedImageAsync("alloc.qcow2");
        await using var server = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, ReadOnly = true }, Ct);

        var map = await NbdTools.MapAsync(server.Uri, cancellationToken: Ct);

        Assert.Equal([(0L, 4 * MiB, 0u), (4 * MiB, 12 * MiB, 3u)], map.Select(e => (e.Offset, e.Length, e.Type)));
        Assert.Equal(map, NbdTools.ParseMapText(await NbdTools.MapTextAsync(server.Uri, cancellationToken: Ct)));
        Assert.Equal(["data", "hole,zero"], map.Select(e => e.Description));
    }

    [Fact]
    public async Task Shared_clients_advertise_multi_conn_and_one_client_does_not()
    {
        var image = await QemuImage.CreateQcow2Async(_directory.File("mc.qcow2"), 4 * MiB, Ct);
        await using var multi = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, ReadOnly = true, SharedClients = 8 }, Ct);
        await using var single = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, ReadOnly = true, SharedClients = null, ForceShare = true }, Ct);

        Assert.True((await NbdTools.InfoAsync(multi.Uri, Ct)).CanMultiConn);
        Assert.False((await NbdTools.InfoAsync(single.Uri, Ct)).CanMultiConn);
    }

    [Fact]
    public async Task Read_only_export_refuses_writes_and_writable_export_takes_them()
    {
        var image = await QemuImage.CreateQcow2Async(_directory.File("rw.qcow2"), 4 * MiB, Ct);

        await using (var readOnly = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, ReadOnly = true }, Ct))
        {
            Assert.True((await NbdTools.InfoAsync(readOnly.Uri, Ct)).IsReadOnly);
            var write = await NbdTools.QemuIoAsync(readOnly.Uri, ImageFormat.Raw, ["write -P 7 0 4k"], throwOnFailure: false, cancellationToken: Ct);
            Assert.False(write.Succeeded);
        }

        await using (var writable = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image }, Ct))
        {
            Assert.False((await NbdTools.InfoAsync(writable.Uri, Ct)).IsReadOnly);
            await NbdTools.QemuIoAsync(writable.Uri, ImageFormat.Raw, ["write -P 7 0 4k"], cancellationToken: Ct);
        }

        Assert.True(await NbdTools.VerifyPatternAsync(image, ImageFormat.Qcow2, 0, 4096, 7, Ct));
    }

    [Fact]
    public async Task Force_share_serves_an_image_another_process_holds_open_for_writing()
    {
        var image = await PatternedImageAsync("held.qcow2");
        await using var holder = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image }, Ct);

        // Without force-share the second opener hits QEMU's image lock.
        var refused = await Assert.ThrowsAsync<ServiceStartException>(() =>
            QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, ReadOnly = true }, Ct));
        await using var shared = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, ReadOnly = true, ForceShare = true }, Ct);

        Assert.Contains("lock", refused.Message, StringComparison.OrdinalIgnoreCase);
        Assert.True(await NbdTools.VerifyPatternAsync(shared.Uri, ImageFormat.Raw, 0, 4 * MiB, 0x01, Ct));
    }

    [Fact]
    public async Task Non_persistent_server_exits_after_its_first_client()
    {
        var image = await QemuImage.CreateQcow2Async(_directory.File("np.qcow2"), 4 * MiB, Ct);
        await using var server = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, Persistent = false }, Ct);

        Assert.Equal(4 * MiB, await NbdTools.SizeAsync(server.Uri, Ct));
        await server.Process.WaitForExitAsync(Ct).WaitAsync(TimeSpan.FromSeconds(30), Ct);

        Assert.Equal(0, server.Process.ExitCode);
    }

    [Fact]
    public async Task Dispose_stops_the_server_and_removes_its_directory()
    {
        var image = await QemuImage.CreateQcow2Async(_directory.File("d.qcow2"), 4 * MiB, Ct);
        var server = await QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image }, Ct);

        await server.DisposeAsync();

        Assert.True(server.Process.HasExited);
        Assert.False(server.Process.GroupExists());
        Assert.False(Directory.Exists(server.DirectoryPath));
        var refused = await NbdTools.RunNbdInfoAsync(["--size", server.Uri], Ct);
        Assert.False(refused.Succeeded);
    }

    [Fact]
    public async Task Startup_failure_reports_qemu_nbd_stderr()
    {
        var error = await Assert.ThrowsAsync<ServiceStartException>(() =>
            QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = _directory.File("missing.qcow2") }, Ct));

        Assert.Contains("qemu-nbd exited", error.Message, StringComparison.Ordinal);
        Assert.Contains("missing.qcow2", error.Message, StringComparison.Ordinal);
    }

    private async Task<string> PatternedImageAsync(string name)
    {
        var image = await QemuImage.CreateQcow2Async(_directory.File(name), 16 * MiB, Ct);
        await QemuImage.WritePatternAsync(image, ImageFormat.Qcow2, 0, 4 * MiB, 0x01, Ct);
        return image;
    }
}
