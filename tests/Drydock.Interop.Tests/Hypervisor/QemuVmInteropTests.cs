using System.Globalization;
using System.Text.Json.Nodes;
using Drydock.Hypervisor;
using Drydock.Hypervisor.Qemu;
using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Drydock.TestKit;
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
        var image = await QemuImage.CreateQcow2Async(directory.File("vda.qcow2"), 64 * MiB, Ct);
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
        await using var vm = ManagedProcess.Start("qemu-system-x86_64", [
            "-machine", "q35,accel=tcg", "-nodefaults", "-display", "none", "-S", "-m", "64",
            "-blockdev", $"driver=file,node-name=fmt-vda-file,filename={image},discard=unmap",
            "-blockdev", "driver=qcow2,node-name=fmt-vda,file=fmt-vda-file,discard=unmap",
            "-blockdev", "driver=raw,node-name=front-vda,file=fmt-vda,discard=unmap",
            "-device", "virtio-blk-pci,drive=front-vda,id=vda",
            "-chardev", $"socket,id=ddqmp,path={domain.QmpSocketPath},server=on,wait=off", "-mon", "chardev=ddqmp,mode=control",
            "-chardev", $"socket,id=harness,path={harnessMonitor},server=on,wait=off", "-mon", "chardev=harness,mode=control",
            "-pidfile", domain.PidFile]);
        await Readiness.WaitForPidFileAsync(vm, domain.PidFile, Readiness.DefaultTimeout, Ct);
        await using var harness = await QmpClient.ConnectAsync(harnessMonitor, Ct);
        var options = new QemuDriverOptions { HostName = "vm-host" };
        options.Domains.Add(domain);
        await using var driver = new QemuDriver(options);

        async Task GuestWriteAsync(long offset, int length, byte pattern) =>
            await harness.ExecuteAsync("human-monitor-command", new JsonObject
            {
                ["command-line"] = string.Create(CultureInfo.InvariantCulture, $"qemu-io -d /machine/peripheral/vda/virtio-backend \"write -P 0x{pattern:x2} {offset} {length}\""),
            }, Ct);

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
}
