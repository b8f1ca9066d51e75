using Drydock.Hypervisor;
using Drydock.Hypervisor.Sim;
using Drydock.Repository;
using Drydock.Repository.Format;
using Drydock.Storage.InMemory;
using Drydock.Transfer.Chain;
using Drydock.Transfer.Jobs;
using Drydock.Transfer.Restore;
using Xunit;
using static Drydock.Transfer.Tests.Jobs.JobHarness;

namespace Drydock.Transfer.Tests.Jobs;

public sealed class BackupJobTests
{
    [Fact]
    public async Task Full_incremental_differential_each_restore_to_the_disk_at_capture_time()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();

        var (full, fullImages) = await h.BackupAndImageAsync();
        var touched1 = await h.WorkAsync(8);
        var (incremental, incrementalImages) = await h.BackupAndImageAsync();
        var touched2 = await h.WorkAsync(8);
        var (differential, differentialImages) = await h.BackupAndImageAsync(RequestedLevel.Differential);

        Assert.Equal(DiskBackupLevel.Full, full.Disks[0].Level);
        Assert.Equal(FullReasonCode.NoPriorPoint, full.Disks[0].FullReason?.Code);

        var inc = incremental.Disks[0];
        Assert.Equal(DiskBackupLevel.Incremental, inc.Level);
        Assert.Equal(1, incremental.Manifest.Disks[0].ParentSequence);
        Assert.InRange(inc.Transfer.ChunksRead + inc.Transfer.ChunksZero, 1, touched1["vda"].Count); // only changed chunks read
        Assert.Equal(DiskSize / ChunkSize - (ulong)(inc.Transfer.ChunksRead + inc.Transfer.ChunksZero), (ulong)inc.Stored.InheritedChunks);

        var diff = differential.Disks[0];
        Assert.Equal(DiskBackupLevel.Differential, diff.Level);
        Assert.Equal(1, differential.Manifest.Disks[0].ParentSequence);
        Assert.InRange(diff.Transfer.ChunksRead + diff.Transfer.ChunksZero, 1, touched1["vda"].Union(touched2["vda"]).Count());

        Assert.Equal("auto", incremental.Manifest.Labels["level"]);
        Assert.Equal("0", incremental.Manifest.Labels["disk.vda.generation"]);

