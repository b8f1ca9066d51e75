using Drydock.Hypervisor;
using Drydock.Hypervisor.Libvirt;
using Drydock.Nbd.Client;
using Drydock.TestKit;
using Drydock.TestKit.Libvirt;
using Xunit;

namespace Drydock.Interop.Tests.Hypervisor.Libvirt;

/// <summary>Push backups, restore exports, lifecycle and events against real libvirt 9.0.</summary>
[Collection(LibvirtCollection.Name)]
public sealed class LibvirtLifecycleTests(LibvirtFixture fixture)
{
    private const long MiB = 1024 * 1024;

    [Fact]
    public async Task Push_backup_writes_a_qcow2_copy_and_creates_the_checkpoint_on_job_completion()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);
        await domain.WriteAsync("vda", 1 * MiB, 2 * MiB, 0x61, ct);
        var target = Path.Combine(domain.DirectoryPath, "push");
        Directory.CreateDirectory(target);
        File.SetUnixFileMode(target, (UnixFileMode)0b111_111_111);

        var result = await driver.PushBackupAsync(new PushBackupRequest
        {
            DomainId = domain.Uuid,
            Targets = ["vda"],
            TargetDirectory = target,
            NewCheckpoint = "drydock-push-1",
        }, ct);

        var file = result.Files["vda"];
        Assert.True(await NbdTools.VerifyPatternAsync(file, "qcow2", 1 * MiB, 2 * MiB, 0x61, ct));
        Assert.True(await NbdTools.VerifyPatternAsync(file, "qcow2", 0, 1 * MiB, 0, ct));
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, ["drydock-push-1"], ct);
    }

    [Fact]
    public async Task Restore_export_of_a_shut_off_domain_is_writable_and_the_domain_starts_paused_with_the_data()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);

        // A running guest's disks are never rewritten under it.
        await driver.ResumeAsync(domain.Uuid, ct);
        var refused = await Assert.ThrowsAsync<DomainStateException>(() => driver.OpenRestoreExportAsync(domain.Uuid, ["vdb"], ct));
        Assert.Equal(DomainState.Running, refused.State);

        await driver.DestroyAsync(domain.Uuid, ct);
        var export = await driver.OpenRestoreExportAsync(domain.Uuid, ["vdb"], ct);
        var disk = Assert.Single(export.Disks);
        Assert.Equal(32UL * MiB, disk.VirtualSize);
        await using (var client = await NbdClient.ConnectAsync(disk.Endpoint, cancellationToken: ct))
        {
            var data = new byte[1 * MiB];
            data.AsSpan().Fill(0x71);
            await client.WriteAsync(4 * MiB, data, cancellationToken: ct);
            await client.FlushAsync(ct);
        }

        await Assert.ThrowsAsync<DomainBusyException>(() => driver.StartAsync(domain.Uuid, paused: true, ct));
        Assert.True(await driver.CloseRestoreExportAsync(domain.Uuid, export.Id, ct));
        Assert.False(await driver.CloseRestoreExportAsync(domain.Uuid, export.Id, ct));
        await driver.StartAsync(domain.Uuid, paused: true, ct);

        var capture = await driver.BeginCaptureAsync(CaptureRequest.Full(domain.Uuid, ["vdb"]), ct);
        await using (var client = await NbdClient.ConnectAsync(capture.Disk("vdb").Endpoint, cancellationToken: ct))
        {
            var data = new byte[1 * MiB];
            await client.ReadAsync(4 * MiB, data, ct);
            Assert.All(data, b => Assert.Equal(0x71, b));
        }

        await driver.ReleaseCaptureAsync(domain.Uuid, capture.Id, CaptureOutcome.Abandoned, ct);
        await driver.ResumeAsync(domain.Uuid, ct);
        Assert.Equal(DomainState.Running, (await driver.GetDomainAsync(domain.Uuid, ct)).State);
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, [], ct);
    }

    [Fact]
    public async Task Lifecycle_events_arrive_from_the_default_event_loop()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(start: false, cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);
        using var watching = CancellationTokenSource.CreateLinkedTokenSource(ct);
        watching.CancelAfter(TimeSpan.FromSeconds(60));
        var seen = new List<DomainEvent>();
        var reader = Task.Run(async () =>
        {
            await foreach (var domainEvent in driver.WatchEventsAsync(watching.Token))
            {
                if (domainEvent.DomainId == domain.Uuid)
                {
                    lock (seen)
                    {
                        seen.Add(domainEvent);
                    }

                    if (domainEvent.Kind == DomainEventKind.Stopped)
                    {
                        return;
                    }
                }
            }
        }, ct);

        // The subscription is registered when the enumerator first runs: give it a moment.
        await Task.Delay(200, ct);
        await driver.StartAsync(domain.Uuid, paused: true, ct);
        await driver.ResumeAsync(domain.Uuid, ct);
        await driver.DestroyAsync(domain.Uuid, ct);
        await reader;

        lock (seen)
        {
            Assert.Equal([DomainEventKind.Started, DomainEventKind.Paused, DomainEventKind.Resumed, DomainEventKind.Stopped], seen.Select(e => e.Kind));
            Assert.All(seen, e => Assert.Equal(driver.HostName, e.HostName));
        }
    }
}
