using System.Globalization;
using System.Text.Json.Nodes;
using Drydock.Hypervisor;
using Drydock.Hypervisor.Qemu;
using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Drydock.Repository;
using Drydock.Storage.FileSystem;
using Drydock.TestKit;
using Drydock.Transfer.Chain;
using Drydock.Transfer.Jobs;
using Drydock.Transfer.Restore;
using Xunit;

namespace Drydock.Interop.Tests.Hypervisor;

/// <summary>
/// The QEMU driver attached to a real QEMU virtual machine (TCG, stopped before the guest runs: no CPU burnt), whose
/// disk is a virtio-blk device on a raw front node. Guest writes go through the device (HMP <c>qemu-io -d</c> on the
/// device's backend), as a guest's would: they must pass the snapshot filter.
/// </summary>
public sealed class QemuVmInteropTests
{
    private const int MiB = 1024 * 1024;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task A_virtual_machines_device_writes_go_through_the_snapshot_and_are_tracked()
    {
        using var directory = TestDirectory.Create("qemu-vm");
        await using var vm = await VirtualMachine.StartAsync(directory, Ct);
        var (domain, image, harness, driver) = (vm.Domain, vm.Image, vm.Harness, vm.Driver);

        Task GuestWriteAsync(long offset, int length, byte pattern) => vm.GuestWriteAsync(offset, length, pattern);

        // Stopped before the guest ran: QEMU's run state says paused.
        Assert.Equal(DomainState.Paused, (await driver.GetDomainAsync("vm-1", Ct)).State);

        await GuestWriteAsync(0, 4 * MiB, 0x11);
        var c1 = DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch);
        var full = await driver.BeginCaptureAsync(CaptureRequest.Full("vm-1", ["vda"], c1), Ct);
        await GuestWriteAsync(1 * MiB, 64 * 1024, 0x22); // after the instant: the capture must not see it
        await using (var client = await NbdClient.ConnectAsync(full.Disk("vda").Endpoint, cancellationToken: Ct))
        {
            var read = new byte[4 * MiB];
            await client.ReadAsync(0, read, Ct);
            Assert.All(read, b => Assert.Equal(0x11, b));
        }

        await driver.ReleaseCaptureAsync("vm-1", full.Id, CaptureOutcome.Committed, Ct);

        var incremental = await driver.BeginCaptureAsync(CaptureRequest.Since("vm-1", c1, ["vda"]), Ct);
        var disk = incremental.Disk("vda");
        var mapOptions = new NbdClientOptions();
        mapOptions.MetaContexts.Add(disk.ChangedBlocksContext!);
        await using (var client = await NbdClient.ConnectAsync(disk.Endpoint, mapOptions, Ct))
        {
            var dirty = (await client.MapAsync([disk.ChangedBlocksContext!], cancellationToken: Ct))[disk.ChangedBlocksContext!]
                .Where(e => (e.Flags & NbdContexts.DirtyFlag) != 0).Select(e => (e.Offset, e.Length)).ToList();
            Assert.Equal([(1UL * MiB, 64UL * 1024)], dirty);
            var changed = new byte[64 * 1024];
            await client.ReadAsync(1 * MiB, changed, Ct);
            Assert.All(changed, b => Assert.Equal(0x22, b));
        }

        await driver.ReleaseCaptureAsync("vm-1", incremental.Id, CaptureOutcome.Abandoned, Ct);
        Assert.Empty(await driver.ListCapturesAsync("vm-1", Ct));
        Assert.Empty(Directory.EnumerateFileSystemEntries(domain.FleeceDirectory));
        var graph = await harness.ExecuteAsync("x-debug-query-block-graph", cancellationToken: Ct);
        Assert.Equal(["/machine/peripheral/vda/virtio-backend", "fmt-vda", "fmt-vda-file", "front-vda"],
            graph.GetProperty("nodes").EnumerateArray().Select(n => n.GetProperty("name").GetString()).Order(StringComparer.Ordinal));

