using Drydock.Hypervisor;
using Drydock.TestKit.Libvirt;
using Xunit;

namespace Drydock.Interop.Tests.Hypervisor.Libvirt;

/// <summary>FAULTS.md cases against real libvirt 9.0 + QEMU; after each, libvirt and QMP show nothing left behind.</summary>
[Collection(LibvirtCollection.Name)]
public sealed class LibvirtFaultTests(LibvirtFixture fixture)
{
    private const long MiB = 1024 * 1024;

    [Fact]
    public async Task F01_qemu_killed_makes_the_bitmaps_inconsistent_and_those_disks_fall_back_to_full()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);
        await CommitFullAsync(driver, domain, "drydock-f01-1", ct);

        // The bitmap must be in the image when QEMU starts (a clean stop stores it) for a kill to leave it in use.
        await driver.DestroyAsync(domain.Uuid, ct);
        await driver.StartAsync(domain.Uuid, paused: true, ct);
        await domain.WriteAsync("vda", 0, 64 * 1024, 0x51, ct);

        await domain.KillQemuAsync(ct);
        await driver.StartAsync(domain.Uuid, paused: true, ct);

        var health = await driver.GetDiskHealthAsync(domain.Uuid, ct);
        var bitmap = Assert.Single(health.Single(h => h.Target == "vda").Bitmaps);
        Assert.True(bitmap.Inconsistent);
        Assert.False(health.Single(h => h.Target == "vda").CanServeAsBase("drydock-f01-1", out var reason));
        Assert.Equal(FullReadCode.BitmapInconsistent, reason!.Code);

        var capture = await driver.BeginCaptureAsync(CaptureRequest.Since(domain.Uuid, "drydock-f01-1", ["vda", "vdb"], "drydock-f01-2"), ct);
        Assert.All(capture.Disks, d => Assert.Equal(FullReadCode.BitmapInconsistent, d.FullReason?.Code));
        await driver.ReleaseCaptureAsync(domain.Uuid, capture.Id, CaptureOutcome.Committed, ct);

        // Without fallback the capture fails naming the checkpoint and disk.
        var error = await Assert.ThrowsAsync<CheckpointInconsistentException>(() =>
            driver.BeginCaptureAsync(CaptureRequest.Since(domain.Uuid, "drydock-f01-1", ["vda"]) with { FallBackToFull = false }, ct));
        Assert.Equal("drydock-f01-1", error.Checkpoint);

        // The inconsistent checkpoint can only be removed; the new full's checkpoint serves the next incremental.
        await driver.DeleteCheckpointAsync(domain.Uuid, "drydock-f01-1", cancellationToken: ct);
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, ["drydock-f01-2"], ct);
    }

    [Fact]
    public async Task F02_a_stale_bitmap_with_the_new_checkpoints_name_is_reported_then_reconciled()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);
        await CommitFullAsync(driver, domain, "drydock-f02-1", ct);
        await driver.DeleteCheckpointAsync(domain.Uuid, "drydock-f02-1", CheckpointDeleteMode.MetadataOnly, ct);
        var orphan = Assert.Single(await driver.ListCheckpointsAsync(domain.Uuid, ct));
        Assert.False(orphan.HasMetadata);

        var exists = await Assert.ThrowsAsync<CheckpointExistsException>(() =>
            driver.BeginCaptureAsync(CaptureRequest.Full(domain.Uuid, ["vda", "vdb"], "drydock-f02-1"), ct));
        Assert.NotNull(exists.HypervisorMessage);
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, [], ct, bitmaps: ["drydock-f02-1"]);

        // Reconcile: deleting the name removes the bitmaps QEMU still holds; then the capture works.
        await driver.DeleteCheckpointAsync(domain.Uuid, "drydock-f02-1", cancellationToken: ct);
        await CommitFullAsync(driver, domain, "drydock-f02-1", ct);
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, ["drydock-f02-1"], ct);
    }

    [Fact]
    public async Task F05_checkpoint_metadata_lost_by_undefine_and_define_is_redefined_from_saved_xml_with_validation()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);
        await CommitFullAsync(driver, domain, "drydock-f05-1", ct);
        var saved = await driver.GetCheckpointXmlAsync(domain.Uuid, "drydock-f05-1", ct);

        // A clean shutdown stores the bitmaps; undefine drops libvirt's metadata; define brings the domain back.
        await driver.DestroyAsync(domain.Uuid, ct);
        var xml = (await LibvirtDaemon.VirshAsync(["dumpxml", "--inactive", domain.Name], ct)).StandardOutput;
        var xmlPath = Path.Combine(domain.DirectoryPath, "redefine.xml");
        await File.WriteAllTextAsync(xmlPath, xml, ct);
        await LibvirtDaemon.VirshAsync(["undefine", "--checkpoints-metadata", domain.Name], ct);
        await LibvirtDaemon.VirshAsync(["define", xmlPath], ct);
        await driver.StartAsync(domain.Uuid, paused: true, ct);
        Assert.False(Assert.Single(await driver.ListCheckpointsAsync(domain.Uuid, ct)).HasMetadata);
        await domain.WriteAsync("vda", 2 * MiB, 4096, 0x52, ct);

        var capture = await driver.BeginCaptureAsync(CaptureRequest.Since(domain.Uuid, "drydock-f05-1", ["vda"]), ct);
        Assert.Equal(FullReadCode.CheckpointMissing, capture.Disk("vda").FullReason?.Code);
        await driver.ReleaseCaptureAsync(domain.Uuid, capture.Id, CaptureOutcome.Abandoned, ct);

        var redefined = await driver.RedefineCheckpointAsync(domain.Uuid, saved, ct);
        Assert.True(redefined.HasMetadata);
        var incremental = await driver.BeginCaptureAsync(CaptureRequest.Since(domain.Uuid, "drydock-f05-1", ["vda"]), ct);
        Assert.NotNull(incremental.Disk("vda").ChangedBlocksContext);
        await driver.ReleaseCaptureAsync(domain.Uuid, incremental.Id, CaptureOutcome.Committed, ct);
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, ["drydock-f05-1"], ct);
    }

    [Fact]
    public async Task F06_bitmap_gone_under_the_checkpoint_means_full_and_the_checkpoint_can_still_be_deleted()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);
        await CommitFullAsync(driver, domain, "drydock-f06-1", ct);
        var node = await NodeOfAsync(domain, "vda", ct);
        await domain.QmpAsync($$$"""{"execute":"block-dirty-bitmap-remove","arguments":{"node":"{{{node}}}","name":"drydock-f06-1"}}""", ct);

        var vda = (await driver.GetDiskHealthAsync(domain.Uuid, ct)).Single(h => h.Target == "vda");
        Assert.False(vda.CanServeAsBase("drydock-f06-1", out var reason));
        Assert.Equal(FullReadCode.BitmapMissing, reason!.Code);
        var capture = await driver.BeginCaptureAsync(CaptureRequest.Since(domain.Uuid, "drydock-f06-1", ["vda", "vdb"]), ct);
        Assert.Equal(FullReadCode.BitmapMissing, capture.Disk("vda").FullReason?.Code);
        Assert.NotNull(capture.Disk("vdb").ChangedBlocksContext);
        await driver.ReleaseCaptureAsync(domain.Uuid, capture.Id, CaptureOutcome.Abandoned, ct);

        await driver.DeleteCheckpointAsync(domain.Uuid, "drydock-f06-1", CheckpointDeleteMode.MetadataOnly, ct);
        await driver.DeleteCheckpointAsync(domain.Uuid, "drydock-f06-1", cancellationToken: ct);
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, [], ct);
    }

    [Fact]
    public async Task F09_F10_a_grown_disk_reports_its_new_size_and_a_replaced_image_a_new_identity()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);
        var before = await driver.GetDomainAsync(domain.Uuid, ct);

        await LibvirtDaemon.VirshAsync(["blockresize", domain.Name, "vda", "96M"], ct);
        var grown = await driver.GetDomainAsync(domain.Uuid, ct);
        Assert.Equal(96UL * MiB, grown.FindDisk("vda")!.VirtualSize);
        Assert.Equal(before.FindDisk("vda")!.Identity, grown.FindDisk("vda")!.Identity);

        await driver.DestroyAsync(domain.Uuid, ct);
        var image = domain.Images["vdb"];
        await TestKit.QemuImage.CreateQcow2Async(image + ".new", 32 * MiB, ct);
        File.Move(image + ".new", image, overwrite: true);
        var replaced = await driver.GetDomainAsync(domain.Uuid, ct);
        Assert.NotEqual(before.FindDisk("vdb")!.Identity, replaced.FindDisk("vdb")!.Identity);
        Assert.Equal(before.FindDisk("vda")!.Identity, replaced.FindDisk("vda")!.Identity);
    }

    [Fact]
    public async Task F15_foreign_checkpoints_are_listed_but_never_changed()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);
        await LibvirtDaemon.VirshAsync(["checkpoint-create-as", domain.Name, "other-tool-1"], ct);
        await CommitFullAsync(driver, domain, "drydock-f15-1", ct);

        var listed = await driver.ListCheckpointsAsync(domain.Uuid, ct);
        Assert.False(listed.Single(c => c.Name == "other-tool-1").IsOwned);
        await Assert.ThrowsAsync<ForeignCheckpointException>(() => driver.DeleteCheckpointAsync(domain.Uuid, "other-tool-1", cancellationToken: ct));
        await Assert.ThrowsAsync<ForeignCheckpointException>(() => driver.CreateCheckpointAsync(domain.Uuid, "other-tool-2", cancellationToken: ct));

        var report = await driver.ReconcileAsync(new ReconcilePlan { DomainId = domain.Uuid, KeepCheckpoints = new HashSet<string>() }, ct);
        Assert.Equal(["drydock-f15-1"], report.DeletedCheckpoints);
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, ["other-tool-1"], ct);
    }

    [Fact]
    public async Task F21_domain_destroyed_mid_capture_is_released_and_leaves_nothing()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using var driver = await LibvirtTestSupport.ConnectAsync(fixture, ct);
        await CommitFullAsync(driver, domain, "drydock-f21-1", ct);
        var capture = await driver.BeginCaptureAsync(CaptureRequest.Since(domain.Uuid, "drydock-f21-1", ["vda", "vdb"], "drydock-f21-2"), ct);

        await driver.DestroyAsync(domain.Uuid, ct);

        Assert.True(await driver.ReleaseCaptureAsync(domain.Uuid, capture.Id, CaptureOutcome.Abandoned, ct));
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, ["drydock-f21-1"], ct);
        var info = await TestKit.NbdTools.ImageInfoAsync(domain.Images["vda"], "qcow2", forceShare: true, ct);
        Assert.Equal(["drydock-f21-1"], info.Bitmaps.Select(b => b.Name));
        await Assert.ThrowsAsync<DomainStateException>(() => driver.BeginCaptureAsync(CaptureRequest.Full(domain.Uuid, ["vda"]), ct));
    }

    [Fact]
    public async Task F03_a_capture_left_by_a_dead_process_is_found_by_its_tag_and_reconciled()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var domain = await fixture.CreateDomainAsync(cancellationToken: ct);
        await using (var first = await LibvirtTestSupport.ConnectAsync(fixture, ct))
        {
            await CommitFullAsync(first, domain, "drydock-f03-1", ct);
            _ = await first.BeginCaptureAsync(CaptureRequest.Since(domain.Uuid, "drydock-f03-1", ["vda", "vdb"], "drydock-f03-2"), ct);
        }

        await using var second = await LibvirtTestSupport.ConnectAsync(fixture, ct);
        var orphan = Assert.Single(await second.ListCapturesAsync(null, ct), c => c.DomainId == domain.Uuid);
        Assert.False(orphan.StartedByThisDriver);
        Assert.Equal("drydock-f03-2", orphan.NewCheckpoint);
        Assert.Equal(["vda", "vdb"], orphan.Targets);

        var report = await second.ReconcileAsync(new ReconcilePlan { DomainId = domain.Uuid, KeepCheckpoints = new HashSet<string> { "drydock-f03-1" } }, ct);
        Assert.Equal([orphan.Id], report.ReleasedCaptures);
        await LibvirtTestSupport.AssertCleanAsync(fixture, domain, ["drydock-f03-1"], ct);
        var next = await second.BeginCaptureAsync(CaptureRequest.Since(domain.Uuid, "drydock-f03-1", ["vda"]), ct);
        Assert.False(next.Disk("vda").IsFull);
        await second.ReleaseCaptureAsync(domain.Uuid, next.Id, CaptureOutcome.Abandoned, ct);
    }

    internal static async Task CommitFullAsync(IHypervisorDriver driver, LibvirtTestDomain domain, string checkpoint, CancellationToken ct)
    {
        var capture = await driver.BeginCaptureAsync(CaptureRequest.Full(domain.Uuid, domain.Disks.Select(d => d.Target), checkpoint), ct);
        Assert.True(await driver.ReleaseCaptureAsync(domain.Uuid, capture.Id, CaptureOutcome.Committed, ct));
    }

    private static async Task<string> NodeOfAsync(LibvirtTestDomain domain, string target, CancellationToken ct)
    {
        var xml = System.Xml.Linq.XElement.Parse((await LibvirtDaemon.VirshAsync(["dumpxml", domain.Name], ct)).StandardOutput);
        var disk = xml.Element("devices")!.Elements("disk").Single(d => (string?)d.Element("target")?.Attribute("dev") == target);
        return "libvirt-" + (string)disk.Element("source")!.Attribute("index")! + "-format";
    }
}
