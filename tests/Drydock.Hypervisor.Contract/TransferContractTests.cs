using System.Globalization;
using Drydock.Repository;
using Drydock.Repository.Format;
using Drydock.Repository.Maintenance;
using Drydock.Storage;
using Drydock.Storage.FileSystem;
using Drydock.TestKit;
using Drydock.Transfer;
using Drydock.Transfer.Backup;
using Drydock.Transfer.Chain;
using Drydock.Transfer.Jobs;
using Drydock.Transfer.Restore;
using Xunit;

namespace Drydock.Hypervisor.Contract;

/// <summary>
/// End to end (issue 6 point 3): <see cref="BackupJob"/> and <see cref="RestoreJob"/> against a real hypervisor (a
/// <see cref="ContractHarness"/>) and a real file-system repository. "The disk at that capture" is read through the
/// guest's path right after each job returns (nothing writes in between); every restore is compared with it by
/// <c>qemu-img compare</c>. Faults from FAULTS.md are injected through the harness's hooks, a driver wrapper
/// (<see cref="HookedDriver"/>) and a blob store wrapper (<see cref="HookedBlobStore"/>); every test ends by checking the
/// real state for leftovers.
/// </summary>
public abstract class TransferContractTests
{
    private const ulong MiB = 1024 * 1024;
    private const int ChunkSize = 64 * 1024;

