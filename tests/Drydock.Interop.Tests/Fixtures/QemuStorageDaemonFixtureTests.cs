using System.Text.Json.Nodes;
using Drydock.TestKit;
using Xunit;

namespace Drydock.Interop.Tests.Fixtures;

[Collection(QemuStorageDaemonCollection.Name)]
public sealed class QemuStorageDaemonFixtureTests(QemuStorageDaemonFixture fixture) : IDisposable
{
    private const long MiB = 1024 * 1024;

    private readonly TestDirectory _directory = TestDirectory.Create("qsd-test");

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private QemuStorageDaemon Daemon => fixture.Daemon;

    public void Dispose() => _directory.Dispose();

    [Fact]
    public async Task Qmp_greeting_and_commands_work()
    {
        var version = await Daemon.ExecuteAsync("query-version", cancellationToken: Ct);

        Assert.True(Daemon.Qmp.Greeting.GetProperty("QMP").TryGetProperty("version", out _));
        Assert.Equal(7, version.GetProperty("qemu").GetProperty("major").GetInt32());
    }

    [Fact]
    public async Task Qmp_error_is_a_typed_exception_naming_the_command()
    {
        var error = await Assert.ThrowsAsync<QmpException>(() =>
            Daemon.ExecuteAsync("block-dirty-bitmap-add", new JsonObject { ["node"] = "no-such-node", ["name"] = "x" }, Ct));

        Assert.Equal("block-dirty-bitmap-add", error.Command);
        Assert.Equal("GenericError", error.ErrorClass);
        Assert.Contains("no-such-node", error.Description, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bitmap_added_over_qmp_records_a_write_through_the_export()
    {
        var node = fixture.UniqueName("disk");
        var export = fixture.UniqueName("live");
        var image = await QemuImage.CreateQcow2Async(_directory.File("live.qcow2"), 16 * MiB, Ct);
        await Daemon.AddImageNodeAsync(image, node, cancellationToken: Ct);
        try
        {
            await Daemon.AddBitmapAsync(node, "bm0", cancellationToken: Ct);
            var uri = await Daemon.AddNbdExportAsync(export, node, export, writable: true, bitmaps: ["bm0"], cancellationToken: Ct);

            await Daemon.WriteThroughExportAsync(export, 2 * MiB, 128 * 1024, 0x61, Ct);

            var dirty = (await NbdTools.MapAsync(uri, "qemu:dirty-bitmap:bm0", Ct)).Where(e => (e.Type & 1) != 0);
            Assert.Equal([(2 * MiB, 128 * 1024L)], dirty.Select(e => (e.Offset, e.Length)));
            var bitmap = Assert.Single(await Daemon.GetBitmapsAsync(node, Ct));
            Assert.Equal(("bm0", 128 * 1024L, true, true), (bitmap.Name, bitmap.Count, bitmap.Recording, bitmap.Persistent));
            Assert.True(await NbdTools.VerifyPatternAsync(uri, ImageFormat.Raw, 2 * MiB, 128 * 1024, 0x61, Ct));

            await Daemon.RemoveNbdExportAsync(export, Ct);
        }
        finally
        {
            await Daemon.RemoveImageNodeAsync(node, Ct);
        }

        // Closing the node stored the persistent bitmap in the qcow2 file.
        var stored = Assert.Single(await QemuImage.ListBitmapsAsync(image, Ct));
        Assert.Equal("bm0", stored.Name);
    }

    [Fact]
    public async Task Removed_export_is_gone_after_its_deleted_event()
    {
        var node = fixture.UniqueName("disk");
        var export = fixture.UniqueName("gone");
        var image = await QemuImage.CreateQcow2Async(_directory.File("gone.qcow2"), 4 * MiB, Ct);
        await Daemon.AddImageNodeAsync(image, node, cancellationToken: Ct);
        try
        {
            var uri = await Daemon.AddNbdExportAsync(export, node, export, cancellationToken: Ct);
            Assert.Equal(4 * MiB, await NbdTools.SizeAsync(uri, Ct));

            await Daemon.RemoveNbdExportAsync(export, Ct);

            var refused = await NbdTools.RunNbdInfoAsync(["--size", uri], Ct);
            Assert.False(refused.Succeeded);
        }
        finally
        {
            await Daemon.RemoveImageNodeAsync(node, Ct);
        }
    }

    [Fact]
    public async Task Read_only_node_exports_existing_data_and_persistent_bitmap()
    {
        var node = fixture.UniqueName("ro");
        var export = fixture.UniqueName("ro-exp");
        var image = await QemuImage.CreateQcow2Async(_directory.File("ro.qcow2"), 8 * MiB, Ct);
        await QemuImage.AddBitmapAsync(image, "cbt", cancellationToken: Ct);
        await QemuImage.WritePatternAsync(image, ImageFormat.Qcow2, 3 * MiB, MiB, 0x33, Ct);
        await Daemon.AddImageNodeAsync(image, node, readOnly: true, cancellationToken: Ct);
        try
        {
            var uri = await Daemon.AddNbdExportAsync(export, node, export, bitmaps: ["cbt"], cancellationToken: Ct);

            var info = await NbdTools.InfoAsync(uri, Ct);
            var dirty = (await NbdTools.MapAsync(uri, "qemu:dirty-bitmap:cbt", Ct)).Where(e => (e.Type & 1) != 0);

            Assert.True(info.IsReadOnly);
            Assert.Equal([(3 * MiB, MiB)], dirty.Select(e => (e.Offset, e.Length)));
            await Daemon.RemoveNbdExportAsync(export, Ct);
        }
        finally
        {
            await Daemon.RemoveImageNodeAsync(node, Ct);
        }
    }

    [Fact]
    public async Task Separate_daemon_serves_nbd_over_tcp()
    {
        await using var daemon = await QemuStorageDaemon.StartAsync(cancellationToken: Ct);
        var image = await QemuImage.CreateQcow2Async(_directory.File("tcp.qcow2"), 4 * MiB, Ct);
        await daemon.AddImageNodeAsync(image, "disk0", cancellationToken: Ct);
        await daemon.StartNbdServerAsync(ServerTransport.Tcp, cancellationToken: Ct);

        var uri = await daemon.AddNbdExportAsync("exp0", "disk0", "disk", cancellationToken: Ct);

        Assert.StartsWith("nbd://127.0.0.1:", uri, StringComparison.Ordinal);
        Assert.Equal(4 * MiB, await NbdTools.SizeAsync(uri, Ct));
    }

    [Fact]
    public async Task Disposed_daemon_is_stopped_with_its_directory()
    {
        var daemon = await QemuStorageDaemon.StartAsync(cancellationToken: Ct);

        await daemon.DisposeAsync();

        Assert.True(daemon.Process.HasExited);
        Assert.False(daemon.Process.GroupExists());
        Assert.False(Directory.Exists(daemon.DirectoryPath));
    }
}
