using Drydock.Hypervisor;
using Drydock.Repository.Format;
using Drydock.Transfer.Chain;
using Xunit;
using static Drydock.Transfer.Tests.Chain.ChainFixtures;

namespace Drydock.Transfer.Tests.Chain;

public sealed class ChainPlannerTests
{
    [Fact]
    public void Full_requested_reads_every_disk_in_full()
    {
        var plan = ChainPlanner.Plan(TwoPointChain(RequestedLevel.Full));

        var disk = Assert.Single(plan.Disks);
        Assert.Equal(DiskBackupLevel.Full, disk.Level);
        Assert.Equal(FullReasonCode.Requested, disk.FullReason?.Code);
        Assert.Null(disk.SinceCheckpoint);
        Assert.Empty(plan.Repairs);
    }

    [Fact]
    public void First_backup_of_a_domain_is_full_with_no_prior_point()
    {
        var plan = ChainPlanner.Plan(TwoPointChain() with { Points = [], Checkpoints = [], Disks = [Health("vda")] });

        Assert.Equal(FullReasonCode.NoPriorPoint, plan.Disks[0].FullReason?.Code);
    }

    [Fact]
    public void Healthy_chain_is_incremental_from_the_newest_points_checkpoint()
    {
        var plan = ChainPlanner.Plan(TwoPointChain());

        var disk = plan.Disks[0];
        Assert.Equal(DiskBackupLevel.Incremental, disk.Level);
        Assert.Equal(Cp(2), disk.SinceCheckpoint);
        Assert.Equal(2, disk.ParentSequence);
        Assert.Null(disk.FullReason);
        Assert.Empty(plan.Repairs);
        Assert.Equal(NewCheckpoint, plan.NewCheckpoint);
    }

    [Fact]
    public void Hot_added_disk_is_full_and_the_others_stay_incremental_F11()
    {
        var input = TwoPointChain() with { Targets = ["vda", "vdb"], Disks = [.. TwoPointChain().Disks, Health("vdb")] };

        var plan = ChainPlanner.Plan(input);

        Assert.Equal(DiskBackupLevel.Incremental, plan.Disks[0].Level);
        Assert.Equal("vdb", plan.Disks[1].Target);
        Assert.Equal(FullReasonCode.NewDisk, plan.Disks[1].FullReason?.Code);
    }

