using System.Text.Json.Nodes;
using Drydock.Hypervisor;
using Drydock.Hypervisor.Contract;
using Drydock.Hypervisor.Qemu.Qmp;
using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Drydock.Repository;
using Drydock.Storage.FileSystem;
using Drydock.TestKit;
using Drydock.Transfer;
using Drydock.Transfer.Chain;
using Drydock.Transfer.Jobs;
using Drydock.Transfer.Restore;
using QmpClient = Drydock.Hypervisor.Qemu.Qmp.QmpClient;
using QmpException = Drydock.Hypervisor.Qemu.Qmp.QmpException;
using Xunit;

namespace Drydock.Interop.Tests.Hypervisor;

/// <summary>What the QEMU driver does beyond the contract, against a real qemu-storage-daemon.</summary>
public sealed class QemuDriverInteropTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Capture_is_refused_while_a_writer_bypasses_the_front_node()
    {
        await using var h = await QemuContractHarness.CreateAsync(new ContractDomainSpec(), Ct);
        var qmp = await h.HarnessQmpAsync(Ct);
        // A second writer straight on the format node: its writes would change the "snapshot" silently.
        await qmp.ExecuteAsync("block-export-add", new JsonObject { ["type"] = "nbd", ["id"] = "rogue", ["node-name"] = "fmt-vdb", ["name"] = "rogue", ["writable"] = true }, Ct);

        var refused = await Assert.ThrowsAsync<CaptureFailedException>(() => h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, h.Targets), Ct));
        Assert.Equal("vdb", refused.Target);
        Assert.Contains("bypass", refused.Message, StringComparison.Ordinal);

        await qmp.ExecuteAsync("block-export-del", new JsonObject { ["id"] = "rogue" }, Ct);
        await qmp.WaitForEventAsync("BLOCK_EXPORT_DELETED", cancellationToken: Ct);
        Assert.Empty(await h.FindLeftoversAsync(Ct));
    }

    [Fact]
    public async Task A_capture_cancelled_while_it_is_set_up_leaves_nothing_behind()
    {
        await using var h = await QemuContractHarness.CreateAsync(new ContractDomainSpec(), Ct);
        var qmp = await h.HarnessQmpAsync(Ct);
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        // Cancel as soon as the first fleece image exists: the driver is then midway through its steps.
        var trigger = Task.Run(async () =>
        {
            await qmp.WaitForEventAsync("JOB_STATUS_CHANGE", e => e.GetProperty("data").GetProperty("status").GetString() == "concluded", cancellationToken: Ct);
            await cancel.CancelAsync();
        }, Ct);

        try
        {
            var capture = await h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, h.Targets, DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch)), cancel.Token);
            // Rare: the whole set-up finished before the cancellation landed.
            await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct);
        }
        catch (OperationCanceledException)
        {
        }

        await trigger;
        Assert.Empty(await h.FindLeftoversAsync(Ct));
        Assert.Empty(await h.Driver.ListCheckpointsAsync(h.DomainId, Ct));
    }

    [Fact]
    public async Task An_instance_killed_while_a_capture_is_set_up_fails_it_and_leaves_no_files()
    {
        await using var h = await QemuContractHarness.CreateAsync(new ContractDomainSpec(), Ct);
        var qmp = await h.HarnessQmpAsync(Ct);
        var pid = h.LivePid()!.Value;
        var killer = Task.Run(async () =>
        {
            await qmp.WaitForEventAsync("JOB_STATUS_CHANGE", e => e.GetProperty("data").GetProperty("status").GetString() == "concluded", cancellationToken: Ct);
            await Drydock.TestKit.ProcessRunner.RunAsync("kill", ["-KILL", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)], Ct);
        }, Ct);

        try
        {
            var capture = await h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, h.Targets), Ct);
            await killer;
            await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct);
        }
        catch (HypervisorException)
        {
            // Expected: the monitor vanished mid-way.
        }

        await killer;
        while (h.LivePid() is not null)
        {
            await Task.Delay(20, Ct);
        }

        // Whatever the driver could not undo in the dead instance died with it; its files must be gone.
        foreach (var capture in await h.Driver.ListCapturesAsync(h.DomainId, Ct))
        {
            await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct);
        }

        Assert.Empty(await h.FindLeftoversAsync(Ct));
    }

    [Fact]
    public async Task The_snapshot_export_is_read_only_and_reports_holes()
    {
        await using var h = await QemuContractHarness.CreateAsync(new ContractDomainSpec(), Ct);
        await h.WriteAsync("vda", 4 * 1024 * 1024, new byte[65536].Fill(3), Ct);
        var capture = await h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, ["vda"]), Ct);
        var options = new NbdClientOptions();
        options.MetaContexts.Add(NbdContexts.BaseAllocation);
        await using (var client = await NbdClient.ConnectAsync(capture.Disk("vda").Endpoint, options, Ct))
        {
            Assert.True(client.Export.IsReadOnly);
            var map = await client.MapAsync(cancellationToken: Ct);
            var data = map[NbdContexts.BaseAllocation].Where(e => !e.IsHole).ToList();
            Assert.Contains(data, e => e.Offset <= 4 * 1024 * 1024 && e.End >= 4 * 1024 * 1024 + 65536);
            Assert.True(data.Sum(e => (long)e.Length) < 16 * 1024 * 1024, "most of the fresh disk reads as holes");
            await Assert.ThrowsAsync<NotSupportedException>(() => client.WriteAsync(0, new byte[512], cancellationToken: Ct));
        }

        await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct);
        Assert.Empty(await h.FindLeftoversAsync(Ct));
    }

    [Fact]
    public async Task Qmp_client_matches_replies_by_id_among_events_and_keeps_qemus_error()
    {
        using var directory = TestDirectory.Create("qmp-client");
        var image = await QemuImage.CreateQcow2Async(directory.File("disk.qcow2"), 16 << 20, Ct);
        var monitor = directory.SocketPath("second.sock");
        await using var daemon = await QemuStorageDaemon.StartAsync([
            "--chardev", $"socket,id=second,path={monitor},server=on,wait=off", "--monitor", "chardev=second",
            "--blockdev", $"driver=file,node-name=f0,filename={image}", "--blockdev", "driver=qcow2,node-name=d0,file=f0"], cancellationToken: Ct);
        await using var qmp = await QmpClient.ConnectAsync(monitor, cancellationToken: Ct);
        Assert.Equal(7, qmp.QemuVersion!.Major);

        var error = await Assert.ThrowsAsync<QmpException>(() => qmp.ExecuteAsync("block-dirty-bitmap-remove", new JsonObject { ["node"] = "d0", ["name"] = "nope" }, Ct));
        Assert.Equal("GenericError", error.ErrorClass);
        Assert.Equal("Dirty bitmap 'nope' not found", error.Description);
        Assert.Equal("CommandNotFound", (await Assert.ThrowsAsync<QmpException>(() => qmp.ExecuteAsync("no-such-command", cancellationToken: Ct))).ErrorClass);

        // Many commands in flight while the job's events arrive between their replies.
        using var events = qmp.SubscribeEvents(e => e.Name == "JOB_STATUS_CHANGE");
        var scratch = directory.File("scratch.raw");
        var create = qmp.CreateImageAsync("job-1", new JsonObject { ["driver"] = "file", ["filename"] = scratch, ["size"] = 1 << 20 }, TimeSpan.FromSeconds(60), Ct);
        var queries = Enumerable.Range(0, 20).Select(_ => qmp.QueryNamedBlockNodesAsync(Ct)).ToList();
        await create;
        Assert.All(await Task.WhenAll(queries), nodes => Assert.Contains(nodes, n => n.NodeName == "d0" && n.Driver == "qcow2" && n.VirtualSize == 16 << 20));
        Assert.True(File.Exists(scratch));
        Assert.Equal("created", (await events.WaitAsync(_ => true, TimeSpan.FromSeconds(60), Ct)).DataString("status"));

        // The daemon going away fails what is in flight and ends the subscription.
        await daemon.Process.StopAsync(cancellationToken: Ct);
        await Assert.ThrowsAsync<QmpConnectionException>(() => qmp.ExecuteAsync("query-version", cancellationToken: Ct));
        Assert.NotNull(await qmp.Closed);
        Assert.False(qmp.IsConnected);
    }

    [Fact]
    public async Task A_qemu_uri_attaches_to_a_running_daemon_and_discovers_its_disks()
    {
        using var directory = TestDirectory.Create("qemu-uri");
        var monitor = directory.SocketPath("vm.sock");

        // An unused raw node is not a disk.
        await using var daemon = await StartAttachedDaemonAsync(directory, monitor, "--blockdev", "driver=raw,node-name=spare,file=fmt-vda-file,read-only=on");

        // The daemon runs an NBD server already: one elsewhere than configured is refused with the reason.
        await using (var elsewhere = await new Drydock.Hypervisor.Qemu.QemuConnector().ConnectAsync($"unix:{monitor}?id=vm-1&nbd={directory.SocketPath("cap.sock")}", Ct))
        {
            var refused = await Assert.ThrowsAsync<HypervisorException>(() => elsewhere.BeginCaptureAsync(CaptureRequest.Full("vm-1", ["vda"]), Ct));
            Assert.Contains("already runs an NBD server", refused.Message, StringComparison.Ordinal);
            Assert.Empty(await elsewhere.ListCapturesAsync("vm-1", Ct));
        }

        await using var driver = await new Drydock.Hypervisor.Qemu.QemuConnector().ConnectAsync($"unix:{monitor}?id=vm-1&nbd={daemon.NbdSocketPath}", Ct);

        var domain = Assert.Single(await driver.ListDomainsAsync(Ct));
        Assert.Equal("vm-1", domain.Id);
        var disk = Assert.Single(domain.Disks);
        Assert.Equal(("vda", DiskFormats.Qcow2, 16UL << 20), (disk.Target, disk.Format, disk.VirtualSize));
        var capture = await driver.BeginCaptureAsync(CaptureRequest.Full("vm-1", ["vda"]), Ct);
        await using (var client = await NbdClient.ConnectAsync(capture.Disk("vda").Endpoint, cancellationToken: Ct))
        {
            Assert.Equal(16UL << 20, client.Export.Size);
        }

        // A process that dies holding the capture (its monitor connection closes, nothing is released) leaves the front
        // node on the snapshot filter: a new process still finds the disk (same target, same index) and releases the
        // leftover (F03).
        await driver.DisposeAsync();
        await using (var next = await new Drydock.Hypervisor.Qemu.QemuConnector().ConnectAsync($"unix:{monitor}?id=vm-1&nbd={daemon.NbdSocketPath}", Ct))
        {
            Assert.Equal("vda", Assert.Single(Assert.Single(await next.ListDomainsAsync(Ct)).Disks).Target);
            Assert.Equal(capture.Id, Assert.Single(await next.ListCapturesAsync("vm-1", Ct)).Id);
            Assert.True(await next.ReleaseCaptureAsync("vm-1", capture.Id, CaptureOutcome.Abandoned, Ct));
        }

        var nodes = (await daemon.ExecuteAsync("query-named-block-nodes", new JsonObject { ["flat"] = true }, Ct)).EnumerateArray().Select(n => n.GetProperty("node-name").GetString()).Order(StringComparer.Ordinal);
        Assert.Equal(["fmt-vda", "fmt-vda-file", "front-vda", "spare"], nodes);
        await Assert.ThrowsAsync<HypervisorConnectionException>(() => new Drydock.Hypervisor.Qemu.QemuConnector().ConnectAsync(directory.File("none.sock"), Ct));
    }

    [Fact]
    public async Task Restore_into_an_attached_daemon_is_refused_while_a_consumer_writes_and_is_byte_exact_once_it_is_stopped()
    {
        using var directory = TestDirectory.Create("qsd-restore");
        var monitor = directory.SocketPath("vm.sock");
        await using var daemon = await StartAttachedDaemonAsync(directory, monitor);
        await daemon.WriteThroughExportAsync("vda", 0, 1 << 20, 0x11, Ct);
        var address = $"unix:{monitor}?id=vm-1&nbd={daemon.NbdSocketPath}&fleece={directory.CreateSubdirectory("fleece")}";
        using var repository = await BackupRepository.InitAsync(
            new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = directory.CreateSubdirectory("repository"), Durable = false }),
            "correct horse battery staple",
            new RepositoryInitOptions { ChunkSize = 64 * 1024, KdfIterations = 1000 },
            cancellationToken: Ct);
        var restore = new RestoreJob(repository);

        await using (var driver = await new Drydock.Hypervisor.Qemu.QemuConnector().ConnectAsync(address, Ct))
        {
            await new BackupJob(driver, repository).RunAsync(new BackupJobRequest { Domain = "vm-1", Level = RequestedLevel.Full }, cancellationToken: Ct);
            await daemon.WriteThroughExportAsync("vda", 64 * 1024, 4096, 0x22, Ct);

            // The guest export writes to the disk: the daemon "runs", and the refusal says what writes and what to do.
            var domain = await driver.GetDomainAsync("vm-1", Ct);
            Assert.Equal(DomainState.Running, domain.State);
            var refused = await Assert.ThrowsAsync<TransferRequestException>(() => restore.IntoDomainAsync(new RestoreJobRequest { Domain = "vm-1" }, driver, "vm-1", changedOnly: true, cancellationToken: Ct));
            Assert.Contains("'vm-1'", refused.Message, StringComparison.Ordinal);
            Assert.Contains("writes to disk 'vda'", refused.Message, StringComparison.Ordinal);
            Assert.Contains("block-export-del", refused.Message, StringComparison.Ordinal);
        }

        // The operator stops the consumer; a new run finds the disk (its front node now unused) and restores into it.
        await daemon.RemoveNbdExportAsync("guest", Ct);
        await using (var driver = await new Drydock.Hypervisor.Qemu.QemuConnector().ConnectAsync(address, Ct))
        {
            Assert.Equal(DomainState.Paused, (await driver.GetDomainAsync("vm-1", Ct)).State);
            var result = await restore.IntoDomainAsync(new RestoreJobRequest { Domain = "vm-1" }, driver, "vm-1", changedOnly: true, cancellationToken: Ct);
            var disk = Assert.Single(result.Disks).Result;
            Assert.Equal(1, disk.ChunksWritten + disk.ChunksZeroed);
        }

        Assert.Empty((await daemon.ExecuteAsync("query-block-exports", cancellationToken: Ct)).EnumerateArray());
        var nodes = (await daemon.ExecuteAsync("query-named-block-nodes", new JsonObject { ["flat"] = true }, Ct)).EnumerateArray().Select(n => n.GetProperty("node-name").GetString()).Order(StringComparer.Ordinal);
        Assert.Equal(["fmt-vda", "fmt-vda-file", "front-vda"], nodes);
        // The NBD server was the operator's: it still runs.
        var again = await Assert.ThrowsAsync<Drydock.TestKit.QmpException>(() => daemon.ExecuteAsync("nbd-server-start", new JsonObject
        {
            ["addr"] = new JsonObject { ["type"] = "unix", ["data"] = new JsonObject { ["path"] = directory.SocketPath("other.sock") } },
        }, Ct));
        Assert.Contains("already running", again.Message, StringComparison.Ordinal);

        var expected = await restore.ToDirectoryAsync(new RestoreJobRequest { Domain = "vm-1" }, directory.CreateSubdirectory("expected"), DiskImageFormat.Raw, cancellationToken: Ct);
        await daemon.Process.StopAsync(cancellationToken: Ct);
        var compare = await ProcessRunner.RunAsync("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", expected.Disks[0].Destination, directory.File("vda.qcow2")], ProcessRunOptions.Default with { ThrowOnNonZeroExit = false }, Ct);
        Assert.True(compare.ExitCode == 0, compare.StandardOutput + compare.StandardError);
    }

    /// <summary>A storage daemon in the layout a <c>qemu:</c> URI discovers (a 16 MiB qcow2 under the front node
    /// <c>front-vda</c>), with a second monitor on <paramref name="monitor"/>, its NBD server running and a writable guest
    /// export of the disk.</summary>
    private static async Task<QemuStorageDaemon> StartAttachedDaemonAsync(TestDirectory directory, string monitor, params string[] extra)
    {
        var image = await QemuImage.CreateQcow2Async(directory.File("vda.qcow2"), 16 << 20, Ct);
        var daemon = await QemuStorageDaemon.StartAsync([
            "--chardev", $"socket,id=second,path={monitor},server=on,wait=off", "--monitor", "chardev=second",
            "--blockdev", $"driver=file,node-name=fmt-vda-file,filename={image}", "--blockdev", "driver=qcow2,node-name=fmt-vda,file=fmt-vda-file",
            "--blockdev", "driver=raw,node-name=front-vda,file=fmt-vda", .. extra], cancellationToken: Ct);
        try
        {
            await daemon.StartNbdServerAsync(cancellationToken: Ct);
            await daemon.AddNbdExportAsync("guest", "front-vda", "vda", writable: true, cancellationToken: Ct);
            return daemon;
        }
        catch
        {
            await daemon.DisposeAsync();
            throw;
        }
    }
}
