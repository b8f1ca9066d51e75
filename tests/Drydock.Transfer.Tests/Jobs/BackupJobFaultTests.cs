using Drydock.Hypervisor;
using Drydock.Hypervisor.Sim;
using Drydock.Repository;
using Drydock.Repository.Format;
using Drydock.Transfer.Chain;
using Drydock.Transfer.Jobs;
using Xunit;
using static Drydock.Transfer.Tests.Jobs.JobHarness;

namespace Drydock.Transfer.Tests.Jobs;

/// <summary>The job-level outcomes FAULTS.md expects, on the simulated hypervisor.</summary>
public sealed class BackupJobFaultTests
{
    [Fact]
    public async Task F01_crash_makes_the_disks_with_inconsistent_bitmaps_full_and_the_chain_resumes()
    {
        await using var h = await CreateAsync(new SimDiskSpec("vda", DiskSize), new SimDiskSpec("vdb", DiskSize));
        await h.FillAsync();
        await h.BackupAsync();
        await h.Domain.DestroyAsync(Ct); // a clean stop stores the bitmaps ...
        await h.Domain.StartAsync(paused: false, Ct);
        await h.WorkAsync(6);
        await h.Domain.CrashAsync(Ct); // ... which a crash leaves inconsistent
        await h.Domain.StartAsync(paused: false, Ct);

        var (afterCrash, images) = await h.BackupAndImageAsync();

        Assert.All(afterCrash.Disks, d => Assert.Equal(FullReasonCode.BitmapInconsistent, d.FullReason?.Code));
        Assert.Contains(afterCrash.Repairs, r => r.Kind == CheckpointRepairKind.Delete);
        await h.AssertRestoresAsync(2, images);

        await h.WorkAsync(4);
        var (next, nextImages) = await h.BackupAndImageAsync();
        Assert.All(next.Disks, d => Assert.Equal(DiskBackupLevel.Incremental, d.Level));
        await h.AssertRestoresAsync(3, nextImages);
    }

    [Fact]
    public async Task F01_an_inconsistent_bitmap_on_one_disk_leaves_the_other_incremental()
    {
        await using var h = await CreateAsync(new SimDiskSpec("vda", DiskSize), new SimDiskSpec("vdb", DiskSize));
        await h.FillAsync();
        var first = await h.BackupAsync();
        await h.WorkAsync(6);
        await h.Domain.MarkBitmapInconsistentAsync("vda", first.Manifest.Disks[0].CheckpointName!, Ct);

        var (result, images) = await h.BackupAndImageAsync();

        Assert.Equal(FullReasonCode.BitmapInconsistent, result.Disks.Single(d => d.Target == "vda").FullReason?.Code);
        Assert.Equal(DiskBackupLevel.Incremental, result.Disks.Single(d => d.Target == "vdb").Level);
        await h.AssertRestoresAsync(2, images);
    }

    [Fact]
    public async Task F02_a_stale_checkpoint_under_the_new_name_is_removed_first_and_the_capture_succeeds()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        await h.BackupAsync();
        const string stale = "drydock-20250101T000000Z-5ta1e000";
        await h.Driver.CreateCheckpointAsync(h.Domain.Id, stale, cancellationToken: Ct);
        await h.Domain.MarkBitmapInconsistentAsync("vda", stale, Ct);
        h.Options.CheckpointNamer = _ => stale;
        await h.WorkAsync(4);

        var (result, images) = await h.BackupAndImageAsync();

