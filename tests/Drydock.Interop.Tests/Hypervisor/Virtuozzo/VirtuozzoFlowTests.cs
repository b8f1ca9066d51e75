using Drydock.Hypervisor;
using Drydock.Hypervisor.Qemu;
using Drydock.Hypervisor.Virtuozzo;
using Drydock.Nbd;
using Drydock.Nbd.Client;
using Drydock.TestKit;
using Xunit;

namespace Drydock.Interop.Tests.Hypervisor.Virtuozzo;

/// <summary>
/// The Virtuozzo driver's backup and restore flows, run through <see cref="QemuXApiAdapter"/> against the QEMU driver and
/// a real qemu-storage-daemon (no Virtuozzo host exists here): snapshot → export → read → stop → delete, incremental
/// since the snapshot's checkpoint, abandon removes the checkpoint, and the restore flow (started paused, writable
/// export, stop, resume).
/// </summary>
public sealed class VirtuozzoFlowTests
{
    private const long MiB = 1024 * 1024;

    [Fact]
    public async Task Backup_flow_snapshot_export_read_stop_delete_then_incremental_since_the_snapshots_checkpoint()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await QsdDomain.StartAsync(ct);
        var adapter = new QemuXApiAdapter(domain.Qemu);
        await using var driver = new VirtuozzoDriver(adapter, new VirtuozzoDriverOptions { FleeceDirectory = domain.Directory.CreateSubdirectory("vz-fleece") });
        await domain.WriteAsync("vda", 0, 4 * MiB, 0x11, ct);

        var full = await driver.BeginCaptureAsync(CaptureRequest.Full(domain.Id, ["vda", "vdb"], "drydock-vz-1"), ct);
        Assert.Equal("drydock-vz-1", full.Id);
        await domain.WriteAsync("vda", 0, 1 * MiB, 0x22, ct);
        Assert.All(await ReadAsync(full.Disk("vda").Endpoint, 0, (int)(4 * MiB), ct), b => Assert.Equal(0x11, b));
        await Assert.ThrowsAsync<DomainBusyException>(() => driver.BeginCaptureAsync(CaptureRequest.Full(domain.Id, ["vdb"]), ct));
        Assert.Equal("drydock-vz-1", Assert.Single(await driver.ListCapturesAsync(domain.Id, ct)).Id);
        Assert.True(await driver.ReleaseCaptureAsync(domain.Id, full.Id, CaptureOutcome.Committed, ct));
        Assert.Equal(["virDomainBlockSnapshotXCreateXML", "virDomainBlockExportXStart", "virDomainBlockExportXStop", "virDomainBlockSnapshotXDelete"], adapter.Calls);
        Assert.Contains(await driver.ListCheckpointsAsync(domain.Id, ct), c => c.Name == "drydock-vz-1");

        await domain.WriteAsync("vda", 5 * MiB, 64 * 1024, 0x33, ct);
        var incremental = await driver.BeginCaptureAsync(CaptureRequest.Since(domain.Id, "drydock-vz-1", ["vda", "vdb"], "drydock-vz-2"), ct);
        var vda = incremental.Disk("vda");
        Assert.Equal("drydock-vz-1", vda.SinceCheckpoint);
        Assert.NotNull(vda.ChangedBlocksContext);
        // Changes since the checkpoint taken with the full: the write made while it was read, and the one after.
        Assert.Equal([(0L, 1 * MiB), (5 * MiB, 64 * 1024L)], await DirtyAsync(vda, ct));
        Assert.Empty(await DirtyAsync(incremental.Disk("vdb"), ct));

        // Abandoned: the snapshot goes and so does the checkpoint it created (virDomainBlockCheckpointXRemove).
        Assert.True(await driver.ReleaseCaptureAsync(domain.Id, incremental.Id, CaptureOutcome.Abandoned, ct));
        Assert.Equal("virDomainBlockCheckpointXRemove", adapter.Calls[^1]);
        Assert.Equal(["drydock-vz-1"], (await driver.ListCheckpointsAsync(domain.Id, ct)).Select(c => c.Name));
        Assert.Empty(await driver.ListCapturesAsync(domain.Id, ct));
        Assert.False(await driver.ReleaseCaptureAsync(domain.Id, incremental.Id, CaptureOutcome.Abandoned, ct));