    /// <summary>Starts a hypervisor with one domain as <paramref name="spec"/> asks.</summary>
    protected abstract Task<ContractHarness> CreateHarnessAsync(ContractDomainSpec spec, CancellationToken cancellationToken);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Full_incremental_differential_each_restore_byte_exact_and_trimmed_ranges_restore_as_zeros()
    {
        await using var rig = await StartAsync();
        var (vda, vdb) = (rig.H.Targets[0], rig.H.Targets[1]);
        await rig.WriteAsync(vda, 0, 4 * MiB, seed: 1);
        await rig.WriteAsync(vdb, 1 * MiB, 2 * MiB, seed: 2);

        var full = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.All(full.Disks, d => Assert.Equal(DiskBackupLevel.Full, d.Level));
        Assert.All(full.Disks, d => Assert.Equal(FullReasonCode.NoPriorPoint, d.FullReason?.Code));

        List<(string Target, ulong Offset, ulong Length)> written =
            [(vda, (1 * MiB) + 4096, 100), (vda, 5 * MiB, 192 * 1024), (vda, (15 * MiB) + 65536 - 1, 2), (vdb, 0, 1)];
        var seed = 10;
        foreach (var (target, offset, length) in written)
        {
            await rig.WriteAsync(target, offset, length, seed++);
        }

        var incremental = await rig.BackupAsync(RequestedLevel.Incremental);
        foreach (var disk in incremental.Disks)
        {
            Assert.Equal(DiskBackupLevel.Incremental, disk.Level);
            Assert.Equal(full.Point.Sequence, rig.ManifestDisk(incremental, disk.Target).ParentSequence);
            var bound = AlignedBytes(written.Where(w => w.Target == disk.Target).Select(w => (w.Offset, w.Length)), ChunkSize);
            Assert.InRange(disk.Transfer.BytesRead, 1, bound);
        }

        await rig.WriteAsync(vda, 9 * MiB, 128 * 1024, seed: 20);
        await rig.H.TrimAsync(vda, 1 * MiB, 1 * MiB, Ct);
        await rig.WriteAsync(vdb, 12 * MiB, 64 * 1024, seed: 21);

        var differential = await rig.BackupAsync(RequestedLevel.Differential);
        foreach (var disk in differential.Disks)
        {
            Assert.Equal(DiskBackupLevel.Differential, disk.Level);
            Assert.Equal(full.Point.Sequence, rig.ManifestDisk(differential, disk.Target).ParentSequence);
        }

        await rig.AssertRestoresAsync(full);
        await rig.AssertRestoresAsync(incremental);
        var restored = await rig.AssertRestoresAsync(differential);
        await rig.AssertRestoresAsync(differential, DiskImageFormat.Qcow2);

        // F19: what the guest trimmed after the incremental restores as zeros in the differential, not as the old data.
        var trimmed = await ReadFileAsync(restored[vda], 1 * MiB, (int)MiB);
        Assert.True(trimmed.AsSpan().IndexOfAnyExcept((byte)0) < 0, "the trimmed range restored with data");
        var before = await ReadFileAsync((await rig.RestoreAsync(incremental, DiskImageFormat.Raw))[vda], 1 * MiB, (int)MiB);
        Assert.True(before.AsSpan().IndexOfAnyExcept((byte)0) >= 0, "the range was data before the trim");
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task Chunks_larger_than_the_bitmap_granule_are_patched_from_the_parent_reading_only_what_changed()
    {
        // 1 MiB chunks over 64 KiB bitmap granules: a small change re-reads its granules, not its whole chunk; the rest of
        // the chunk comes from the parent's copy in the repository. Every point must still restore byte-exact.
        const int bigChunk = 1024 * 1024;
        const ulong granule = 64 * 1024;
        await using var rig = await StartAsync(chunkSize: bigChunk);
        var (vda, vdb) = (rig.H.Targets[0], rig.H.Targets[1]);
        await rig.WriteAsync(vda, 0, 8 * MiB, seed: 1);
        await rig.WriteAsync(vdb, 0, 2 * MiB, seed: 2);
        var full = await rig.BackupAsync(RequestedLevel.Full);

        await rig.WriteAsync(vda, (2 * MiB) + granule, 2 * granule, seed: 3);   // two granules of chunk 2
        await rig.WriteAsync(vda, (5 * MiB) + 4096, 100, seed: 4);              // one granule of chunk 5
        await rig.WriteAsync(vdb, (1 * MiB) + (8 * granule), granule, seed: 5); // one granule of chunk 1
        var incremental = await rig.BackupAsync(RequestedLevel.Incremental);

        var vdaReport = rig.Report(incremental, vda).Transfer;
        Assert.Equal(2, vdaReport.ChunksRead);
        Assert.Equal(2, vdaReport.ChunksPatched);
        Assert.InRange(vdaReport.BytesRead, (long)((2 * granule) + 100), (long)(3 * granule));
        Assert.Equal(1, rig.Report(incremental, vdb).Transfer.ChunksPatched);
        Assert.InRange(rig.Report(incremental, vdb).Transfer.BytesRead, (long)granule, (long)granule);

        // A trim inside a chunk: the patched chunk must read zeros there, not the parent's old bytes (F19).
        await rig.H.TrimAsync(vda, 6 * MiB, 4 * granule, Ct);
        await rig.WriteAsync(vda, (6 * MiB) + (8 * granule), granule, seed: 6);
        var differential = await rig.BackupAsync(RequestedLevel.Differential);
        Assert.All(differential.Disks, d => Assert.Equal(DiskBackupLevel.Differential, d.Level));
        Assert.True(rig.Report(differential, vda).Transfer.ChunksPatched >= 3, "the differential's partly changed chunks were not patched");

        await rig.AssertRestoresAsync(full);
        await rig.AssertRestoresAsync(incremental);
        var restored = await rig.AssertRestoresAsync(differential);
        var trimmed = await ReadFileAsync(restored[vda], 6 * MiB, (int)(4 * granule));
        Assert.True(trimmed.AsSpan().IndexOfAnyExcept((byte)0) < 0, "the trimmed granules restored with the parent's data");
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task Restore_into_the_paused_domain_writes_only_the_changed_chunks()
    {
        await using var rig = await StartAsync();
        var driver = rig.H.Driver;
        if (!driver.Capabilities.Lifecycle || !driver.Capabilities.RestoreExports)
        {
            Assert.Skip($"The {driver.Capabilities.Driver} driver has no lifecycle or restore exports.");
        }

        var (vda, vdb) = (rig.H.Targets[0], rig.H.Targets[1]);
        await rig.WriteAsync(vda, 0, 4 * MiB, seed: 1);
        await rig.WriteAsync(vdb, 1 * MiB, 2 * MiB, seed: 2);
        var point = await rig.BackupAsync(RequestedLevel.Auto);

        // After the point: 4 chunks of data rewritten and 1 zero chunk written on vda, 1 zero chunk written on vdb.
        await rig.WriteAsync(vda, 2 * MiB, 256 * 1024, seed: 3);
        await rig.WriteAsync(vda, 10 * MiB, 4096, seed: 4);
        await rig.WriteAsync(vdb, 0, 4096, seed: 5);
        var changed = new Dictionary<string, long> { [vda] = 5, [vdb] = 1 };

        await rig.H.Driver.DestroyAsync(rig.H.DomainId, Ct);
        await rig.H.Driver.StartAsync(rig.H.DomainId, paused: true, Ct);
        var result = await rig.Restore.IntoDomainAsync(rig.Request(point), rig.Driver, rig.H.DomainId, changedOnly: true, cancellationToken: Ct);

        Assert.Equal(point.Point, result.Point);
        foreach (var (disk, _) in result.Disks)
        {
            var total = (long)(16 * MiB / ChunkSize);
            Assert.Equal(changed[disk.Disk], disk.ChunksWritten + disk.ChunksZeroed);
            Assert.Equal(total - changed[disk.Disk], disk.ChunksSkipped);
            Assert.True(disk.BytesCompared > 0, $"{disk.Disk}: nothing was compared");
        }

        await rig.H.Driver.ResumeAsync(rig.H.DomainId, Ct);
        foreach (var target in rig.H.Targets)
        {
            var live = await rig.H.ReadLiveAsync(target, 0, (int)(16 * MiB), Ct);
            AssertSameBytes(await File.ReadAllBytesAsync(rig.Expected(point, target), Ct), live, target + " after the restore");
        }

        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F11_a_disk_added_between_backups_is_backed_up_full_while_the_other_stays_incremental()
    {
        await using var rig = await StartAsync();
        var (vda, vdb) = (rig.H.Targets[0], rig.H.Targets[1]);
        await rig.WriteAsync(vda, 0, 2 * MiB, seed: 1);
        await rig.WriteAsync(vdb, 3 * MiB, 1 * MiB, seed: 2);

        // The first point has only vda: for the chain, vdb appears in the second one.
        var first = await rig.BackupAsync(RequestedLevel.Auto, [vda]);
        Assert.Equal([vda], first.Manifest.Disks.Select(d => d.Name));
        await rig.WriteAsync(vda, 6 * MiB, 64 * 1024, seed: 3);

        var second = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.Equal(DiskBackupLevel.Incremental, rig.Report(second, vda).Level);
        Assert.Equal(DiskBackupLevel.Full, rig.Report(second, vdb).Level);
        Assert.Equal(FullReasonCode.NewDisk, rig.Report(second, vdb).FullReason?.Code);
        await rig.AssertRestoresAsync(first);
        await rig.AssertRestoresAsync(second);
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F11_a_hot_added_disk_goes_full_the_others_stay_incremental_and_a_removed_disk_ends_its_lineage_cleanly()
    {
        await using var rig = await StartAsync();
        var (vda, vdb) = (rig.H.Targets[0], rig.H.Targets[1]);
        await rig.WriteAsync(vda, 0, 2 * MiB, seed: 1);
        await rig.WriteAsync(vdb, 1 * MiB, 1 * MiB, seed: 2);
        var first = await rig.BackupAsync(RequestedLevel.Auto);

        const string vdc = "vdc";
        await rig.H.HotAddDiskAsync(vdc, 8 * MiB, Ct);
        Assert.Contains(vdc, rig.H.Targets);
        await rig.WriteAsync(vdc, 2 * MiB, 512 * 1024, seed: 3);
        await rig.WriteAsync(vda, 6 * MiB, 64 * 1024, seed: 4);
        var second = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.Equal(DiskBackupLevel.Incremental, rig.Report(second, vda).Level);
        Assert.Equal(DiskBackupLevel.Incremental, rig.Report(second, vdb).Level);
        Assert.Equal(DiskBackupLevel.Full, rig.Report(second, vdc).Level);
        Assert.Equal(FullReasonCode.NewDisk, rig.Report(second, vdc).FullReason?.Code);

        // From now on the new disk carries the checkpoint too.
        await rig.WriteAsync(vdc, 4 * MiB, 64 * 1024, seed: 5);
        var third = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.All(third.Disks, d => Assert.Equal(DiskBackupLevel.Incremental, d.Level));
        Assert.Equal(second.Point.Sequence, rig.ManifestDisk(third, vdc).ParentSequence);

        // A removed disk leaves the next point; the others go on incrementally; nothing is left behind for it.
        await rig.H.RemoveDiskAsync(vdb, Ct);
        Assert.DoesNotContain(vdb, rig.H.Targets);
        await rig.WriteAsync(vda, 8 * MiB, 64 * 1024, seed: 6);
        var fourth = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.Equal([vda, vdc], fourth.Manifest.Disks.Select(d => d.Name).Order(StringComparer.Ordinal));
        Assert.All(fourth.Disks, d => Assert.Equal(DiskBackupLevel.Incremental, d.Level));
        Assert.Equal(third.Point.Sequence, rig.ManifestDisk(fourth, vda).ParentSequence);

        // Every point restores, the removed disk's ones included.
        await rig.AssertRestoresAsync(first);
        await rig.AssertRestoresAsync(second);
        await rig.AssertRestoresAsync(third);
        await rig.AssertRestoresAsync(fourth);
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F01_F02_after_an_unclean_kill_the_disks_go_full_once_every_point_still_restores_and_the_chain_resumes()
    {
        await using var rig = await StartAsync();
        var vda = rig.H.Targets[0];
        await rig.WriteAsync(vda, 0, 2 * MiB, seed: 1);
        var full = await rig.BackupAsync(RequestedLevel.Auto);
        await rig.WriteAsync(vda, 4 * MiB, 128 * 1024, seed: 2);
        var incremental = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.All(incremental.Disks, d => Assert.Equal(DiskBackupLevel.Incremental, d.Level));

        // Stored cleanly once (so the bitmaps are in the images), then written and killed: they come back inconsistent.
        await rig.H.RestartCleanlyAsync(Ct);
        await rig.WriteAsync(vda, 8 * MiB, 64 * 1024, seed: 3);
        await rig.H.KillAsync(Ct);
        await rig.H.StartAgainAsync(Ct);

        var after = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.All(after.Disks, d =>
        {
            Assert.Equal(DiskBackupLevel.Full, d.Level);
            Assert.Contains(d.FullReason?.Code, new FullReasonCode?[] { FullReasonCode.BitmapInconsistent, FullReasonCode.DriverFallback });
        });

        // F02: the stale checkpoint is reconciled, not tripped over again: the next run is incremental.
        await rig.WriteAsync(vda, 12 * MiB, 64 * 1024, seed: 4);
        var next = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.All(next.Disks, d => Assert.Equal(DiskBackupLevel.Incremental, d.Level));
        Assert.All(next.Disks, d => Assert.Equal(after.Point.Sequence, rig.ManifestDisk(next, d.Target).ParentSequence));
        var health = await rig.H.Driver.GetDiskHealthAsync(rig.H.DomainId, Ct);
        Assert.DoesNotContain(health.SelectMany(d => d.Bitmaps), b => b.IsOwned && (b.Inconsistent || !b.Usable));

        foreach (var point in new[] { full, incremental, after, next })
        {
            await rig.AssertRestoresAsync(point);
        }

        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task Two_repositories_backing_up_the_domain_alternately_keep_both_chains_incremental_and_exact()
    {
        // A local and an offsite repository of the same domain: each job deletes only its own chain's checkpoints, so
        // neither chain loses its base to the other's orphan sweep or rotation.
        await using var rig = await StartAsync();
        var vda = rig.H.Targets[0];
        using var offsite = await BackupRepository.InitAsync(
            new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = rig.Directory.CreateSubdirectory("offsite"), Durable = false }),
            "offsite passphrase",
            new RepositoryInitOptions { ChunkSize = 256 * 1024, KdfIterations = 1000 },
            new RepositoryOptions { MaxParallelism = 2, QueueDepth = 4 },
            cancellationToken: Ct);
        async Task<(BackupJobResult Result, byte[] Disk)> OffsiteAsync(RequestedLevel level)
        {
            var job = new BackupJob(rig.Driver, offsite, new BackupJobOptions { Pipeline = new BackupPipelineOptions { Connections = 2, ReadsInFlight = 8 } });
            var result = await job.RunAsync(new BackupJobRequest { Domain = rig.H.DomainId, Level = level, Disks = [vda], AllowFallback = false }, cancellationToken: Ct);
            return (result, await rig.H.ReadLiveAsync(vda, 0, checked((int)result.Manifest.Disks[0].VirtualSize), Ct));
        }

        await rig.WriteAsync(vda, 0, 1 * MiB, seed: 1);
        await rig.BackupAsync(RequestedLevel.Full, [vda]);
        var (offsiteFull, _) = await OffsiteAsync(RequestedLevel.Full);
        await rig.WriteAsync(vda, 2 * MiB, 64 * 1024, seed: 2);
        var local = await rig.BackupAsync(RequestedLevel.Incremental, [vda]);
        await rig.WriteAsync(vda, 3 * MiB, 64 * 1024, seed: 3);
        var (offsiteInc, offsiteDisk) = await OffsiteAsync(RequestedLevel.Incremental);
        await rig.WriteAsync(vda, 4 * MiB, 64 * 1024, seed: 4);
        var local2 = await rig.BackupAsync(RequestedLevel.Incremental, [vda]);

        Assert.Equal(DiskBackupLevel.Incremental, rig.Report(local, vda).Level);
        Assert.Equal(DiskBackupLevel.Incremental, rig.Report(local2, vda).Level);
        Assert.Equal(DiskBackupLevel.Incremental, offsiteInc.Disks[0].Level);
        Assert.Equal(offsiteFull.Point.Sequence, offsiteInc.Manifest.Disks[0].ParentSequence);
        var names = await rig.CheckpointNamesAsync();
        Assert.Contains(rig.ManifestDisk(local2, vda).CheckpointName!, names);
        Assert.Contains(offsiteInc.Manifest.Disks[0].CheckpointName!, names);
        await rig.AssertRestoresAsync(local);
        await rig.AssertRestoresAsync(local2);
        var restored = await new RestoreJob(offsite, new RestorePipelineOptions { Connections = 2 }).ToDirectoryAsync(
            rig.Request(offsiteInc), rig.Directory.File("offsite-restore"), DiskImageFormat.Raw, cancellationToken: Ct);
        AssertSameBytes(offsiteDisk, await File.ReadAllBytesAsync(Assert.Single(restored.Disks).Destination, Ct), "offsite point restored");
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F03_a_capture_left_by_a_dead_run_is_released_and_the_next_job_is_incremental_from_the_last_committed_checkpoint()
    {
        await using var rig = await StartAsync();
        var vda = rig.H.Targets[0];
        await rig.WriteAsync(vda, 0, 1 * MiB, seed: 1);
        var full = await rig.BackupAsync(RequestedLevel.Auto);
        var committed = Assert.Single(full.Manifest.Disks.Select(d => d.CheckpointName).Where(c => c is not null).Distinct());

        // A run of this chain (its checkpoints carry this repository's tag) that captured with a new checkpoint and died
        // before it committed or released anything.
        var orphanCheckpoint = DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch.AddDays(20000), DrydockNames.ChainTag(rig.Repository.RepositoryId));
        await rig.H.Driver.BeginCaptureAsync(CaptureRequest.Since(rig.H.DomainId, committed!, rig.H.Targets, orphanCheckpoint), Ct);
        await rig.H.ReopenDriverAsync(Ct);
        await rig.WriteAsync(vda, 3 * MiB, 64 * 1024, seed: 2);

        var next = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.All(next.Disks, d => Assert.Equal(DiskBackupLevel.Incremental, d.Level));
        Assert.All(next.Disks, d => Assert.Equal(full.Point.Sequence, rig.ManifestDisk(next, d.Target).ParentSequence));
        Assert.Empty(await rig.H.Driver.ListCapturesAsync(rig.H.DomainId, Ct));
        Assert.DoesNotContain(orphanCheckpoint, (await rig.H.Driver.ListCheckpointsAsync(rig.H.DomainId, Ct)).Select(c => c.Name));
        await rig.AssertRestoresAsync(next);
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F04_a_failed_upload_publishes_nothing_keeps_no_checkpoint_and_the_next_job_is_incremental_from_the_committed_one()
    {
        await using var rig = await StartAsync();
        var vda = rig.H.Targets[0];
        await rig.WriteAsync(vda, 0, 1 * MiB, seed: 1);
        var full = await rig.BackupAsync(RequestedLevel.Auto);
        var checkpointsBefore = await rig.CheckpointNamesAsync();
        await rig.WriteAsync(vda, 5 * MiB, 256 * 1024, seed: 2);

        rig.Store.BeforePut = name => name.StartsWith(ObjectNames.ChunksPrefix, StringComparison.Ordinal)
            ? new BlobAccessDeniedException("Permission denied (injected)", rig.Store.Location, name)
            : null;
        var failure = await Assert.ThrowsAnyAsync<Exception>(() => rig.BackupAsync(RequestedLevel.Auto));
        ExceptionChain.AssertContains<BlobStoreException>(failure);
        rig.Store.BeforePut = null;

        Assert.Equal([full.Point], await rig.PointsAsync());
        Assert.Equal(checkpointsBefore, await rig.CheckpointNamesAsync());
        await rig.AssertCleanAsync();

        var next = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.All(next.Disks, d => Assert.Equal(DiskBackupLevel.Incremental, d.Level));
        Assert.All(next.Disks, d => Assert.Equal(full.Point.Sequence, rig.ManifestDisk(next, d.Target).ParentSequence));
        Assert.InRange(rig.Report(next, vda).Transfer.BytesRead, 256 * 1024, 256 * 1024);
        await rig.AssertRestoresAsync(next);
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F05_lost_checkpoint_metadata_is_redefined_from_the_point_and_the_job_stays_incremental()
    {
        await using var rig = await StartAsync();
        if (!rig.H.Driver.Capabilities.CheckpointMetadata)
        {
            Assert.Skip($"The {rig.H.Driver.Capabilities.Driver} driver keeps no checkpoint metadata apart from the bitmaps.");
        }

        var vda = rig.H.Targets[0];
        await rig.WriteAsync(vda, 0, 1 * MiB, seed: 1);
        var full = await rig.BackupAsync(RequestedLevel.Auto);
        var checkpoint = rig.ManifestDisk(full, vda).CheckpointName!;
        await rig.H.LoseCheckpointMetadataAsync(checkpoint, Ct);
        await rig.WriteAsync(vda, 2 * MiB, 64 * 1024, seed: 2);

        var next = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.Contains(next.Repairs, r => r.Kind == CheckpointRepairKind.Redefine && r.Checkpoint == checkpoint);
        Assert.All(next.Disks, d => Assert.Equal(DiskBackupLevel.Incremental, d.Level));
        await rig.AssertRestoresAsync(next);
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F06_a_bitmap_gone_under_a_checkpoint_makes_that_disk_full_and_the_chain_goes_on()
    {
        await using var rig = await StartAsync();
        var (vda, vdb) = (rig.H.Targets[0], rig.H.Targets[1]);
        await rig.WriteAsync(vda, 0, 1 * MiB, seed: 1);
        await rig.WriteAsync(vdb, 0, 1 * MiB, seed: 2);
        var full = await rig.BackupAsync(RequestedLevel.Auto);
        await rig.H.RemoveBitmapAsync(vdb, rig.ManifestDisk(full, vdb).CheckpointName!, Ct);
        await rig.WriteAsync(vdb, 2 * MiB, 64 * 1024, seed: 3);

        var next = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.Equal(DiskBackupLevel.Incremental, rig.Report(next, vda).Level);
        Assert.Equal(DiskBackupLevel.Full, rig.Report(next, vdb).Level);
        Assert.Contains(rig.Report(next, vdb).FullReason?.Code, new FullReasonCode?[] { FullReasonCode.BitmapMissing, FullReasonCode.DriverFallback });

        // Not stuck: the run after it is incremental on both disks.
        await rig.WriteAsync(vdb, 4 * MiB, 64 * 1024, seed: 4);
        var third = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.All(third.Disks, d => Assert.Equal(DiskBackupLevel.Incremental, d.Level));
        await rig.AssertRestoresAsync(next);
        await rig.AssertRestoresAsync(third);
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F09_a_grown_disk_is_backed_up_full_at_its_new_size_and_restores_byte_exact()
    {
        await using var rig = await StartAsync();
        var (vda, vdb) = (rig.H.Targets[0], rig.H.Targets[1]);
        await rig.WriteAsync(vda, 0, 1 * MiB, seed: 1);
        var full = await rig.BackupAsync(RequestedLevel.Auto);

        await rig.H.ResizeDiskAsync(vda, 32 * MiB, Ct);
        await rig.WriteAsync(vda, 20 * MiB, 64 * 1024, seed: 2);
        await rig.WriteAsync(vdb, 1 * MiB, 64 * 1024, seed: 3);
        var next = await rig.BackupAsync(RequestedLevel.Auto);

        Assert.Equal(DiskBackupLevel.Full, rig.Report(next, vda).Level);
        Assert.Equal(FullReasonCode.Resized, rig.Report(next, vda).FullReason?.Code);
        Assert.Equal((long)(32 * MiB), rig.ManifestDisk(next, vda).VirtualSize);
        Assert.Equal(DiskBackupLevel.Incremental, rig.Report(next, vdb).Level);
        var restored = await rig.AssertRestoresAsync(next);
        Assert.Equal((long)(32 * MiB), new FileInfo(restored[vda]).Length);
        await rig.AssertRestoresAsync(full); // NL: the older point restores at its size
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F10_a_replaced_disk_is_backed_up_full_while_the_other_stays_incremental()
    {
        await using var rig = await StartAsync();
        var (vda, vdb) = (rig.H.Targets[0], rig.H.Targets[1]);
        await rig.WriteAsync(vdb, 0, 1 * MiB, seed: 1);
        await rig.BackupAsync(RequestedLevel.Auto);

        await rig.H.ReplaceDiskAsync(vdb, Ct);
        await rig.WriteAsync(vdb, 2 * MiB, 64 * 1024, seed: 2);
        await rig.WriteAsync(vda, 2 * MiB, 64 * 1024, seed: 3);
        var next = await rig.BackupAsync(RequestedLevel.Auto);

        Assert.Equal(DiskBackupLevel.Incremental, rig.Report(next, vda).Level);
        Assert.Equal(DiskBackupLevel.Full, rig.Report(next, vdb).Level);
        Assert.Equal(FullReasonCode.Replaced, rig.Report(next, vdb).FullReason?.Code);
        await rig.AssertRestoresAsync(next);
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F21_a_domain_killed_mid_backup_fails_the_job_clearly_publishes_nothing_and_leaves_no_capture()
    {
        await using var rig = await StartAsync();
        var vda = rig.H.Targets[0];
        await rig.WriteAsync(vda, 0, 2 * MiB, seed: 1);
        var full = await rig.BackupAsync(RequestedLevel.Auto);
        var checkpointsBefore = await rig.CheckpointNamesAsync();
        await rig.WriteAsync(vda, 4 * MiB, 1 * MiB, seed: 2);

        rig.Driver.AfterBeginCapture = (_, ct) => rig.H.KillAsync(ct);
        var failure = await Assert.ThrowsAnyAsync<Exception>(() => rig.BackupAsync(RequestedLevel.Auto));
        Assert.True(failure is TransferException or HypervisorException, "not a clear error:\n" + ExceptionChain.Messages(failure));
        Assert.Equal([full.Point], await rig.PointsAsync());
        await rig.AssertCleanAsync();

        await rig.H.StartAgainAsync(Ct);
        Assert.Empty(await rig.H.Driver.ListCapturesAsync(rig.H.DomainId, Ct));

        // The failed job's checkpoint was not kept (the kill may also have lost the committed one's bitmap: then the next
        // run is full, never "nothing changed").
        Assert.Empty((await rig.CheckpointNamesAsync()).Except(checkpointsBefore));
        var next = await rig.BackupAsync(RequestedLevel.Auto);
        await rig.AssertRestoresAsync(next);
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F20_the_management_daemon_restarting_mid_backup_leaves_the_job_intact_and_its_point_restores()
    {
        await using var rig = await StartAsync();
        if (!rig.H.HasManagementDaemon)
        {
            Assert.Skip($"The {rig.H.Driver.Capabilities.Driver} driver talks to no management daemon.");
        }

        var vda = rig.H.Targets[0];
        await rig.WriteAsync(vda, 0, 2 * MiB, seed: 1);
        var full = await rig.BackupAsync(RequestedLevel.Auto);
        await rig.WriteAsync(vda, 4 * MiB, 1 * MiB, seed: 2);

        // The capture is taken; libvirtd goes away and comes back before a byte is read. QEMU still serves the export,
        // the driver reconnects, and the job reads, commits and releases on the new connection.
        rig.Driver.AfterBeginCapture = (_, ct) => rig.H.RestartManagementDaemonAsync(ct);
        var incremental = await rig.BackupAsync(RequestedLevel.Auto);
        rig.Driver.AfterBeginCapture = null;
        Assert.All(incremental.Disks, d => Assert.Equal(DiskBackupLevel.Incremental, d.Level));
        Assert.Equal([full.Point, incremental.Point], await rig.PointsAsync());
        await rig.AssertRestoresAsync(incremental);
        await rig.AssertCleanAsync();

        // Its checkpoint became the base of the next run.
        await rig.WriteAsync(vda, 8 * MiB, 1 * MiB, seed: 3);
        var next = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.All(next.Disks, d => Assert.Equal(DiskBackupLevel.Incremental, d.Level));
        await rig.AssertRestoresAsync(next);
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F23_connections_reset_mid_backup_by_a_proxy_in_front_of_the_export_are_reopened_and_the_point_restores()
    {
        await using var rig = await StartAsync();
        var vda = rig.H.Targets[0];
        await rig.WriteAsync(vda, 0, 6 * MiB, seed: 1);

        // Every read of vda passes an nbdkit proxy that slows it down; after its first read, all its connections break
        // (the server stays reachable), and the pipeline must reopen them and go on from the chunks it had not stored.
        await using var proxies = new NbdkitProxies(o => o.WithDelay(read: TimeSpan.FromMilliseconds(50)), resettable: true);
        Task? reset = null;
        rig.Driver.ReplaceCapture = async (capture, ct) =>
        {
            var fronted = await proxies.FrontAsync(capture, ct);
            reset = proxies.ResetAfterFirstReadAsync(vda, ct);
            return fronted;
        };
        var full = await rig.BackupAsync(RequestedLevel.Full);
        await reset!;

        Assert.True(rig.Report(full, vda).Transfer.Reconnects >= 1, "the reset was not seen: the test injected nothing");
        Assert.Equal([full.Point], await rig.PointsAsync());
        await rig.AssertRestoresAsync(full);
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F26_an_EIO_from_nbdkit_in_front_of_the_export_fails_the_job_naming_the_offset_and_publishes_nothing()
    {
        await using var rig = await StartAsync();
        var vda = rig.H.Targets[0];
        await rig.WriteAsync(vda, 0, 2 * MiB, seed: 1);
        var first = await rig.BackupAsync(RequestedLevel.Auto);

        await using var proxies = new NbdkitProxies(o => o.WithErrorFilter(rate: 1, error: "EIO", operation: "pread"));
        rig.Driver.ReplaceCapture = proxies.FrontAsync;
        var failure = await Assert.ThrowsAnyAsync<Exception>(() => rig.BackupAsync(RequestedLevel.Full));

        var read = ExceptionChain.AssertContains<SourceReadException>(failure);
        Assert.NotNull(read.Offset);
        Assert.Contains(read.Offset.Value.ToString(CultureInfo.InvariantCulture), read.Message, StringComparison.Ordinal);
        Assert.Equal([first.Point], await rig.PointsAsync());
        await rig.AssertCleanAsync();

        // The failed job's checkpoint was not kept: the next run still has the first point as its base.
        var next = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.Equal(first.Point.Sequence, rig.ManifestDisk(next, vda).ParentSequence);
        await rig.AssertRestoresAsync(next);
    }

    [Fact]
    public async Task F28_a_job_cancelled_mid_upload_publishes_nothing_and_a_rerun_commits()
    {
        await using var rig = await StartAsync();
        var vda = rig.H.Targets[0];
        await rig.WriteAsync(vda, 0, 1 * MiB, seed: 1);
        var full = await rig.BackupAsync(RequestedLevel.Auto);
        var checkpointsBefore = await rig.CheckpointNamesAsync();
        await rig.WriteAsync(vda, 4 * MiB, 2 * MiB, seed: 2);

        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var chunkPuts = 0;
        rig.Store.BeforePut = name =>
        {
            if (name.StartsWith(ObjectNames.ChunksPrefix, StringComparison.Ordinal) && Interlocked.Increment(ref chunkPuts) == 3)
            {
                cancel.Cancel();
            }

            return null;
        };
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => rig.BackupAsync(RequestedLevel.Auto, cancellationToken: cancel.Token));
        rig.Store.BeforePut = null;

        Assert.Equal([full.Point], await rig.PointsAsync());
        Assert.Equal(checkpointsBefore, await rig.CheckpointNamesAsync());
        await rig.AssertCleanAsync();

        var next = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.All(next.Disks, d => Assert.Equal(DiskBackupLevel.Incremental, d.Level));
        await rig.AssertRestoresAsync(next);
        await rig.AssertRestoresAsync(full);
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F32_a_flipped_byte_in_a_chunk_is_reported_by_verify_fails_its_restore_naming_the_range_and_the_next_backup_repairs_it()
    {
        await using var rig = await StartAsync();
        var vda = rig.H.Targets[0];
        await rig.WriteAsync(vda, 0, 1 * MiB, seed: 1);
        var full = await rig.BackupAsync(RequestedLevel.Auto);
        var (offset, file) = await rig.ChunkFileAsync(full, vda, chunkIndex: 2);
        var bytes = await File.ReadAllBytesAsync(file, Ct);
        bytes[bytes.Length / 2] ^= 0x01;
        await File.WriteAllBytesAsync(file, bytes, Ct);

        var report = await rig.Repository.VerifyAsync(new VerifyOptions(), Ct);
        Assert.False(report.Ok);
        var damaged = Assert.Single(report.Damaged);
        Assert.Equal(full.Point.Sequence, damaged.Sequence);
        Assert.Contains(damaged.Problems, p => p.Disk == vda && p.Offset == offset);

        await rig.AssertRestoreFailsNamingAsync(full, vda, offset);

        // The next backup re-uploads the quarantined chunk instead of inheriting it: both points restore again.
        var next = await rig.BackupAsync(RequestedLevel.Auto);
        Assert.True(rig.Report(next, vda).Stored.UploadedChunks >= 1, "the damaged chunk was not uploaded again");
        await rig.AssertRestoresAsync(next);
        await rig.AssertRestoresAsync(full);
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F33_a_missing_chunk_fails_the_restore_naming_the_range_and_leaves_no_image()
    {
        await using var rig = await StartAsync();
        var vda = rig.H.Targets[0];
        await rig.WriteAsync(vda, 0, 1 * MiB, seed: 1);
        var full = await rig.BackupAsync(RequestedLevel.Auto);
        var (offset, file) = await rig.ChunkFileAsync(full, vda, chunkIndex: 5);
        File.Delete(file);

        var report = await rig.Repository.VerifyAsync(new VerifyOptions { Record = false }, Ct);
        Assert.Contains(Assert.Single(report.Damaged).Problems, p => p.Disk == vda && p.Offset == offset);
        await rig.AssertRestoreFailsNamingAsync(full, vda, offset);
        await rig.AssertCleanAsync();
    }

    [Fact]
    public async Task F34_an_edited_manifest_is_refused()
    {
        await using var rig = await StartAsync();
        await rig.WriteAsync(rig.H.Targets[0], 0, 1 * MiB, seed: 1);
        var full = await rig.BackupAsync(RequestedLevel.Auto);

        // One byte changed in the stored manifest (sealed and signed): it no longer authenticates.
        var path = Path.Combine(rig.RepositoryRoot, ObjectNames.Manifest(full.Point));
        var bytes = await File.ReadAllBytesAsync(path, Ct);
        bytes[bytes.Length / 2] ^= 0x20;
        await File.WriteAllBytesAsync(path, bytes, Ct);

        var refused = await Assert.ThrowsAnyAsync<RepositoryException>(() => rig.Repository.OpenPointAsync(full.Point, Ct));
        Assert.True(refused is ObjectCorruptException or SignatureException or ManifestInvalidException, refused.ToString());
        Assert.Equal(full.Point, refused.Point);
        var directory = rig.Directory.CreateSubdirectory("edited");
        var failure = await Assert.ThrowsAnyAsync<Exception>(() => rig.Restore.ToDirectoryAsync(rig.Request(full), directory, DiskImageFormat.Raw, cancellationToken: Ct));
        ExceptionChain.AssertContains<RepositoryException>(failure);
        Assert.Empty(Directory.EnumerateFiles(directory));
        await rig.AssertCleanAsync();
    }

    // ---- helpers ----

    private async Task<Rig> StartAsync(ContractDomainSpec? spec = null, int chunkSize = ChunkSize)
    {
        var harness = await CreateHarnessAsync(spec ?? new ContractDomainSpec(), Ct);
        try
        {
            return await Rig.CreateAsync(harness, chunkSize);
        }
        catch
        {
            await harness.DisposeAsync();
            throw;
        }
    }

    private static long AlignedBytes(IEnumerable<(ulong Offset, ulong Length)> ranges, int granularity)
    {
        var chunks = new HashSet<ulong>();
        foreach (var (offset, length) in ranges)
        {
            for (var c = offset / (ulong)granularity; c <= (offset + length - 1) / (ulong)granularity; c++)
            {
                chunks.Add(c);
            }
        }

        return chunks.Count * (long)granularity;
    }

    private static async Task<byte[]> ReadFileAsync(string path, ulong offset, int length)
    {
        await using var stream = File.OpenRead(path);
        stream.Position = (long)offset;
        var buffer = new byte[length];
        await stream.ReadExactlyAsync(buffer, Ct);
        return buffer;
    }

    private static void AssertSameBytes(byte[] expected, byte[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        var first = expected.AsSpan().CommonPrefixLength(actual);
        Assert.True(first == expected.Length, $"{what}: first difference at byte {first}");
    }

    /// <summary>One test's world: the harness, a file-system repository in a temp directory, the jobs, and the disks as
    /// they were at each point's capture.</summary>
    private sealed class Rig : IAsyncDisposable
    {
        private const string Passphrase = "correct horse battery staple";
        private readonly Dictionary<(long Sequence, string Disk), string> _expected = [];
        private int _restores;

        private Rig(ContractHarness harness, TestDirectory directory, string repositoryRoot, HookedBlobStore store, BackupRepository repository)
        {
            H = harness;
            Directory = directory;
            RepositoryRoot = repositoryRoot;
            Store = store;
            Repository = repository;
            Driver = new HookedDriver(harness);
            Restore = new RestoreJob(repository, new RestorePipelineOptions { Connections = 2, Parallelism = 8 });
        }

        public ContractHarness H { get; }

        public TestDirectory Directory { get; }

        public string RepositoryRoot { get; }

        public HookedBlobStore Store { get; }

        public BackupRepository Repository { get; }

        public HookedDriver Driver { get; }

        public RestoreJob Restore { get; }

        public static async Task<Rig> CreateAsync(ContractHarness harness, int chunkSize)
        {
            var directory = TestDirectory.Create("transfer-e2e");
            try
            {
                var root = directory.CreateSubdirectory("repository");
                var store = new HookedBlobStore(new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = root, Durable = false }));
                var repository = await BackupRepository.InitAsync(
                    store,
                    Passphrase,
                    new RepositoryInitOptions { ChunkSize = chunkSize, KdfIterations = 1000 },
                    new RepositoryOptions { MaxParallelism = 2, QueueDepth = 4 },
                    cancellationToken: Ct);
                return new Rig(harness, directory, root, store, repository);
            }
            catch
            {
                directory.Dispose();
                throw;
            }
        }

        /// <summary>Writes random bytes as the guest does.</summary>
        public Task WriteAsync(string target, ulong offset, ulong length, int seed)
        {
            var data = new byte[length];
            new Random(seed).NextBytes(data);
            return H.WriteAsync(target, offset, data, Ct);
        }

        /// <summary>Runs a backup job, then (nothing writes in between) saves every disk as the guest sees it.</summary>
        public async Task<BackupJobResult> BackupAsync(RequestedLevel level, IReadOnlyList<string>? disks = null, CancellationToken? cancellationToken = null)
        {
            var job = new BackupJob(Driver, Repository, new BackupJobOptions { Pipeline = new BackupPipelineOptions { Connections = 2, ReadsInFlight = 8 } });
            var result = await job.RunAsync(new BackupJobRequest { Domain = H.DomainId, Level = level, Disks = disks }, cancellationToken: cancellationToken ?? Ct);
            foreach (var disk in result.Manifest.Disks)
            {
                var path = Directory.File(string.Create(CultureInfo.InvariantCulture, $"expected-{result.Point.Sequence}-{disk.Name}.raw"));
                await File.WriteAllBytesAsync(path, await H.ReadLiveAsync(disk.Name, 0, checked((int)disk.VirtualSize), Ct), Ct);
                _expected[(result.Point.Sequence, disk.Name)] = path;
            }

            return result;
        }

        public string Expected(BackupJobResult point, string disk) => _expected[(point.Point.Sequence, disk)];

        public DiskBackupReport Report(BackupJobResult result, string disk) => Assert.Single(result.Disks, d => d.Target == disk);

        public DiskManifest ManifestDisk(BackupJobResult result, string disk) => Assert.Single(result.Manifest.Disks, d => d.Name == disk);

        public RestoreJobRequest Request(BackupJobResult point) => new() { Domain = point.Point.DomainId.ToString("D"), Sequence = point.Point.Sequence };

        public async Task<IReadOnlyList<PointRef>> PointsAsync() => await Repository.ListPointsAsync("default", cancellationToken: Ct);

        public async Task<List<string>> CheckpointNamesAsync() =>
            [.. (await H.Driver.ListCheckpointsAsync(H.DomainId, Ct)).Where(c => c.IsOwned).Select(c => c.Name).Order(StringComparer.Ordinal)];

        /// <summary>Restores every disk of the point to new images; returns the image per disk.</summary>
        public async Task<Dictionary<string, string>> RestoreAsync(BackupJobResult point, DiskImageFormat format)
        {
            var directory = Directory.File(string.Create(CultureInfo.InvariantCulture, $"restore-{Interlocked.Increment(ref _restores)}"));
            var result = await Restore.ToDirectoryAsync(Request(point), directory, format, cancellationToken: Ct);
            Assert.Equal(point.Point, result.Point);
            Assert.Equal(point.Manifest.Disks.Select(d => d.Name).Order(StringComparer.Ordinal), result.Disks.Select(d => d.Result.Disk).Order(StringComparer.Ordinal));
            return result.Disks.ToDictionary(d => d.Result.Disk, d => d.Destination);
        }

        /// <summary>Restores the point and compares every disk with the disk at its capture (<c>qemu-img compare</c>).</summary>
        public async Task<Dictionary<string, string>> AssertRestoresAsync(BackupJobResult point, DiskImageFormat format = DiskImageFormat.Raw)
        {
            var restored = await RestoreAsync(point, format);
            foreach (var (disk, image) in restored)
            {
                var expected = Expected(point, disk);
                var compare = await ProcessRunner.RunAsync(
                    "qemu-img",
                    ["compare", "-f", "raw", "-F", format == DiskImageFormat.Raw ? "raw" : "qcow2", expected, image],
                    new ProcessRunOptions { ThrowOnNonZeroExit = false },
                    Ct);
                Assert.True(compare.ExitCode == 0, $"point {point.Point.Sequence} disk {disk} ({format}) differs from the disk at capture: {compare.StandardOutput} {compare.StandardError}");
                if (format == DiskImageFormat.Raw)
                {
                    Assert.Equal(new FileInfo(expected).Length, new FileInfo(image).Length);
                }
            }

            return restored;
        }

        /// <summary>The stored chunk file of a disk's chunk, and the chunk's offset.</summary>
        public async Task<(long Offset, string File)> ChunkFileAsync(BackupJobResult point, string disk, long chunkIndex)
        {
            var reader = await (await Repository.OpenPointAsync(point.Point, Ct)).OpenDiskAsync(disk, Ct);
            Assert.False(reader.IsZero(chunkIndex), "the chosen chunk holds no data");
            var file = Path.Combine(RepositoryRoot, ObjectNames.Chunk(reader.IdOf(chunkIndex)));
            Assert.True(File.Exists(file), file);
            return (reader.RangeOf(chunkIndex).Offset, file);
        }

        /// <summary>Restoring the point fails with an error that names the disk's byte range, and no image of that disk is
        /// left under its final name.</summary>
        public async Task AssertRestoreFailsNamingAsync(BackupJobResult point, string disk, long offset)
        {
            var directory = Directory.File(string.Create(CultureInfo.InvariantCulture, $"restore-{Interlocked.Increment(ref _restores)}"));
            var failure = await Assert.ThrowsAnyAsync<Exception>(() => Restore.ToDirectoryAsync(Request(point), directory, DiskImageFormat.Raw, cancellationToken: Ct));
            var messages = ExceptionChain.Messages(failure);
            Assert.True(messages.Contains(offset.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal), "the error does not name the range:\n" + messages);
            ExceptionChain.AssertContains<RepositoryException>(failure);
            Assert.False(File.Exists(Path.Combine(directory, disk + ".raw")), "a partial image was left under its final name");
        }

        public async Task AssertCleanAsync()
        {
            var leftovers = await H.FindLeftoversAsync(Ct);
            Assert.True(leftovers.Count == 0, "Left behind: " + string.Join("; ", leftovers));
        }

        public async ValueTask DisposeAsync()
        {
            try
            {
                Repository.Dispose();
                await H.DisposeAsync();
            }
            finally
            {
                Directory.Dispose();
            }
        }
    }
}