        Assert.Equal(CheckpointRepairKind.Delete, result.Repairs[0].Kind);
        Assert.Equal(stale, result.Repairs[0].Checkpoint);
        Assert.Equal(DiskBackupLevel.Incremental, result.Disks[0].Level);
        Assert.Equal(stale, result.Manifest.Disks[0].CheckpointName);
        await h.AssertRestoresAsync(2, images);
    }

    [Fact]
    public async Task F03_a_leftover_capture_and_an_orphan_checkpoint_are_cleaned_and_the_next_run_is_incremental_from_the_last_committed()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        var committed = await h.BackupAsync();
        var committedCheckpoint = committed.Manifest.Disks[0].CheckpointName!;
        await h.WorkAsync(4);

        // An earlier process of this chain (its checkpoints carry this repository's tag) began a capture and died; another
        // left a bare checkpoint.
        var tag = DrydockNames.ChainTag(h.Repository.RepositoryId);
        var dead1 = DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch.AddDays(1), tag);
        var dead2 = DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch.AddDays(2), tag);
        await using var dead = h.Host.Connect();
        var leftover = await dead.BeginCaptureAsync(CaptureRequest.Since(h.Domain.Id, committedCheckpoint, ["vda"], dead1), Ct);
        await h.Driver.CreateCheckpointAsync(h.Domain.Id, dead2, cancellationToken: Ct);
        await h.WorkAsync(4);

        var (result, images) = await h.BackupAndImageAsync();

        Assert.Equal(DiskBackupLevel.Incremental, result.Disks[0].Level);
        Assert.Equal(1, result.Manifest.Disks[0].ParentSequence);
        Assert.Contains(result.Repairs, r => r is { Kind: CheckpointRepairKind.Delete, Checkpoint: var c } && c == dead2);
        var checkpoints = await h.CheckpointNamesAsync();
        Assert.DoesNotContain(dead1, checkpoints);
        Assert.DoesNotContain(dead2, checkpoints);
        Assert.NotEqual(leftover.Id, h.Domain.CaptureId);
        Assert.Null(h.Domain.CaptureId);
        await h.AssertRestoresAsync(2, images);
    }

    [Fact]
    public async Task F04_a_failed_upload_publishes_nothing_and_does_not_advance_the_base()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        var committed = await h.BackupAsync();
        var before = await h.CheckpointNamesAsync();
        await h.WorkAsync(6);
        h.Store.FailChunkPuts = true;

        var error = await Assert.ThrowsAnyAsync<RepositoryException>(() => h.BackupAsync());
        Assert.Contains("injected", error.Message, StringComparison.Ordinal);

        Assert.Single(await h.PointsAsync());
        Assert.Null(h.Domain.CaptureId);
        Assert.Equal(before, await h.CheckpointNamesAsync()); // the failed run's checkpoint is gone, the base untouched

        h.Store.FailChunkPuts = false;
        var (result, images) = await h.BackupAndImageAsync();
        Assert.Equal(DiskBackupLevel.Incremental, result.Disks[0].Level);
        Assert.Equal(committed.Point.Sequence, result.Manifest.Disks[0].ParentSequence);
        await h.AssertRestoresAsync(result.Point.Sequence, images);
    }

    [Fact]
    public async Task F05_lost_checkpoint_metadata_is_redefined_and_the_backup_stays_incremental()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        var first = await h.BackupAsync();
        var checkpoint = first.Manifest.Disks[0].CheckpointName!;
        await h.Domain.LoseCheckpointMetadataAsync(checkpoint, Ct);
        await h.WorkAsync(4);

        var (result, images) = await h.BackupAndImageAsync();

        Assert.Contains(result.Repairs, r => r is { Kind: CheckpointRepairKind.Redefine } && r.Checkpoint == checkpoint);
        Assert.Equal(DiskBackupLevel.Incremental, result.Disks[0].Level);
        await h.AssertRestoresAsync(2, images);
    }

    [Fact]
    public async Task F05_a_redefine_that_fails_validation_falls_back_to_full()
    {
        await using var h = await CreateAsync(new SimDiskSpec("vda", DiskSize), new SimDiskSpec("vdb", DiskSize));
        await h.FillAsync();
        var first = await h.BackupAsync();
        var checkpoint = first.Manifest.Disks[0].CheckpointName!;
        await h.Domain.LoseCheckpointMetadataAsync(checkpoint, Ct);
        await h.Domain.RemoveBitmapAsync("vdb", checkpoint, Ct); // the saved XML names it: validation fails
        await h.WorkAsync(4);

        var (result, images) = await h.BackupAndImageAsync();

        Assert.Equal(FullReasonCode.CheckpointMissing, result.Disks.Single(d => d.Target == "vda").FullReason?.Code);
        Assert.Equal(FullReasonCode.BitmapMissing, result.Disks.Single(d => d.Target == "vdb").FullReason?.Code);
        Assert.DoesNotContain(checkpoint, await h.CheckpointNamesAsync());
        await h.AssertRestoresAsync(2, images);
    }

    [Fact]
    public async Task F06_a_missing_bitmap_makes_the_disk_full_and_its_metadata_is_deleted()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        var first = await h.BackupAsync();
        var checkpoint = first.Manifest.Disks[0].CheckpointName!;
        await h.Domain.RemoveBitmapAsync("vda", checkpoint, Ct);
        await h.WorkAsync(4);

        var (result, images) = await h.BackupAndImageAsync();

        Assert.Equal(FullReasonCode.BitmapMissing, result.Disks[0].FullReason?.Code);
        Assert.Contains(result.Repairs, r => r is { Kind: CheckpointRepairKind.DeleteMetadata } && r.Checkpoint == checkpoint);
        Assert.DoesNotContain(checkpoint, await h.CheckpointNamesAsync());
        await h.AssertRestoresAsync(2, images);

        await h.WorkAsync(2);
        Assert.Equal(DiskBackupLevel.Incremental, (await h.BackupAsync()).Disks[0].Level); // never stuck
    }

    [Fact]
    public async Task F09_a_grown_disk_is_full_and_restores_at_its_new_size()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        await h.BackupAsync();
        await h.Domain.ResizeDiskAsync("vda", DiskSize * 2, Ct);
        await h.WorkAsync(6);

        var (result, images) = await h.BackupAndImageAsync();

        Assert.Equal(FullReasonCode.Resized, result.Disks[0].FullReason?.Code);
        Assert.Equal((long)DiskSize * 2, result.Manifest.Disks[0].VirtualSize);
        Assert.Equal((int)DiskSize * 2, images["vda"].Length);
        await h.AssertRestoresAsync(2, images);
    }

    [Fact]
    public async Task F10_a_replaced_disk_is_full()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        await h.BackupAsync();
        await h.Domain.ReplaceDiskAsync("vda", Ct);
        await h.WorkAsync(6);

        var (result, images) = await h.BackupAndImageAsync();

        Assert.Equal(FullReasonCode.Replaced, result.Disks[0].FullReason?.Code);
        Assert.Equal(h.Domain.Disk("vda").Identity, result.Manifest.Disks[0].Identity);
        await h.AssertRestoresAsync(2, images);
    }

    [Fact]
    public async Task F11_a_disk_new_to_the_chain_is_full_and_the_others_stay_incremental()
    {
        // The simulator cannot hot-add a disk; a disk left out of the previous point is the same case for the chain.
        await using var h = await CreateAsync(new SimDiskSpec("vda", DiskSize), new SimDiskSpec("vdb", DiskSize));
        await h.FillAsync();
        await h.BackupAsync(disks: ["vda"]);
        await h.WorkAsync(6);

        var (result, images) = await h.BackupAndImageAsync();

        Assert.Equal(DiskBackupLevel.Incremental, result.Disks.Single(d => d.Target == "vda").Level);
        Assert.Equal(FullReasonCode.NewDisk, result.Disks.Single(d => d.Target == "vdb").FullReason?.Code);
        await h.AssertRestoresAsync(2, images);
    }

    [Fact]
    public async Task F13_a_reverted_disk_is_full_and_restores_the_reverted_content()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        var saved = await h.Domain.Disk("vda").SaveImageAsync(Ct);
        await h.WorkAsync(6);
        await h.BackupAsync();
        await h.Domain.RevertDiskAsync("vda", saved, Ct);

        var (result, images) = await h.BackupAndImageAsync();

        Assert.Equal(FullReasonCode.GenerationChanged, result.Disks[0].FullReason?.Code);
        Assert.Equal("1", result.Manifest.Labels["disk.vda.generation"]);
        await h.AssertRestoresAsync(2, images);
    }

    [Fact]
    public async Task F14_a_base_deleted_between_plan_and_capture_makes_the_disk_full_with_the_drivers_reason()
    {
        await using var h = await CreateAsync(new SimDiskSpec("vda", DiskSize), new SimDiskSpec("vdb", DiskSize));
        await h.FillAsync();
        var first = await h.BackupAsync();
        await h.WorkAsync(6);
        var driver = new HookedDriver(h.Driver)
        {
            // Someone removes the base's bitmap on vda right before the capture.
            BeforeCapture = request => h.Domain.RemoveBitmapAsync("vda", request.Disks[0].SinceCheckpoint!, Ct),
        };

        var result = await new BackupJob(driver, h.Repository, h.Options).RunAsync(new BackupJobRequest { Domain = h.Domain.Id }, cancellationToken: Ct);
        var images = new Dictionary<string, byte[]> { ["vda"] = await h.ImageAsync("vda"), ["vdb"] = await h.ImageAsync("vdb") };

        var vda = result.Disks.Single(d => d.Target == "vda");
        Assert.Equal(DiskBackupLevel.Full, vda.Level);
        Assert.Equal(FullReasonCode.DriverFallback, vda.FullReason?.Code);
        Assert.Contains("bitmap", vda.FullReason!.Message, StringComparison.Ordinal);
        Assert.Null(result.Manifest.Disks.Single(d => d.Name == "vda").ParentSequence);
        Assert.Equal(DiskBackupLevel.Incremental, result.Disks.Single(d => d.Target == "vdb").Level);
        Assert.Equal(first.Point.Sequence, result.Manifest.Disks.Single(d => d.Name == "vdb").ParentSequence);
        await h.AssertRestoresAsync(2, images);
    }

    [Fact]
    public async Task Incremental_without_fallback_fails_when_the_base_vanishes_before_the_capture()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        await h.BackupAsync();
        var driver = new HookedDriver(h.Driver) { BeforeCapture = request => h.Domain.RemoveBitmapAsync("vda", request.Disks[0].SinceCheckpoint!, Ct) };

        await Assert.ThrowsAnyAsync<Exception>(() => new BackupJob(driver, h.Repository, h.Options)
            .RunAsync(new BackupJobRequest { Domain = h.Domain.Id, Level = RequestedLevel.Incremental, AllowFallback = false }, cancellationToken: Ct));

        Assert.Single(await h.PointsAsync());
        Assert.Null(h.Domain.CaptureId);
    }

    [Fact]
    public async Task F15_a_foreign_checkpoint_is_never_touched()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        await h.Domain.CreateForeignCheckpointAsync("veeam-cbt-1", Ct);
        for (var i = 0; i < 3; i++)
        {
            await h.BackupAsync(i == 2 ? RequestedLevel.Full : RequestedLevel.Auto);
            await h.WorkAsync(3);
        }

        var foreign = (await h.Driver.ListCheckpointsAsync(h.Domain.Id, Ct)).Single(c => c.Name == "veeam-cbt-1");
        Assert.True(foreign.HasMetadata);
        Assert.NotNull(h.Domain.Disk("vda").Bitmaps.SingleOrDefault(b => b.Name == "veeam-cbt-1"));
    }

    [Fact]
    public async Task F19_trimmed_ranges_restore_as_zeros()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        await h.BackupAsync();
        var disk = h.Domain.Disk("vda");
        await disk.TrimAsync(ChunkSize * 3, ChunkSize * 2, Ct);
        await disk.TrimAsync((ChunkSize * 10) + 4096, 8192, Ct);

        var (result, images) = await h.BackupAndImageAsync();

        Assert.Equal(DiskBackupLevel.Incremental, result.Disks[0].Level);
        Assert.True(images["vda"].AsSpan(ChunkSize * 3, ChunkSize * 2).IndexOfAnyExcept((byte)0) < 0);
        await h.AssertRestoresAsync(2, images);
    }

    [Fact]
    public async Task F21_a_domain_destroyed_mid_backup_fails_the_job_and_leaves_nothing()
    {
        await using var h = await CreateAsync(new SimDiskSpec("vda", DiskSize * 4));
        await h.FillAsync();
        h.Store.BeforeFirstChunkPut = () => h.Domain.DestroyAsync(Ct);

        var error = await Assert.ThrowsAsync<SourceReadException>(() => h.BackupAsync());
        Assert.Equal("vda", error.Disk);

        Assert.Empty(await h.PointsAsync());
        Assert.Null(h.Domain.CaptureId);
        Assert.Empty(await h.CheckpointNamesAsync());
    }
}
