using Drydock.Nbd;
using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Xunit;

namespace Drydock.Hypervisor.Contract;

/// <summary>
/// The behaviour every hypervisor driver must have (issue 3, FAULTS.md F01–F22). Subclass it in a test project with
/// <see cref="CreateHarnessAsync"/> starting the real hypervisor; every test ends by checking the real state for
/// anything a capture or export left behind.
/// </summary>
public abstract class HypervisorContractTests
{
    private const ulong MiB = 1024 * 1024;

    /// <summary>Starts a hypervisor with one domain as <paramref name="spec"/> asks.</summary>
    protected abstract Task<ContractHarness> CreateHarnessAsync(ContractDomainSpec spec, CancellationToken cancellationToken);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Lists_the_domain_with_its_disks_sizes_and_identities()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);

        var domains = await h.Driver.ListDomainsAsync(Ct);
        var domain = Assert.Single(domains, d => d.Id == h.DomainId);

        Assert.Equal(h.Targets, domain.Disks.Select(d => d.Target));
        Assert.All(domain.Disks, d => Assert.Equal(16 * MiB, d.VirtualSize));
        Assert.All(domain.Disks, d => Assert.True(d.SupportsCheckpoints));
        Assert.Equal(domain.Disks.Count, domain.Disks.Select(d => d.Identity).Distinct().Count());
        Assert.Equal(domain.Disks.Select(d => d.Identity), (await h.Driver.GetDomainAsync(h.DomainId, Ct)).Disks.Select(d => d.Identity));
        Assert.Equal(DomainState.Running, domain.State);
        await Assert.ThrowsAsync<DomainNotFoundException>(() => h.Driver.GetDomainAsync("no-such-domain", Ct));
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task Full_capture_reads_the_disks_as_they_were_at_capture_time_while_the_guest_keeps_writing()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);
        var shadow = new Shadow(h);
        await shadow.WriteAsync(h.Targets[0], 0, 4 * MiB, seed: 1);
        await shadow.WriteAsync(h.Targets[1], 1 * MiB, 2 * MiB, seed: 2);

        var capture = await h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, h.Targets), Ct);
        var expected = shadow.Copy();

        // The guest writes over what is being read, during the read.
        var writer = Task.Run(async () =>
        {
            for (var i = 0; i < 24; i++)
            {
                await shadow.WriteAsync(h.Targets[i % 2], (ulong)(i * 5 % 15) * MiB + 4096, 256 * 1024, seed: 100 + i);
            }
        }, Ct);
        var read = new Dictionary<string, byte[]>();
        foreach (var disk in capture.Disks)
        {
            Assert.True(disk.IsFull);
            Assert.Equal(FullReadCode.NotRequested, disk.FullReason!.Code);
            read[disk.Target] = await ReadExportAsync(disk.Endpoint, disk.VirtualSize);
        }

        await writer;
        foreach (var target in h.Targets)
        {
            AssertSameBytes(expected[target], read[target], target);
            AssertSameBytes(shadow[target], await h.ReadLiveAsync(target, 0, (int)(16 * MiB), Ct), target + " (live)");
        }

        Assert.True(await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct));
        Assert.False(await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct));
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task Incremental_capture_lists_exactly_the_written_ranges_at_bitmap_granularity()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);
        var shadow = new Shadow(h);
        await shadow.WriteAsync(h.Targets[0], 0, 8 * MiB, seed: 1);
        var c1 = NewCheckpoint();
        await CommitAsync(h, CaptureRequest.Full(h.DomainId, h.Targets, c1));

        var written = new Dictionary<string, List<(ulong Offset, ulong Length)>>
        {
            [h.Targets[0]] = [(1 * MiB + 4096, 100), (5 * MiB, 192 * 1024), (15 * MiB + 65536 - 1, 2)],
            [h.Targets[1]] = [(0, 1)],
        };
        var seed = 10;
        foreach (var (target, ranges) in written)
        {
            foreach (var (offset, length) in ranges)
            {
                await shadow.WriteAsync(target, offset, length, seed++);
            }
        }

        var c2 = NewCheckpoint();
        var capture = await h.Driver.BeginCaptureAsync(CaptureRequest.Since(h.DomainId, c1, h.Targets, c2), Ct);
        foreach (var disk in capture.Disks)
        {
            Assert.False(disk.IsFull);
            Assert.Equal(c1, disk.SinceCheckpoint);
            Assert.True(disk.InNewCheckpoint);
            var granularity = (ulong)disk.Granularity!.Value;
            var dirty = await DirtyRangesAsync(disk);
            Assert.Equal(AlignOut(written[disk.Target], granularity), dirty);
            foreach (var (offset, length) in dirty)
            {
                AssertSameBytes(shadow[disk.Target].AsSpan((int)offset, (int)length).ToArray(), await ReadExportAsync(disk.Endpoint, disk.VirtualSize, offset, (int)length), $"{disk.Target}@{offset}");
            }
        }

        await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Committed, Ct);
        var names = (await h.Driver.ListCheckpointsAsync(h.DomainId, Ct)).Select(c => c.Name).ToList();
        Assert.Contains(c1, names);
        Assert.Contains(c2, names);
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task Differential_from_an_older_checkpoint_covers_everything_since_it_and_abandoning_removes_the_new_checkpoint()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);
        var shadow = new Shadow(h);
        var vda = h.Targets[0];
        var c1 = NewCheckpoint();
        await CommitAsync(h, CaptureRequest.Full(h.DomainId, [vda], c1));
        await shadow.WriteAsync(vda, 2 * MiB, 64 * 1024, seed: 1);
        var c2 = NewCheckpoint();
        await CommitAsync(h, CaptureRequest.Since(h.DomainId, c1, [vda], c2));
        await shadow.WriteAsync(vda, 9 * MiB, 128 * 1024, seed: 2);

        var c3 = NewCheckpoint();
        var differential = await h.Driver.BeginCaptureAsync(CaptureRequest.Since(h.DomainId, c1, [vda], c3), Ct);
        var disk = differential.Disk(vda);
        Assert.Equal(AlignOut([(2 * MiB, 64 * 1024), (9 * MiB, 128 * 1024)], (ulong)disk.Granularity!.Value), await DirtyRangesAsync(disk));
        await h.Driver.ReleaseCaptureAsync(h.DomainId, differential.Id, CaptureOutcome.Abandoned, Ct);

        var incremental = await h.Driver.BeginCaptureAsync(CaptureRequest.Since(h.DomainId, c2, [vda]), Ct);
        disk = incremental.Disk(vda);
        Assert.Equal(AlignOut([(9 * MiB, 128 * 1024)], (ulong)disk.Granularity!.Value), await DirtyRangesAsync(disk));
        await h.Driver.ReleaseCaptureAsync(h.DomainId, incremental.Id, CaptureOutcome.Committed, Ct);

        var names = (await h.Driver.ListCheckpointsAsync(h.DomainId, Ct)).Select(c => c.Name).ToList();
        Assert.Contains(c1, names);
        Assert.Contains(c2, names);
        Assert.DoesNotContain(c3, names); // abandoned: never a base
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task Trims_after_a_checkpoint_are_changed_blocks_that_read_as_zeros()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);
        var shadow = new Shadow(h);
        var vda = h.Targets[0];
        await shadow.WriteAsync(vda, 0, 4 * MiB, seed: 1);
        var c1 = NewCheckpoint();
        await h.Driver.CreateCheckpointAsync(h.DomainId, c1, [vda], Ct);

        await h.TrimAsync(vda, 1 * MiB, 1 * MiB, Ct);
        shadow.Clear(vda, 1 * MiB, 1 * MiB);

        var capture = await h.Driver.BeginCaptureAsync(CaptureRequest.Since(h.DomainId, c1, [vda]), Ct);
        var disk = capture.Disk(vda);
        Assert.Equal(AlignOut([(1 * MiB, 1 * MiB)], (ulong)disk.Granularity!.Value), await DirtyRangesAsync(disk));
        AssertSameBytes(new byte[1 * MiB], await ReadExportAsync(disk.Endpoint, disk.VirtualSize, 1 * MiB, (int)MiB), "trimmed range");
        await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct);
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task F16_a_second_capture_on_a_busy_domain_is_refused_as_busy()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);
        var first = await h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, h.Targets), Ct);

        var busy = await Assert.ThrowsAsync<DomainBusyException>(() => h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, [h.Targets[1]]), Ct));
        Assert.Equal(h.DomainId, busy.DomainId);

        await h.Driver.ReleaseCaptureAsync(h.DomainId, first.Id, CaptureOutcome.Abandoned, Ct);
        var second = await h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, h.Targets), Ct);
        await h.Driver.ReleaseCaptureAsync(h.DomainId, second.Id, CaptureOutcome.Abandoned, Ct);
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task F15_foreign_checkpoints_are_listed_but_never_changed_or_used()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);
        const string Foreign = "virtnbdbackup.0";
        await h.CreateForeignCheckpointAsync(Foreign, Ct);
        var ours = NewCheckpoint();
        await h.Driver.CreateCheckpointAsync(h.DomainId, ours, null, Ct);

        var listed = await h.Driver.ListCheckpointsAsync(h.DomainId, Ct);
        Assert.False(Assert.Single(listed, c => c.Name == Foreign).IsOwned);
        await Assert.ThrowsAsync<ForeignCheckpointException>(() => h.Driver.DeleteCheckpointAsync(h.DomainId, Foreign, CheckpointDeleteMode.All, Ct));
        await Assert.ThrowsAsync<ForeignCheckpointException>(() => h.Driver.DeleteCheckpointAsync(h.DomainId, Foreign, CheckpointDeleteMode.MetadataOnly, Ct));
        await Assert.ThrowsAsync<ForeignCheckpointException>(() => h.Driver.CreateCheckpointAsync(h.DomainId, "other-tool", null, Ct));
        await Assert.ThrowsAsync<ForeignCheckpointException>(() => h.Driver.BeginCaptureAsync(CaptureRequest.Since(h.DomainId, Foreign, h.Targets), Ct));
        await Assert.ThrowsAsync<ForeignCheckpointException>(() => h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, h.Targets, Foreign), Ct));

        // Reconciling one repository's chain deletes only the checkpoints carrying its tag: another repository's (and
        // untagged ones) stay.
        var mine = DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch.AddDays(20001), "0a1b2c3d");
        var theirs = DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch.AddDays(20002), "ffee0011");
        await h.Driver.CreateCheckpointAsync(h.DomainId, mine, null, Ct);
        await h.Driver.CreateCheckpointAsync(h.DomainId, theirs, null, Ct);
        var chain = await h.Driver.ReconcileAsync(new ReconcilePlan { DomainId = h.DomainId, KeepCheckpoints = new HashSet<string>(), ChainTag = "0a1b2c3d" }, Ct);
        Assert.Equal([mine], chain.DeletedCheckpoints);

        // Reconciliation with an empty ledger and no chain deletes our orphan checkpoints, never the foreign one.
        var report = await h.Driver.ReconcileAsync(new ReconcilePlan { DomainId = h.DomainId, KeepCheckpoints = new HashSet<string>() }, Ct);
        Assert.Equal(new[] { ours, theirs }.Order(StringComparer.Ordinal), report.DeletedCheckpoints.Order(StringComparer.Ordinal));
        Assert.Equal([Foreign], (await h.Driver.ListCheckpointsAsync(h.DomainId, Ct)).Select(c => c.Name));
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task F06_a_bitmap_gone_under_a_checkpoint_falls_back_to_full_for_that_disk_only()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);
        var (vda, vdb) = (h.Targets[0], h.Targets[1]);
        var c1 = NewCheckpoint();
        await h.Driver.CreateCheckpointAsync(h.DomainId, c1, null, Ct);
        await h.RemoveBitmapAsync(vdb, c1, Ct);

        var health = await h.Driver.GetDiskHealthAsync(h.DomainId, Ct);
        Assert.True(health.Single(d => d.Target == vda).CanServeAsBase(c1, out _));
        Assert.False(health.Single(d => d.Target == vdb).CanServeAsBase(c1, out var reason));
        Assert.Equal(FullReadCode.BitmapMissing, reason!.Code);

        var capture = await h.Driver.BeginCaptureAsync(CaptureRequest.Since(h.DomainId, c1, h.Targets), Ct);
        Assert.False(capture.Disk(vda).IsFull);
        Assert.True(capture.Disk(vdb).IsFull);
        Assert.Equal(FullReadCode.BitmapMissing, capture.Disk(vdb).FullReason!.Code);
        await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct);

        var missing = NewCheckpoint();
        capture = await h.Driver.BeginCaptureAsync(CaptureRequest.Since(h.DomainId, missing, h.Targets), Ct);
        Assert.All(capture.Disks, d => Assert.Equal(FullReadCode.CheckpointMissing, d.FullReason!.Code));
        await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct);

        await Assert.ThrowsAsync<CheckpointNotFoundException>(() => h.Driver.BeginCaptureAsync(CaptureRequest.Since(h.DomainId, c1, h.Targets) with { FallBackToFull = false }, Ct));
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task F01_F02_after_an_unclean_kill_the_bitmap_is_inconsistent_and_its_name_is_reclaimed_without_looping()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);
        var vda = h.Targets[0];
        var c1 = NewCheckpoint();
        await h.Driver.CreateCheckpointAsync(h.DomainId, c1, null, Ct);
        await h.RestartCleanlyAsync(Ct);
        await h.WriteAsync(vda, 3 * MiB, new byte[4096].Fill(7), Ct);
        await h.KillAsync(Ct);
        await h.StartAgainAsync(Ct);

        var bitmap = (await h.Driver.GetDiskHealthAsync(h.DomainId, Ct)).Single(d => d.Target == vda).ForCheckpoint(c1);
        Assert.NotNull(bitmap);
        Assert.True(bitmap.Inconsistent);
        Assert.False(bitmap.Usable);

        var capture = await h.Driver.BeginCaptureAsync(CaptureRequest.Since(h.DomainId, c1, h.Targets), Ct);
        Assert.All(capture.Disks, d => Assert.Equal(FullReadCode.BitmapInconsistent, d.FullReason!.Code));
        await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct);
        await Assert.ThrowsAsync<CheckpointInconsistentException>(() => h.Driver.BeginCaptureAsync(CaptureRequest.Since(h.DomainId, c1, h.Targets) with { FallBackToFull = false }, Ct));

        // F02: the name is taken by our stale checkpoint; the chain logic deletes it and creates it again, once.
        await Assert.ThrowsAsync<CheckpointExistsException>(() => h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, h.Targets, c1), Ct));
        await h.Driver.DeleteCheckpointAsync(h.DomainId, c1, CheckpointDeleteMode.All, Ct);
        await CommitAsync(h, CaptureRequest.Full(h.DomainId, h.Targets, c1));
        Assert.True((await h.Driver.GetDiskHealthAsync(h.DomainId, Ct)).Single(d => d.Target == vda).CanServeAsBase(c1, out _));
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task F05_saved_checkpoint_xml_redefines_or_validates_the_checkpoint()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);
        var c1 = NewCheckpoint();
        await h.Driver.CreateCheckpointAsync(h.DomainId, c1, null, Ct);
        var saved = await h.Driver.GetCheckpointXmlAsync(h.DomainId, c1, Ct);
        Assert.Equal(c1, CheckpointXml.Parse(saved).Name);
        Assert.Equal(h.Targets, CheckpointXml.Parse(saved).BitmapDisks.Select(d => d.Target));

        if (h.Driver.Capabilities.CheckpointMetadata)
        {
            await h.LoseCheckpointMetadataAsync(c1, Ct);
            Assert.DoesNotContain((await h.Driver.ListCheckpointsAsync(h.DomainId, Ct)), c => c.Name == c1 && c.HasMetadata);
        }

        var redefined = await h.Driver.RedefineCheckpointAsync(h.DomainId, saved, Ct);
        Assert.Equal(c1, redefined.Name);
        var capture = await h.Driver.BeginCaptureAsync(CaptureRequest.Since(h.DomainId, c1, h.Targets), Ct);
        Assert.All(capture.Disks, d => Assert.False(d.IsFull));
        await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct);

        // Validation: a saved checkpoint whose bitmap is gone cannot be redefined.
        await h.RemoveBitmapAsync(h.Targets[1], c1, Ct);
        var invalid = await Assert.ThrowsAsync<CheckpointInconsistentException>(() => h.Driver.RedefineCheckpointAsync(h.DomainId, saved, Ct));
        Assert.Equal(h.Targets[1], invalid.Target);
        await Assert.ThrowsAsync<ForeignCheckpointException>(() => h.Driver.RedefineCheckpointAsync(h.DomainId, saved.Replace(c1, "foreign-x", StringComparison.Ordinal), Ct));
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task F09_F10_a_resize_shows_in_the_size_and_a_replacement_in_the_identity()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);
        var (vda, vdb) = (h.Targets[0], h.Targets[1]);
        var before = await h.Driver.GetDomainAsync(h.DomainId, Ct);

        await h.ResizeDiskAsync(vda, 32 * MiB, Ct);
        var resized = await h.Driver.GetDomainAsync(h.DomainId, Ct);
        Assert.Equal(32 * MiB, resized.FindDisk(vda)!.VirtualSize);
        Assert.Equal(before.FindDisk(vda)!.Identity, resized.FindDisk(vda)!.Identity);
        var capture = await h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, [vda]), Ct);
        Assert.Equal(32 * MiB, capture.Disk(vda).VirtualSize);
        await using (var client = await NbdClient.ConnectAsync(capture.Disk(vda).Endpoint, cancellationToken: Ct))
        {
            Assert.Equal(32 * MiB, client.Export.Size);
        }

        await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct);

        await h.ReplaceDiskAsync(vdb, Ct);
        var replaced = await h.Driver.GetDomainAsync(h.DomainId, Ct);
        Assert.NotEqual(before.FindDisk(vdb)!.Identity, replaced.FindDisk(vdb)!.Identity);
        Assert.Equal(before.FindDisk(vda)!.Identity, replaced.FindDisk(vda)!.Identity);
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task F13_a_revert_raises_the_disk_generation()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);
        if (!h.Driver.Capabilities.DiskGenerations)
        {
            Assert.Skip($"The {h.Driver.Capabilities.Driver} driver does not track disk generations.");
        }

        var before = (await h.Driver.GetDomainAsync(h.DomainId, Ct)).FindDisk(h.Targets[0])!.Generation;
        await h.RevertDiskAsync(h.Targets[0], Ct);
        var after = await h.Driver.GetDomainAsync(h.DomainId, Ct);
        Assert.True(after.FindDisk(h.Targets[0])!.Generation > before);
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task F17_when_fleece_space_runs_out_the_guest_keeps_writing_and_the_capture_fails()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec { LimitedFleece = true }, Ct);
        if (!h.FleeceLimited)
        {
            Assert.Skip($"{h.GetType().Name} cannot limit the fleece space.");
        }

        var vda = h.Targets[0];
        await h.WriteAsync(vda, 0, new byte[4 * MiB].Fill(1), Ct);
        var capture = await h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, [vda]), Ct);

        // Overwriting 4 MiB needs 4 MiB of fleece to keep the old data; there is about 1 MiB.
        var fresh = new byte[4 * MiB].Fill(2);
        await h.WriteAsync(vda, 0, fresh, Ct);
        AssertSameBytes(fresh, await h.ReadLiveAsync(vda, 0, (int)(4 * MiB), Ct), "live after the snapshot broke");
        await Assert.ThrowsAnyAsync<NbdException>(() => ReadExportAsync(capture.Disk(vda).Endpoint, capture.Disk(vda).VirtualSize));

        await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct);
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task F21_an_instance_killed_mid_capture_fails_the_reads_and_release_still_cleans_up()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);
        var c1 = NewCheckpoint();
        var capture = await h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, h.Targets, c1), Ct);
        await h.KillAsync(Ct);

        await Assert.ThrowsAnyAsync<NbdException>(() => ReadExportAsync(capture.Disks[0].Endpoint, capture.Disks[0].VirtualSize));
        await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct);
        await AssertCleanAsync(h);

        await h.StartAgainAsync(Ct);
        Assert.Empty(await h.Driver.ListCapturesAsync(h.DomainId, Ct));
        var next = await h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, h.Targets), Ct);
        await h.Driver.ReleaseCaptureAsync(h.DomainId, next.Id, CaptureOutcome.Abandoned, Ct);
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task F03_a_capture_left_by_a_dead_process_is_found_by_tag_and_reconciled()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);
        var committed = NewCheckpoint();
        await CommitAsync(h, CaptureRequest.Full(h.DomainId, h.Targets, committed));
        var orphanCheckpoint = NewCheckpoint();
        var orphan = await h.Driver.BeginCaptureAsync(CaptureRequest.Since(h.DomainId, committed, h.Targets, orphanCheckpoint), Ct);

        await h.ReopenDriverAsync(Ct);

        var found = Assert.Single(await h.Driver.ListCapturesAsync(h.DomainId, Ct));
        Assert.Equal(orphan.Id, found.Id);
        Assert.False(found.StartedByThisDriver);
        await Assert.ThrowsAsync<DomainBusyException>(() => h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, h.Targets), Ct));

        var report = await h.Driver.ReconcileAsync(new ReconcilePlan { DomainId = h.DomainId, KeepCheckpoints = new HashSet<string> { committed } }, Ct);
        Assert.Equal([orphan.Id], report.ReleasedCaptures);
        Assert.Equal([committed], (await h.Driver.ListCheckpointsAsync(h.DomainId, Ct)).Select(c => c.Name));
        await AssertCleanAsync(h);

        // The next run is incremental from the last committed checkpoint.
        var next = await h.Driver.BeginCaptureAsync(CaptureRequest.Since(h.DomainId, committed, h.Targets), Ct);
        Assert.All(next.Disks, d => Assert.False(d.IsFull));
        await h.Driver.ReleaseCaptureAsync(h.DomainId, next.Id, CaptureOutcome.Abandoned, Ct);
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task F22_a_raw_disk_is_captured_in_full_with_the_reason_while_the_others_stay_incremental()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec { RawLastDisk = true }, Ct);
        var raw = h.Targets[^1];
        var domain = await h.Driver.GetDomainAsync(h.DomainId, Ct);
        Assert.False(domain.FindDisk(raw)!.SupportsCheckpoints);
        Assert.NotNull(domain.FindDisk(raw)!.CheckpointsUnsupportedReason);

        var c1 = NewCheckpoint();
        var first = await CommitAsync(h, CaptureRequest.Full(h.DomainId, h.Targets, c1));
        Assert.False(first.Disk(raw).InNewCheckpoint);
        var capture = await h.Driver.BeginCaptureAsync(CaptureRequest.Since(h.DomainId, c1, h.Targets), Ct);
        Assert.Equal(FullReadCode.CheckpointsUnsupported, capture.Disk(raw).FullReason!.Code);
        Assert.False(capture.Disk(h.Targets[0]).IsFull);
        await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct);
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task Restore_export_of_a_paused_domain_is_writable_and_refused_while_it_runs()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);
        if (!h.Driver.Capabilities.Lifecycle || !h.Driver.Capabilities.RestoreExports)
        {
            Assert.Skip($"The {h.Driver.Capabilities.Driver} driver has no lifecycle or restore exports.");
        }

        var vda = h.Targets[0];
        await Assert.ThrowsAsync<DomainStateException>(() => h.Driver.OpenRestoreExportAsync(h.DomainId, null, Ct));
        var c1 = NewCheckpoint();
        await h.Driver.CreateCheckpointAsync(h.DomainId, c1, null, Ct);

        using var watch = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var events = h.Driver.WatchEventsAsync(watch.Token);
        await h.Driver.DestroyAsync(h.DomainId, Ct);
        Assert.Equal(DomainState.ShutOff, (await h.Driver.GetDomainAsync(h.DomainId, Ct)).State);
        await h.Driver.StartAsync(h.DomainId, paused: true, Ct);
        Assert.Equal(DomainState.Paused, (await h.Driver.GetDomainAsync(h.DomainId, Ct)).State);

        var restore = await h.Driver.OpenRestoreExportAsync(h.DomainId, [vda], Ct);
        var data = new byte[1 * MiB].Fill(0x5a);
        await using (var client = await NbdClient.ConnectAsync(Assert.Single(restore.Disks).Endpoint, cancellationToken: Ct))
        {
            Assert.False(client.Export.IsReadOnly);
            await client.WriteAsync(2 * MiB, data, cancellationToken: Ct);
            await client.FlushAsync(Ct);
        }

        Assert.True(await h.Driver.CloseRestoreExportAsync(h.DomainId, restore.Id, Ct));
        await h.Driver.ResumeAsync(h.DomainId, Ct);
        Assert.Equal(DomainState.Running, (await h.Driver.GetDomainAsync(h.DomainId, Ct)).State);
        AssertSameBytes(data, await h.ReadLiveAsync(vda, 2 * MiB, (int)MiB, Ct), "restored range");

        // Checkpoints survive destroy and start; the restore's writes are changes since them.
        var capture = await h.Driver.BeginCaptureAsync(CaptureRequest.Since(h.DomainId, c1, [vda]), Ct);
        var disk = capture.Disk(vda);
        Assert.False(disk.IsFull);
        Assert.Equal(AlignOut([(2 * MiB, MiB)], (ulong)disk.Granularity!.Value), await DirtyRangesAsync(disk));
        await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Abandoned, Ct);

        // Lifecycle events arrive in order: stopped, started, resumed.
        var seen = new List<DomainEventKind>();
        await foreach (var e in events)
        {
            if (e.DomainId == h.DomainId && e.Kind is DomainEventKind.Stopped or DomainEventKind.Started or DomainEventKind.Resumed)
            {
                seen.Add(e.Kind);
                if (e.Kind == DomainEventKind.Resumed)
                {
                    break;
                }
            }
        }

        Assert.Equal([DomainEventKind.Stopped, DomainEventKind.Started, DomainEventKind.Resumed], seen);
        await AssertCleanAsync(h);
    }

    [Fact]
    public async Task Requests_naming_unknown_disks_or_bad_checkpoint_names_fail_before_touching_anything()
    {
        await using var h = await CreateHarnessAsync(new ContractDomainSpec(), Ct);
        await Assert.ThrowsAsync<DiskNotFoundException>(() => h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, ["nope"]), Ct));
        await Assert.ThrowsAsync<ArgumentException>(() => h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, h.Targets, DrydockNames.Prefix + "a/b"), Ct));
        await Assert.ThrowsAsync<CheckpointNotFoundException>(() => h.Driver.DeleteCheckpointAsync(h.DomainId, NewCheckpoint(), CheckpointDeleteMode.All, Ct));
        var c1 = NewCheckpoint();
        await h.Driver.CreateCheckpointAsync(h.DomainId, c1, null, Ct);
        await Assert.ThrowsAsync<CheckpointExistsException>(() => h.Driver.CreateCheckpointAsync(h.DomainId, c1, null, Ct));
        await Assert.ThrowsAsync<CheckpointExistsException>(() => h.Driver.BeginCaptureAsync(CaptureRequest.Full(h.DomainId, h.Targets, c1), Ct));
        Assert.Empty(await h.Driver.ListCapturesAsync(h.DomainId, Ct));
        await AssertCleanAsync(h);
    }

    // ---- helpers ----

    /// <summary>A new Drydock checkpoint name.</summary>
    protected static string NewCheckpoint() => DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch.AddDays(20000));

    private static async Task<Capture> CommitAsync(ContractHarness h, CaptureRequest request)
    {
        var capture = await h.Driver.BeginCaptureAsync(request, Ct);
        await h.Driver.ReleaseCaptureAsync(h.DomainId, capture.Id, CaptureOutcome.Committed, Ct);
        return capture;
    }

    private static async Task AssertCleanAsync(ContractHarness h)
    {
        var leftovers = await h.FindLeftoversAsync(Ct);
        Assert.True(leftovers.Count == 0, "Left behind: " + string.Join("; ", leftovers));
    }

    private static async Task<byte[]> ReadExportAsync(NbdUri endpoint, ulong size, ulong offset = 0, int? length = null)
    {
        var options = new NbdClientOptions { ExpectedSize = size };
        await using var client = await NbdClient.ConnectAsync(endpoint, options, Ct);
        var buffer = new byte[length ?? checked((int)size)];
        const int Chunk = 1024 * 1024;
        for (var at = 0; at < buffer.Length; at += Chunk)
        {
            await client.ReadAsync(offset + (ulong)at, buffer.AsMemory(at, Math.Min(Chunk, buffer.Length - at)), Ct);
        }

        return buffer;
    }

    private static async Task<List<(ulong Offset, ulong Length)>> DirtyRangesAsync(CaptureDisk disk)
    {
        var options = new NbdClientOptions { ExpectedSize = disk.VirtualSize };
        options.MetaContexts.Add(disk.ChangedBlocksContext!);
        await using var client = await NbdClient.ConnectAsync(disk.Endpoint, options, Ct);
        Assert.True(client.HasContext(disk.ChangedBlocksContext!), $"the export does not offer {disk.ChangedBlocksContext}");
        var map = await client.MapAsync([disk.ChangedBlocksContext!], cancellationToken: Ct);
        return Merge(map[disk.ChangedBlocksContext!].Where(e => (e.Flags & NbdContexts.DirtyFlag) != 0).Select(e => (e.Offset, e.Length)));
    }

    private static List<(ulong Offset, ulong Length)> AlignOut(IEnumerable<(ulong Offset, ulong Length)> ranges, ulong granularity) =>
        Merge(ranges.Select(r =>
        {
            var start = r.Offset / granularity * granularity;
            var end = (r.Offset + r.Length + granularity - 1) / granularity * granularity;
            return (start, end - start);
        }));

    private static List<(ulong Offset, ulong Length)> Merge(IEnumerable<(ulong Offset, ulong Length)> ranges)
    {
        var merged = new List<(ulong Offset, ulong Length)>();
        foreach (var (offset, length) in ranges.OrderBy(r => r.Offset))
        {
            if (merged.Count > 0 && merged[^1].Offset + merged[^1].Length >= offset)
            {
                var last = merged[^1];
                merged[^1] = (last.Offset, Math.Max(last.Offset + last.Length, offset + length) - last.Offset);
            }
            else
            {
                merged.Add((offset, length));
            }
        }

        return merged;
    }

    private static void AssertSameBytes(byte[] expected, byte[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        var first = expected.AsSpan().CommonPrefixLength(actual);
        Assert.True(first == expected.Length, $"{what}: first difference at byte {first} (expected 0x{(first < expected.Length ? expected[first] : 0):x2}, read 0x{(first < actual.Length ? actual[first] : 0):x2})");
    }

    /// <summary>What each disk must contain: every guest write goes to the disk and to this copy.</summary>
    private sealed class Shadow(ContractHarness harness)
    {
        private readonly Dictionary<string, byte[]> _disks = harness.Targets.ToDictionary(t => t, _ => new byte[16 * 1024 * 1024]);
        private readonly Lock _lock = new();

        public byte[] this[string target]
        {
            get
            {
                lock (_lock)
                {
                    return (byte[])_disks[target].Clone();
                }
            }
        }

        public Dictionary<string, byte[]> Copy()
        {
            lock (_lock)
            {
                return _disks.ToDictionary(p => p.Key, p => (byte[])p.Value.Clone());
            }
        }

        public async Task WriteAsync(string target, ulong offset, ulong length, int seed)
        {
            var data = new byte[length];
            new Random(seed).NextBytes(data);
            await harness.WriteAsync(target, offset, data, Ct);
            lock (_lock)
            {
                data.CopyTo(_disks[target].AsSpan((int)offset));
            }
        }

        public void Clear(string target, ulong offset, ulong length)
        {
            lock (_lock)
            {
                _disks[target].AsSpan((int)offset, (int)length).Clear();
            }
        }
    }
}

/// <summary>Small helpers for test data.</summary>
public static class ContractBytes
{
    /// <summary>Fills the array with <paramref name="value"/> and returns it.</summary>
    public static byte[] Fill(this byte[] buffer, byte value)
    {
        Array.Fill(buffer, value);
        return buffer;
    }
}