    [Fact]
    public void Replaced_disk_is_full_F10()
    {
        var input = TwoPointChain() with { Disks = [Health("vda", Bitmap(Cp(1)), Bitmap(Cp(2))) with { Identity = "other-image" }] };

        var plan = ChainPlanner.Plan(input);

        Assert.Equal(FullReasonCode.Replaced, plan.Disks[0].FullReason?.Code);
        Assert.Contains("other-image", plan.Disks[0].FullReason!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Resized_disk_is_full_F09()
    {
        var input = TwoPointChain() with { Disks = [Health("vda", Bitmap(Cp(1)), Bitmap(Cp(2))) with { VirtualSize = Size * 2 }] };

        Assert.Equal(FullReasonCode.Resized, ChainPlanner.Plan(input).Disks[0].FullReason?.Code);
    }

    [Fact]
    public void Generation_change_since_the_parent_is_full_F13()
    {
        var input = TwoPointChain() with { Disks = [Health("vda", Bitmap(Cp(1)), Bitmap(Cp(2))) with { Generation = 1 }] };

        Assert.Equal(FullReasonCode.GenerationChanged, ChainPlanner.Plan(input).Disks[0].FullReason?.Code);
    }

    [Fact]
    public void Unrecorded_generation_is_not_compared()
    {
        var input = TwoPointChain() with
        {
            Disks = [Health("vda", Bitmap(Cp(1)), Bitmap(Cp(2))) with { Generation = 7 }],
            Points = [Point(1, Disk("vda", DiskBackupLevel.Full, Cp(2), generation: null))],
        };

        Assert.Equal(DiskBackupLevel.Incremental, ChainPlanner.Plan(input).Disks[0].Level);
    }

    [Fact]
    public void Parent_without_a_checkpoint_is_full()
    {
        var input = TwoPointChain() with { Points = [Point(1, Disk("vda", DiskBackupLevel.Full, checkpoint: null))] };

        Assert.Equal(FullReasonCode.NoBaseCheckpoint, ChainPlanner.Plan(input).Disks[0].FullReason?.Code);
    }

    [Fact]
    public void Disk_without_checkpoint_support_is_full_F22()
    {
        var input = TwoPointChain() with { Disks = [Health("vda") with { SupportsCheckpoints = false }], Checkpoints = [] };

        Assert.Equal(FullReasonCode.CheckpointsUnsupported, ChainPlanner.Plan(input).Disks[0].FullReason?.Code);
    }

    [Fact]
    public void Missing_bitmap_is_full_and_the_metadata_alone_is_deleted_F06()
    {
        var input = TwoPointChain() with { Disks = [Health("vda", Bitmap(Cp(1)))] };

        var plan = ChainPlanner.Plan(input);

        Assert.Equal(FullReasonCode.BitmapMissing, plan.Disks[0].FullReason?.Code);
        Assert.Equal([new CheckpointRepair(CheckpointRepairKind.DeleteMetadata, Cp(2), null, plan.Repairs[0].Reason)], plan.Repairs);
    }

    [Fact]
    public void Missing_bitmap_without_metadata_needs_no_repair()
    {
        var input = TwoPointChain() with { Disks = [Health("vda", Bitmap(Cp(1)))], Checkpoints = [Checkpoint(Cp(1))] };

        var plan = ChainPlanner.Plan(input);

        Assert.Equal(FullReasonCode.BitmapMissing, plan.Disks[0].FullReason?.Code);
        Assert.Empty(plan.Repairs);
    }

    [Fact]
    public void Inconsistent_bitmap_is_full_and_the_checkpoint_deleted_F01()
    {
        var input = TwoPointChain() with { Disks = [Health("vda", Bitmap(Cp(1), inconsistent: true), Bitmap(Cp(2), inconsistent: true))] };

        var plan = ChainPlanner.Plan(input);

        Assert.Equal(FullReasonCode.BitmapInconsistent, plan.Disks[0].FullReason?.Code);
        var repair = Assert.Single(plan.Repairs);
        Assert.Equal((CheckpointRepairKind.Delete, Cp(2)), (repair.Kind, repair.Checkpoint));
    }

    [Fact]
    public void Inconsistent_bitmap_on_one_disk_leaves_the_other_disk_incremental_and_its_base_in_place()
    {
        var input = TwoPointChain() with
        {
            Targets = ["vda", "vdb"],
            Disks = [Health("vda", Bitmap(Cp(2), inconsistent: true)), Health("vdb", Bitmap(Cp(2)))],
            Checkpoints = [Checkpoint(Cp(2), true, "vda", "vdb")],
            Points = [Point(1, Disk("vda", DiskBackupLevel.Full, Cp(2)), Disk("vdb", DiskBackupLevel.Full, Cp(2)))],
        };

        var plan = ChainPlanner.Plan(input);

        Assert.Equal(FullReasonCode.BitmapInconsistent, plan.Disks[0].FullReason?.Code);
        Assert.Equal(DiskBackupLevel.Incremental, plan.Disks[1].Level);
        Assert.Empty(plan.Repairs); // deleting Cp(2) would take vdb's base with it
    }

    [Fact]
    public void Lost_metadata_with_saved_xml_is_redefined_and_stays_incremental_F05()
    {
        var input = TwoPointChain() with { Checkpoints = [Checkpoint(Cp(1)), Checkpoint(Cp(2), metadata: false)] };

        var plan = ChainPlanner.Plan(input);

        Assert.Equal(DiskBackupLevel.Incremental, plan.Disks[0].Level);
        var repair = Assert.Single(plan.Repairs);
        Assert.Equal(CheckpointRepairKind.Redefine, repair.Kind);
        Assert.Equal(Cp(2), repair.Checkpoint);
        Assert.Equal(Xml(Cp(2), "vda"), repair.Xml);
    }

    [Fact]
    public void A_bitmap_reported_unusable_only_for_lack_of_metadata_is_redefined_F05()
    {
        // libvirt calls a bitmap without checkpoint metadata unusable; it is persistent and consistent, so a redefine.
        var orphaned = Bitmap(Cp(2)) with { Usable = false, Persistent = true, Problem = "libvirt has no checkpoint metadata for this bitmap" };
        var input = TwoPointChain() with
        {
            Disks = [Health("vda", Bitmap(Cp(1)), orphaned)],
            Checkpoints = [Checkpoint(Cp(1)), Checkpoint(Cp(2), metadata: false)],
        };

        var plan = ChainPlanner.Plan(input);

        Assert.Equal(DiskBackupLevel.Incremental, plan.Disks[0].Level);
        Assert.Equal(CheckpointRepairKind.Redefine, Assert.Single(plan.Repairs).Kind);

        // A bitmap that is not persistent cannot be trusted that way: full, and it is removed.
        var volatileBitmap = input with { Disks = [Health("vda", Bitmap(Cp(1)), orphaned with { Persistent = false })] };
        var fallback = ChainPlanner.Plan(volatileBitmap);
        Assert.Equal(FullReasonCode.BitmapInconsistent, fallback.Disks[0].FullReason?.Code);
    }

    [Fact]
    public void Lost_metadata_without_saved_xml_is_full()
    {
        var input = TwoPointChain() with
        {
            Checkpoints = [Checkpoint(Cp(1))],
            Points = [Point(1, Disk("vda", DiskBackupLevel.Full, Cp(1))), Point(2, Disk("vda", DiskBackupLevel.Incremental, Cp(2), 1) with { CheckpointXml = null })],
        };

        var plan = ChainPlanner.Plan(input);

        Assert.Equal(FullReasonCode.CheckpointMissing, plan.Disks[0].FullReason?.Code);
        Assert.DoesNotContain(plan.Repairs, r => r.Kind == CheckpointRepairKind.Redefine);
    }

    [Fact]
    public void Drivers_without_metadata_need_no_redefine()
    {
        var input = TwoPointChain() with { CheckpointMetadata = false, Checkpoints = [Checkpoint(Cp(1), false), Checkpoint(Cp(2), false)] };

        var plan = ChainPlanner.Plan(input);

        Assert.Equal(DiskBackupLevel.Incremental, plan.Disks[0].Level);
        Assert.Empty(plan.Repairs);
    }

    [Fact]
    public void Checkpoint_that_failed_to_redefine_makes_the_disk_full_and_is_deleted()
    {
        var input = TwoPointChain() with
        {
            Checkpoints = [Checkpoint(Cp(1)), Checkpoint(Cp(2), metadata: false)],
            UnusableCheckpoints = new Dictionary<string, string> { [Cp(2)] = "bitmap is inconsistent" },
        };

        var plan = ChainPlanner.Plan(input);

        Assert.Equal(FullReasonCode.CheckpointMissing, plan.Disks[0].FullReason?.Code);
        Assert.Contains("bitmap is inconsistent", plan.Disks[0].FullReason!.Message, StringComparison.Ordinal);
        Assert.Equal([(CheckpointRepairKind.Delete, Cp(2))], plan.Repairs.Select(r => (r.Kind, r.Checkpoint)));
    }

    [Theory]
    [InlineData(null, DiskBackupLevel.Incremental)]
    [InlineData(3, DiskBackupLevel.Incremental)]
    [InlineData(2, DiskBackupLevel.Full)]
    [InlineData(0, DiskBackupLevel.Full)]
    public void Auto_full_after_counts_incrementals_since_the_last_full(int? every, DiskBackupLevel expected)
    {
        var input = TwoPointChain() with
        {
            AutoFullAfter = every,
            Disks = [Health("vda", Bitmap(Cp(1)), Bitmap(Cp(2)), Bitmap(Cp(3)))],
            Checkpoints = [Checkpoint(Cp(1)), Checkpoint(Cp(2)), Checkpoint(Cp(3))],
            Points =
            [
                Point(1, Disk("vda", DiskBackupLevel.Full, Cp(1))),
                Point(2, Disk("vda", DiskBackupLevel.Incremental, Cp(2), 1)),
                Point(3, Disk("vda", DiskBackupLevel.Incremental, Cp(3), 2)),
            ],
        };

        var disk = ChainPlanner.Plan(input).Disks[0];

        Assert.Equal(expected, disk.Level);
        if (expected == DiskBackupLevel.Full)
        {
            Assert.Equal(FullReasonCode.Scheduled, disk.FullReason?.Code);
        }
    }

    [Fact]
    public void Differential_reads_since_the_newest_full_of_the_disk()
    {
        var plan = ChainPlanner.Plan(TwoPointChain(RequestedLevel.Differential));

        var disk = plan.Disks[0];
        Assert.Equal(DiskBackupLevel.Differential, disk.Level);
        Assert.Equal(Cp(1), disk.SinceCheckpoint);
        Assert.Equal(1, disk.ParentSequence);
    }

    [Fact]
    public void Differential_falls_back_like_auto_when_its_base_is_broken()
    {
        var input = TwoPointChain(RequestedLevel.Differential) with { Disks = [Health("vda", Bitmap(Cp(1), inconsistent: true), Bitmap(Cp(2)))] };

        var plan = ChainPlanner.Plan(input);

        Assert.Equal(FullReasonCode.BitmapInconsistent, plan.Disks[0].FullReason?.Code);
        Assert.Contains(plan.Repairs, r => r is { Kind: CheckpointRepairKind.Delete } && r.Checkpoint == Cp(1));
    }

    [Theory]
    [InlineData(RequestedLevel.Incremental)]
    [InlineData(RequestedLevel.Differential)]
    public void Without_fallback_a_disk_that_cannot_do_the_level_fails_the_plan_naming_it(RequestedLevel level)
    {
        var input = TwoPointChain(level) with { AllowFallback = false, Disks = [Health("vda") with { VirtualSize = Size * 2 }] };

        var error = Assert.Throws<TransferRequestException>(() => ChainPlanner.Plan(input));

        Assert.Equal("vda", error.Disk);
        Assert.Contains("vda", error.Message, StringComparison.Ordinal);
        Assert.Contains("bytes", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Without_fallback_a_healthy_chain_plans_normally()
    {
        var plan = ChainPlanner.Plan(TwoPointChain(RequestedLevel.Incremental) with { AllowFallback = false });

        Assert.Equal(DiskBackupLevel.Incremental, plan.Disks[0].Level);
    }

    [Fact]
    public void Unknown_target_is_refused()
    {
        var error = Assert.Throws<TransferRequestException>(() => ChainPlanner.Plan(TwoPointChain() with { Targets = ["vdz"] }));

        Assert.Equal("vdz", error.Disk);
    }

    [Fact]
    public void Stale_checkpoint_with_the_new_name_is_deleted_first_once_F02()
    {
        var input = TwoPointChain() with
        {
            Disks = [Health("vda", Bitmap(Cp(1)), Bitmap(Cp(2)), Bitmap(NewCheckpoint, inconsistent: true))],
            Checkpoints = [Checkpoint(Cp(1)), Checkpoint(Cp(2)), Checkpoint(NewCheckpoint)],
        };

        var plan = ChainPlanner.Plan(input);

        Assert.Equal(DiskBackupLevel.Incremental, plan.Disks[0].Level);
        var repair = Assert.Single(plan.Repairs);
        Assert.Equal((CheckpointRepairKind.Delete, NewCheckpoint), (repair.Kind, repair.Checkpoint));
    }

    [Fact]
    public void Orphan_checkpoints_of_an_unfinished_run_are_deleted_but_the_chains_are_kept_F03()
    {
        var orphan = Cp(3);
        var input = TwoPointChain() with
        {
            Disks = [Health("vda", Bitmap(Cp(1)), Bitmap(Cp(2)), Bitmap(orphan))],
            Checkpoints = [Checkpoint(Cp(1)), Checkpoint(Cp(2)), Checkpoint(orphan)],
        };

        var plan = ChainPlanner.Plan(input);

        var repair = Assert.Single(plan.Repairs);
        Assert.Equal((CheckpointRepairKind.Delete, orphan), (repair.Kind, repair.Checkpoint));
    }

    [Fact]
    public void With_a_chain_tag_only_this_chains_orphans_are_deleted_and_another_repositorys_checkpoints_are_left()
    {
        // Two repositories back up one domain: this chain's points name Cp(1), Cp(2) (untagged, made before tags), an
        // orphan of this chain carries its tag, and the other repository's live checkpoint (and an untagged one no point
        // here names) must survive this chain's F03 sweep.
        const string Ours = "0a1b2c3d";
        var orphan = DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch.AddDays(1), Ours);
        var theirs = DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch.AddDays(2), "ffee0011");
        var unknown = Cp(7);
        var input = TwoPointChain() with
        {
            ChainTag = Ours,
            Disks = [Health("vda", Bitmap(Cp(1)), Bitmap(Cp(2)), Bitmap(orphan), Bitmap(theirs), Bitmap(unknown))],
            Checkpoints = [Checkpoint(Cp(1)), Checkpoint(Cp(2)), Checkpoint(orphan), Checkpoint(theirs), Checkpoint(unknown)],
        };

        var plan = ChainPlanner.Plan(input);

        var repair = Assert.Single(plan.Repairs);
        Assert.Equal((CheckpointRepairKind.Delete, orphan), (repair.Kind, repair.Checkpoint));
        Assert.Equal(DiskBackupLevel.Incremental, plan.Disks[0].Level);
        Assert.True(ChainPlanner.BelongsToChain(Cp(1), Ours, input.Points));
        Assert.False(ChainPlanner.BelongsToChain(theirs, Ours, input.Points));
        Assert.False(ChainPlanner.BelongsToChain(unknown, Ours, input.Points));
        Assert.True(ChainPlanner.BelongsToChain(unknown, null, input.Points));
        Assert.False(ChainPlanner.BelongsToChain("veeam-1", null, input.Points));
    }

    [Fact]
    public void A_broken_base_of_another_repositorys_chain_is_not_repaired_by_this_one()
    {
        // The other chain's newest checkpoint has an inconsistent bitmap; this chain's incremental does not read through
        // it, so it is that chain's to repair (its next run goes full and deletes it), not this one's.
        var theirs = DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch.AddDays(2), "ffee0011");
        var input = TwoPointChain() with
        {
            ChainTag = "0a1b2c3d",
            Disks = [Health("vda", Bitmap(Cp(1)), Bitmap(Cp(2)), Bitmap(theirs, inconsistent: true))],
            Checkpoints = [Checkpoint(Cp(1)), Checkpoint(Cp(2)), Checkpoint(theirs)],
        };

        var plan = ChainPlanner.Plan(input);

        Assert.Empty(plan.Repairs);
        Assert.Equal(DiskBackupLevel.Incremental, plan.Disks[0].Level);
    }

    [Fact]
    public void Foreign_checkpoints_are_never_touched_F15()
    {
        var input = TwoPointChain() with
        {
            Disks = [Health("vda", Bitmap(Cp(1)), Bitmap(Cp(2)), Bitmap("veeam-1", inconsistent: true), Bitmap(NewCheckpoint[8..]))],
            Checkpoints = [Checkpoint(Cp(1)), Checkpoint(Cp(2)), Checkpoint("veeam-1"), Checkpoint("virtnbdbackup.0", metadata: false)],
        };

        var plan = ChainPlanner.Plan(input);

        Assert.Empty(plan.Repairs);
        Assert.Equal(DiskBackupLevel.Incremental, plan.Disks[0].Level);
    }

    [Fact]
    public void Point_naming_a_foreign_checkpoint_is_not_used_as_a_base()
    {
        var input = TwoPointChain() with
        {
            Disks = [Health("vda", Bitmap("veeam-1"))],
            Checkpoints = [Checkpoint("veeam-1")],
            Points = [Point(1, Disk("vda", DiskBackupLevel.Full, "veeam-1"))],
        };

        var plan = ChainPlanner.Plan(input);

        Assert.Equal(FullReasonCode.CheckpointMissing, plan.Disks[0].FullReason?.Code);
        Assert.Empty(plan.Repairs);
    }

    [Fact]
    public void New_checkpoint_must_be_drydocks()
    {
        Assert.Throws<ArgumentException>(() => ChainPlanner.Plan(TwoPointChain() with { NewCheckpoint = "mine" }));
    }

    [Fact]
    public void From_manifest_reads_levels_checkpoints_and_the_generation_label()
    {
        var manifest = new PointManifest
        {
            Format = "drydock-manifest",
            Version = 1,
            RepositoryId = Guid.NewGuid(),
            Tenant = "default",
            DomainId = Guid.Parse(Domain),
            DomainName = "vm",
            Sequence = 4,
            WriterId = "test",
            CreatedAt = DateTimeOffset.UnixEpoch,
            FinishedAt = DateTimeOffset.UnixEpoch,
            DomainXml = "",
            Disks =
            [
                new DiskManifest
                {
                    Name = "vda", Identity = "id-vda", VirtualSize = 4096, ChunkSize = 4096, Level = DiskBackupLevel.Incremental, ParentSequence = 3,
                    CheckpointName = Cp(4), CheckpointXml = "<x/>", IndexId = new string('0', 64),
                    Stats = new DiskStats { Chunks = 1, ZeroChunks = 0, SubmittedChunks = 1, InheritedChunks = 0, UploadedChunks = 1, DedupChunks = 0, BytesSubmitted = 4096, BytesUploaded = 10 },
                },
                new DiskManifest
                {
                    Name = "vdb", Identity = "id-vdb", VirtualSize = 4096, ChunkSize = 4096, Level = DiskBackupLevel.Full, IndexId = new string('0', 64),
                    Stats = new DiskStats { Chunks = 1, ZeroChunks = 1, SubmittedChunks = 0, InheritedChunks = 0, UploadedChunks = 0, DedupChunks = 0, BytesSubmitted = 0, BytesUploaded = 0 },
                },
            ],
            Labels = new Dictionary<string, string> { ["disk.vda.generation"] = "12", ["disk.vdb.generation"] = "junk", ["disk.vdb.full-reason"] = "NewDisk" },
        };

        var point = ChainPlanner.FromManifest(manifest);

        Assert.Equal(4, point.Sequence);
        var vda = point.Disk("vda")!;
        Assert.Equal((DiskBackupLevel.Incremental, 3L, Cp(4), "<x/>", 12L, 4096L, "id-vda"), (vda.Level, vda.ParentSequence!.Value, vda.CheckpointName, vda.CheckpointXml, vda.Generation!.Value, vda.VirtualSize, vda.Identity));
        Assert.Null(point.Disk("vdb")!.Generation);
        Assert.Null(point.Disk("vdb")!.CheckpointName);
    }

    [Fact]
    public void Checkpoints_to_keep_are_the_newest_points_and_the_newest_fulls_per_disk()
    {
        List<ChainPoint> points =
        [
            Point(1, Disk("vda", DiskBackupLevel.Full, Cp(1)), Disk("vdb", DiskBackupLevel.Full, Cp(1))),
            Point(2, Disk("vda", DiskBackupLevel.Incremental, Cp(2), 1), Disk("vdb", DiskBackupLevel.Full, Cp(2))),
            Point(3, Disk("vda", DiskBackupLevel.Incremental, Cp(3), 2), Disk("vdb", DiskBackupLevel.Incremental, Cp(3), 2)),
        ];

        Assert.Equal([Cp(1), Cp(2), Cp(3)], ChainPlanner.CheckpointsToKeep(points).Order(StringComparer.Ordinal));
        Assert.Equal([Cp(2), Cp(3)], ChainPlanner.CheckpointsToKeep(points.Select(p => p with { Disks = [.. p.Disks.Where(d => d.Name == "vdb")] }).ToList()).Order(StringComparer.Ordinal));
        Assert.Empty(ChainPlanner.CheckpointsToKeep([]));
    }

    [Fact]
    public void A_disk_the_last_point_left_out_is_incremental_from_its_own_newest_point_and_keeps_its_base()
    {
        // Point 2 backed up vdb alone (--disk vdb): vda's base is still point 1's checkpoint.
        List<ChainPoint> points =
        [
            Point(1, Disk("vda", DiskBackupLevel.Full, Cp(1)), Disk("vdb", DiskBackupLevel.Full, Cp(1))),
            Point(2, Disk("vdb", DiskBackupLevel.Full, Cp(2))),
        ];
        var input = new ChainPlanInput
        {
            DomainId = Domain,
            Level = RequestedLevel.Auto,
            Targets = ["vda", "vdb"],
            Disks = [Health("vda", Bitmap(Cp(1))), Health("vdb", Bitmap(Cp(1)), Bitmap(Cp(2)))],
            Checkpoints = [Checkpoint(Cp(1), true, "vda", "vdb"), Checkpoint(Cp(2), true, "vdb")],
            Points = points,
            NewCheckpoint = NewCheckpoint,
        };

        var plan = ChainPlanner.Plan(input);

        Assert.Equal((DiskBackupLevel.Incremental, Cp(1), 1L), (plan.Disks[0].Level, plan.Disks[0].SinceCheckpoint, plan.Disks[0].ParentSequence!.Value));
        Assert.Equal((DiskBackupLevel.Incremental, Cp(2), 2L), (plan.Disks[1].Level, plan.Disks[1].SinceCheckpoint, plan.Disks[1].ParentSequence!.Value));
        Assert.Empty(plan.Repairs);
        Assert.Equal([Cp(1), Cp(2)], ChainPlanner.CheckpointsToKeep(points, ["vda", "vdb"]).Order(StringComparer.Ordinal));
        Assert.Equal([Cp(2)], ChainPlanner.CheckpointsToKeep(points));

        // Another vdb-only run: its F03 sweep must not take vda's base either.
        var vdbOnly = ChainPlanner.Plan(input with { Targets = ["vdb"] });
        Assert.Empty(vdbOnly.Repairs);
    }

    [Fact]
    public void Checkpoints_of_a_removed_disk_are_not_kept()
    {
        List<ChainPoint> points =
        [
            Point(1, Disk("vda", DiskBackupLevel.Full, Cp(1)), Disk("vdb", DiskBackupLevel.Full, Cp(1))),
            Point(2, Disk("vda", DiskBackupLevel.Full, Cp(2))),
        ];

        Assert.Equal([Cp(2)], ChainPlanner.CheckpointsToKeep(points));
    }
}