        // Destroy through the driver (it knows the pid): SIGTERM, and QEMU stores the bitmap on the way out.
        var events = driver.WatchEventsAsync(Ct).GetAsyncEnumerator(Ct);
        await driver.DestroyAsync("vm-1", Ct);
        Assert.True(await events.MoveNextAsync());
        Assert.Equal(DomainEventKind.Stopped, events.Current.Kind);
        await events.DisposeAsync();
        Assert.Contains(await QemuImage.ListBitmapsAsync(image, Ct), b => b.Name == c1);
    }

    [Fact]
    public async Task Backup_and_changed_only_restore_into_the_paused_vm_are_byte_exact_and_leave_no_export_or_nbd_server()
    {
        using var directory = TestDirectory.Create("qemu-vm-restore");
        await using var vm = await VirtualMachine.StartAsync(directory, Ct);
        using var repository = await BackupRepository.InitAsync(
            new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = directory.CreateSubdirectory("repository"), Durable = false }),
            "correct horse battery staple",
            new RepositoryInitOptions { ChunkSize = 64 * 1024, KdfIterations = 1000 },
            cancellationToken: Ct);
        await vm.GuestWriteAsync(0, 4 * MiB, 0x11);
        await vm.GuestWriteAsync(40 * MiB, 1 * MiB, 0x33);

        var backup = await new BackupJob(vm.Driver, repository).RunAsync(new BackupJobRequest { Domain = "vm-1", Level = RequestedLevel.Full }, cancellationToken: Ct);
        // The NBD server the driver started for the capture is gone with the capture: the operator can start one.
        await vm.AssertNoExportAndNbdServerIsFreeAsync();

        // Changes after the point, then a changed-only restore into the VM, paused as the operator leaves it (QMP stop;
        // here it never ran: -S).
        await vm.GuestWriteAsync(1 * MiB, 64 * 1024, 0x22);
        await vm.GuestWriteAsync(40 * MiB, 4096, 0x44);
        Assert.Equal(DomainState.Paused, (await vm.Driver.GetDomainAsync("vm-1", Ct)).State);
        var restore = new RestoreJob(repository);
        var result = await restore.IntoDomainAsync(new RestoreJobRequest { Domain = "vm-1" }, vm.Driver, "vm-1", changedOnly: true, cancellationToken: Ct);
        var disk = Assert.Single(result.Disks).Result;
        Assert.Equal(2, disk.ChunksWritten + disk.ChunksZeroed);
        await vm.AssertNoExportAndNbdServerIsFreeAsync();
        var graph = await vm.Harness.ExecuteAsync("x-debug-query-block-graph", cancellationToken: Ct);
        Assert.Equal(["/machine/peripheral/vda/virtio-backend", "fmt-vda", "fmt-vda-file", "front-vda"],
            graph.GetProperty("nodes").EnumerateArray().Select(n => n.GetProperty("name").GetString()).Order(StringComparer.Ordinal));

        // The guest device reads the point again, and the image equals the point byte for byte.
        var read = await vm.Harness.ExecuteAsync("human-monitor-command", new JsonObject
        {
            ["command-line"] = "qemu-io -d /machine/peripheral/vda/virtio-backend \"read -P 0x11 1048576 65536\"",
        }, Ct);
        Assert.DoesNotContain("fail", read.GetString(), StringComparison.OrdinalIgnoreCase);
        var expected = await restore.ToDirectoryAsync(new RestoreJobRequest { Domain = "vm-1", Sequence = backup.Point.Sequence }, directory.CreateSubdirectory("expected"), DiskImageFormat.Raw, cancellationToken: Ct);
        await vm.Driver.DestroyAsync("vm-1", Ct);
        var compare = await ProcessRunner.RunAsync("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", expected.Disks[0].Destination, vm.Image], ProcessRunOptions.Default with { ThrowOnNonZeroExit = false }, Ct);
        Assert.True(compare.ExitCode == 0, compare.StandardOutput + compare.StandardError);
    }

    /// <summary>A QEMU virtual machine stopped before its guest runs (<c>-S</c>), with the driver attached to it.</summary>
    private sealed class VirtualMachine : IAsyncDisposable
    {
        private readonly ManagedProcess _process;

        private VirtualMachine(ManagedProcess process, QemuDomainOptions domain, string image, QmpClient harness, QemuDriver driver)
        {
            _process = process;
            Domain = domain;
            Image = image;
            Harness = harness;
            Driver = driver;
        }

        public QemuDomainOptions Domain { get; }

        public string Image { get; }

        /// <summary>The harness's own monitor (a second QMP monitor of the VM).</summary>
        public QmpClient Harness { get; }

        public QemuDriver Driver { get; }

        public static async Task<VirtualMachine> StartAsync(TestDirectory directory, CancellationToken cancellationToken)
        {
            var image = await QemuImage.CreateQcow2Async(directory.File("vda.qcow2"), 64 * MiB, cancellationToken);
            var domain = new QemuDomainOptions
            {
                Id = "vm-1",
                QmpSocketPath = directory.SocketPath("qmp.sock"),
                NbdSocketPath = directory.SocketPath("nbd.sock"),
                FleeceDirectory = directory.CreateSubdirectory("fleece"),
                PidFile = directory.File("vm.pid"),
            };
            domain.Disks.Add(new QemuDiskOptions { Target = "vda", NodeName = "fmt-vda", FrontNodeName = "front-vda" });
            var harnessMonitor = directory.SocketPath("harness.sock");
            var vm = ManagedProcess.Start("qemu-system-x86_64", [
                "-machine", "q35,accel=tcg", "-nodefaults", "-display", "none", "-S", "-m", "64",
                "-blockdev", $"driver=file,node-name=fmt-vda-file,filename={image},discard=unmap",
                "-blockdev", "driver=qcow2,node-name=fmt-vda,file=fmt-vda-file,discard=unmap",
                "-blockdev", "driver=raw,node-name=front-vda,file=fmt-vda,discard=unmap",
                "-device", "virtio-blk-pci,drive=front-vda,id=vda",
                "-chardev", $"socket,id=ddqmp,path={domain.QmpSocketPath},server=on,wait=off", "-mon", "chardev=ddqmp,mode=control",
                "-chardev", $"socket,id=harness,path={harnessMonitor},server=on,wait=off", "-mon", "chardev=harness,mode=control",
                "-pidfile", domain.PidFile]);
            try
            {
                await Readiness.WaitForPidFileAsync(vm, domain.PidFile, Readiness.DefaultTimeout, cancellationToken);
                var harness = await QmpClient.ConnectAsync(harnessMonitor, cancellationToken);
                var options = new QemuDriverOptions { HostName = "vm-host" };
                options.Domains.Add(domain);
                return new VirtualMachine(vm, domain, image, harness, new QemuDriver(options));
            }
            catch
            {
                await vm.DisposeAsync();
                throw;
            }
        }

        /// <summary>Writes through the guest's device, as a guest would.</summary>
        public async Task GuestWriteAsync(long offset, int length, byte pattern) =>
            await Harness.ExecuteAsync("human-monitor-command", new JsonObject
            {
                ["command-line"] = string.Create(CultureInfo.InvariantCulture, $"qemu-io -d /machine/peripheral/vda/virtio-backend \"write -P 0x{pattern:x2} {offset} {length}\""),
            }, Ct);

        /// <summary>No export is left, and the NBD server Drydock started is stopped: a fresh <c>nbd-server-start</c> works.</summary>
        public async Task AssertNoExportAndNbdServerIsFreeAsync()
        {
            Assert.Empty((await Harness.ExecuteAsync("query-block-exports", cancellationToken: Ct)).EnumerateArray());
            var socket = Path.Combine(Path.GetDirectoryName(Domain.NbdSocketPath)!, "operator-nbd.sock");
            await Harness.ExecuteAsync("nbd-server-start", new JsonObject
            {
                ["addr"] = new JsonObject { ["type"] = "unix", ["data"] = new JsonObject { ["path"] = socket } },
            }, Ct);
            await Harness.ExecuteAsync("nbd-server-stop", cancellationToken: Ct);
            Assert.Empty(Directory.EnumerateFileSystemEntries(Domain.FleeceDirectory));
        }

        public async ValueTask DisposeAsync()
        {
            await Driver.DisposeAsync();
            await Harness.DisposeAsync();
            await _process.DisposeAsync();
        }
    }
}