        await h.AssertRestoresAsync(1, fullImages);
        await h.AssertRestoresAsync(2, incrementalImages);
        await h.AssertRestoresAsync(3, differentialImages);
    }

    [Fact]
    public async Task Checkpoints_are_promoted_after_commit_and_only_the_chains_are_kept()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        var first = await h.BackupAsync();
        await h.WorkAsync(4);
        var second = await h.BackupAsync();
        await h.WorkAsync(4);
        var third = await h.BackupAsync();

        var cp1 = first.Manifest.Disks[0].CheckpointName!;
        var cp2 = second.Manifest.Disks[0].CheckpointName!;
        var cp3 = third.Manifest.Disks[0].CheckpointName!;
        Assert.NotNull(first.Manifest.Disks[0].CheckpointXml);
        Assert.Empty(second.DeletedCheckpoints); // cp1 is the newest full's, cp2 the newest's
        Assert.Equal([cp2], third.DeletedCheckpoints); // cp2 is neither any more
        Assert.Equal(new[] { cp1, cp3 }.Order(StringComparer.Ordinal), (await h.CheckpointNamesAsync()).Order(StringComparer.Ordinal));
        Assert.Null(h.Domain.CaptureId);
    }

    [Fact]
    public async Task Two_repositories_backing_up_one_domain_keep_their_own_chains_and_never_delete_each_others_checkpoints()
    {
        // A local and an offsite repository, backups alternating: each incremental must stay incremental (no fallback),
        // restore exactly, and leave the other repository's base checkpoint in place.
        await using var h = await CreateAsync();
        await h.FillAsync();
        using var offsite = await BackupRepository.InitAsync(
            new InMemoryBlobStore(), "passphrase", new RepositoryInitOptions { ChunkSize = ChunkSize, KdfIterations = 1000 }, new RepositoryOptions { MaxParallelism = 2 }, cancellationToken: Ct);
        Task<BackupJobResult> Offsite(RequestedLevel level) =>
            new BackupJob(h.Driver, offsite, h.Options).RunAsync(new BackupJobRequest { Domain = h.Domain.Id, Level = level, AllowFallback = false }, cancellationToken: Ct);

        await h.BackupAsync(RequestedLevel.Full);
        var offsiteFull = await Offsite(RequestedLevel.Full);
        await h.WorkAsync(6);
        var (local, localImages) = await h.BackupAndImageAsync(RequestedLevel.Incremental);
        await h.WorkAsync(6);
        var offsiteInc = await Offsite(RequestedLevel.Incremental);
        var offsiteImage = await h.ImageAsync("vda");
        await h.WorkAsync(6);
        var (local2, local2Images) = await h.BackupAndImageAsync(RequestedLevel.Incremental);

        Assert.Equal(DiskBackupLevel.Incremental, local.Disks[0].Level);
        Assert.Equal(DiskBackupLevel.Incremental, offsiteInc.Disks[0].Level);
        Assert.Equal(offsiteFull.Point.Sequence, offsiteInc.Manifest.Disks[0].ParentSequence);
        Assert.Equal(DiskBackupLevel.Incremental, local2.Disks[0].Level);
        Assert.Equal(local.Point.Sequence, local2.Manifest.Disks[0].ParentSequence);

        // Each run deleted only its own superseded checkpoints; both chains' newest are still on the domain.
        var names = await h.CheckpointNamesAsync();
        Assert.Contains(local2.Manifest.Disks[0].CheckpointName!, names);
        Assert.Contains(offsiteInc.Manifest.Disks[0].CheckpointName!, names);
        Assert.Equal(DrydockNames.ChainTag(h.Repository.RepositoryId), DrydockNames.ChainTagOf(local2.Manifest.Disks[0].CheckpointName!));
        Assert.Equal(DrydockNames.ChainTag(offsite.RepositoryId), DrydockNames.ChainTagOf(offsiteInc.Manifest.Disks[0].CheckpointName!));
        Assert.All(local2.DeletedCheckpoints.Concat(offsiteInc.DeletedCheckpoints).Concat(local.DeletedCheckpoints), c => Assert.DoesNotContain(c, names));
        Assert.DoesNotContain(offsiteFull.Manifest.Disks[0].CheckpointName!, local.DeletedCheckpoints.Concat(local2.DeletedCheckpoints));

        await h.AssertRestoresAsync(local.Point.Sequence, localImages);
        await h.AssertRestoresAsync(local2.Point.Sequence, local2Images);
        var restored = await new RestoreJob(offsite, new RestorePipelineOptions { Connections = 2 }).ToDirectoryAsync(
            new RestoreJobRequest { Domain = h.Domain.Id, Sequence = offsiteInc.Point.Sequence }, Directory.CreateTempSubdirectory("drydock-offsite-").FullName, DiskImageFormat.Raw, cancellationToken: Ct);
        Assert.Equal(offsiteImage, await File.ReadAllBytesAsync(Assert.Single(restored.Disks).Destination, Ct));
    }

    [Fact]
    public async Task Two_disk_domain_backs_up_and_restores_both_disks()
    {
        await using var h = await CreateAsync(new SimDiskSpec("vda", DiskSize), new SimDiskSpec("vdb", DiskSize * 2));
        await h.FillAsync();
        var (full, fullImages) = await h.BackupAndImageAsync();
        var touched = await h.WorkAsync(12);
        var (incremental, incrementalImages) = await h.BackupAndImageAsync();

        Assert.All(full.Disks, d => Assert.Equal(DiskBackupLevel.Full, d.Level));
        Assert.All(incremental.Disks, d => Assert.Equal(DiskBackupLevel.Incremental, d.Level));
        foreach (var disk in incremental.Disks)
        {
            Assert.InRange(disk.Transfer.ChunksRead + disk.Transfer.ChunksZero, 0, touched.GetValueOrDefault(disk.Target)?.Count ?? 0);
        }

        await h.AssertRestoresAsync(1, fullImages);
        await h.AssertRestoresAsync(2, incrementalImages);
    }

    [Fact]
    public async Task A_disk_left_out_of_one_backup_stays_incremental_from_its_own_newest_point()
    {
        // full of both disks → a backup of vdb alone (--disk vdb) → a backup of both: vda continues from point 1, its
        // base checkpoint survived the vdb-only run, and every point restores exactly.
        await using var h = await CreateAsync(new SimDiskSpec("vda", DiskSize), new SimDiskSpec("vdb", DiskSize));
        await h.FillAsync();
        var (full, fullImages) = await h.BackupAndImageAsync();
        await h.WorkAsync(12);
        var (vdbOnly, vdbOnlyImages) = await h.BackupAndImageAsync(RequestedLevel.Incremental, ["vdb"]);
        await h.WorkAsync(12);
        var both = await new BackupJob(h.Driver, h.Repository, h.Options).RunAsync(
            new BackupJobRequest { Domain = h.Domain.Id, Level = RequestedLevel.Incremental, AllowFallback = false }, cancellationToken: Ct);
        var bothImages = new Dictionary<string, byte[]>(StringComparer.Ordinal) { ["vda"] = await h.ImageAsync("vda"), ["vdb"] = await h.ImageAsync("vdb") };

        Assert.Equal(["vdb"], vdbOnly.Manifest.Disks.Select(d => d.Name));
        Assert.All(both.Disks, d => Assert.Equal(DiskBackupLevel.Incremental, d.Level));
        Assert.Equal(full.Point.Sequence, both.Manifest.Disks.Single(d => d.Name == "vda").ParentSequence);
        Assert.Equal(vdbOnly.Point.Sequence, both.Manifest.Disks.Single(d => d.Name == "vdb").ParentSequence);
        Assert.DoesNotContain(full.Manifest.Disks.Single(d => d.Name == "vda").CheckpointName, vdbOnly.DeletedCheckpoints);
        await h.AssertRestoresAsync(full.Point.Sequence, fullImages);
        await h.AssertRestoresAsync(vdbOnly.Point.Sequence, new Dictionary<string, byte[]>(StringComparer.Ordinal) { ["vdb"] = vdbOnlyImages["vdb"] });
        await h.AssertRestoresAsync(both.Point.Sequence, bothImages);
    }

    [Fact]
    public async Task Full_requested_reads_every_disk()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        await h.BackupAsync();

        var (full, images) = await h.BackupAndImageAsync(RequestedLevel.Full);

        Assert.Equal(FullReasonCode.Requested, full.Disks[0].FullReason?.Code);
        Assert.Equal("full", full.Manifest.Labels["level"]);
        Assert.StartsWith("Requested", full.Manifest.Labels["disk.vda.full-reason"], StringComparison.Ordinal);
        await h.AssertRestoresAsync(2, images);
    }

    [Fact]
    public async Task Domain_is_found_by_name_and_an_unknown_one_is_refused()
    {
        await using var h = await CreateAsync();

        var result = await new BackupJob(h.Driver, h.Repository, h.Options).RunAsync(new BackupJobRequest { Domain = "vm-1" }, cancellationToken: Ct);
        Assert.Equal(h.Domain.Id, result.Domain.Id);
        Assert.Equal(h.DomainKey, result.Point.DomainId);

        await Assert.ThrowsAsync<TransferRequestException>(() =>
            new BackupJob(h.Driver, h.Repository, h.Options).RunAsync(new BackupJobRequest { Domain = "vm-2" }, cancellationToken: Ct));
    }

    [Fact]
    public async Task Unknown_disk_is_refused_before_anything_is_captured()
    {
        await using var h = await CreateAsync();

        var error = await Assert.ThrowsAsync<TransferRequestException>(() => h.BackupAsync(disks: ["vdz"]));

        Assert.Equal("vdz", error.Disk);
        Assert.Empty(await h.PointsAsync());
        Assert.Null(h.Domain.CaptureId);
        Assert.Empty(await h.CheckpointNamesAsync());
    }

    [Fact]
    public async Task Incremental_without_fallback_fails_when_a_disk_cannot_do_it()
    {
        await using var h = await CreateAsync();
        await h.FillAsync();
        await h.BackupAsync();
        await h.Domain.ReplaceDiskAsync("vda", Ct);

        var error = await Assert.ThrowsAsync<TransferRequestException>(() => h.BackupAsync(RequestedLevel.Incremental, allowFallback: false));

        Assert.Equal("vda", error.Disk);
        Assert.Single(await h.PointsAsync());
        Assert.Null(h.Domain.CaptureId);
    }
}