        // A base that does not exist means full, with the reason.
        var missing = await driver.BeginCaptureAsync(CaptureRequest.Since(domain.Id, "drydock-vz-none", ["vda"]), ct);
        Assert.Equal(FullReadCode.CheckpointMissing, missing.Disk("vda").FullReason?.Code);
        await driver.ReleaseCaptureAsync(domain.Id, missing.Id, CaptureOutcome.Abandoned, ct);
    }

    [Fact]
    public async Task Restore_flow_starts_paused_exports_writable_stops_and_resumes()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await QsdDomain.StartAsync(ct);
        var adapter = new QemuXApiAdapter(domain.Qemu);
        await using var driver = new VirtuozzoDriver(adapter, new VirtuozzoDriverOptions { FleeceDirectory = domain.Directory.CreateSubdirectory("vz-fleece") });

        await Assert.ThrowsAsync<DomainStateException>(() => driver.OpenRestoreExportAsync(domain.Id, ["vda"], ct));
        await driver.DestroyAsync(domain.Id, ct);
        var restore = await driver.OpenRestoreExportAsync(domain.Id, ["vda"], ct);
        Assert.Equal(DomainState.Paused, (await driver.GetDomainAsync(domain.Id, ct)).State);
        await using (var client = await NbdClient.ConnectAsync(Assert.Single(restore.Disks).Endpoint, cancellationToken: ct))
        {
            Assert.False(client.Export.IsReadOnly);
            var data = new byte[1 * MiB];
            data.AsSpan().Fill(0x5a);
            await client.WriteAsync(8 * MiB, data, cancellationToken: ct);
            await client.FlushAsync(ct);
        }

        Assert.True(await driver.CloseRestoreExportAsync(domain.Id, restore.Id, ct));
        await driver.ResumeAsync(domain.Id, ct);
        Assert.Equal(DomainState.Running, (await driver.GetDomainAsync(domain.Id, ct)).State);
        Assert.All(await domain.ReadLiveAsync("vda", 8 * MiB, (int)MiB, ct), b => Assert.Equal(0x5a, b));
        Assert.Equal(["virDomainBlockExportXStart", "virDomainBlockExportXStop"], adapter.Calls);
    }

    private static async Task<byte[]> ReadAsync(NbdUri endpoint, ulong offset, int length, CancellationToken ct)
    {
        await using var client = await NbdClient.ConnectAsync(endpoint, cancellationToken: ct);
        var buffer = new byte[length];
        await client.ReadAsync(offset, buffer, ct);
        return buffer;
    }

    private static async Task<List<(long Offset, long Length)>> DirtyAsync(CaptureDisk disk, CancellationToken ct)
    {
        var options = new NbdClientOptions();
        options.MetaContexts.Add(disk.ChangedBlocksContext!);
        await using var client = await NbdClient.ConnectAsync(disk.Endpoint, options, ct);
        var map = await client.MapAsync([disk.ChangedBlocksContext!], cancellationToken: ct);
        return [.. map[disk.ChangedBlocksContext!].Where(e => e.IsDirty).Select(e => ((long)e.Offset, (long)e.Length))];
    }

    /// <summary>A qemu-storage-daemon "domain" launched by the QEMU driver, with guest IO through its disks' front exports.</summary>
    private sealed class QsdDomain : IAsyncDisposable
    {
        private readonly QemuDomainOptions _options;

        private QsdDomain(TestDirectory directory, QemuDomainOptions options, QemuDriver qemu)
        {
            Directory = directory;
            _options = options;
            Qemu = qemu;
        }

        public TestDirectory Directory { get; }

        public QemuDriver Qemu { get; }

        public string Id => _options.Id;

        public static async Task<QsdDomain> StartAsync(CancellationToken ct)
        {
            var directory = TestDirectory.Create("vz-flow");
            var domain = new QemuDomainOptions
            {
                Id = "vz-flow",
                QmpSocketPath = directory.SocketPath("qmp.sock"),
                NbdSocketPath = directory.SocketPath("nbd.sock"),
                FleeceDirectory = directory.CreateSubdirectory("fleece"),
                PidFile = directory.File("qsd.pid"),
                Launch = new QemuLaunchOptions(),
            };
            foreach (var target in new[] { "vda", "vdb" })
            {
                domain.Disks.Add(new QemuDiskOptions
                {
                    Target = target,
                    NodeName = "fmt-" + target,
                    FrontNodeName = "front-" + target,
                    ImagePath = await QemuImage.CreateQcow2Async(directory.File(target + ".qcow2"), 16 * MiB, ct),
                    GuestExportName = target,
                });
            }

            var options = new QemuDriverOptions { HostName = "vz-adapter-host" };
            options.Domains.Add(domain);
            var qemu = new QemuDriver(options);
            await qemu.StartAsync(domain.Id, paused: false, ct);
            return new QsdDomain(directory, domain, qemu);
        }

        public async Task WriteAsync(string target, long offset, long length, byte pattern, CancellationToken ct)
        {
            await using var guest = await NbdClient.ConnectAsync(NbdUri.ForUnixSocket(_options.NbdSocketPath, target), cancellationToken: ct);
            var data = new byte[length];
            data.AsSpan().Fill(pattern);
            await guest.WriteAsync((ulong)offset, data, cancellationToken: ct);
            await guest.FlushAsync(ct);
        }

        public async Task<byte[]> ReadLiveAsync(string target, long offset, int length, CancellationToken ct) =>
            await ReadAsync(NbdUri.ForUnixSocket(_options.NbdSocketPath, target), (ulong)offset, length, ct);

        public async ValueTask DisposeAsync()
        {
            try
            {
                await Qemu.DestroyAsync(Id);
            }
            catch (HypervisorException)
            {
                // Already down.
            }

            await Qemu.DisposeAsync();
            Directory.Dispose();
        }
    }
}
