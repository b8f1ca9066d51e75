using Drydock.Hypervisor;
using Drydock.Repository.Format;
using Drydock.Transfer.Chain;
using FsCheck;
using FsCheck.Fluent;
using Xunit;
using static Drydock.Transfer.Tests.Chain.ChainFixtures;

namespace Drydock.Transfer.Tests.Chain;

public sealed class ChainPlannerPropertyTests
{
    private static readonly string[] Owned = [Cp(1), Cp(2), Cp(3), Cp(4), NewCheckpoint];
    private static readonly string[] Foreign = ["veeam-1", "Drydock-1", "drydock_1", "x-drydock-1", "virtnbdbackup.0"];
    private static readonly string[] Targets = ["vda", "vdb", "vdc"];

    [Fact]
    public void Repairs_never_name_a_foreign_checkpoint_F15() => ForAllInputs(input =>
    {
        var plan = ChainPlanner.Plan(input);
        return plan.Repairs.All(r => DrydockNames.IsOwned(r.Checkpoint));
    });

    [Fact]
    public void Repairs_never_delete_a_checkpoint_the_plan_reads_from() => ForAllInputs(input =>
    {
        var plan = ChainPlanner.Plan(input);
        var bases = plan.Disks.Select(d => d.SinceCheckpoint).OfType<string>().ToHashSet(StringComparer.Ordinal);
        return plan.Repairs.All(r => r.Kind == CheckpointRepairKind.Redefine || !bases.Contains(r.Checkpoint));
    });

    [Fact]
    public void Repairs_name_each_checkpoint_once() => ForAllInputs(input =>
    {
        var plan = ChainPlanner.Plan(input);
        return plan.Repairs.Select(r => r.Checkpoint).Distinct(StringComparer.Ordinal).Count() == plan.Repairs.Count;
    });

    [Fact]
    public void Every_disk_is_either_full_with_a_reason_or_reads_from_an_owned_checkpoint_of_a_committed_point() => ForAllInputs(input =>
    {
        var plan = ChainPlanner.Plan(input);
        var sequences = input.Points.Select(p => p.Sequence).ToHashSet();
        return plan.Disks.Select(d => d.Target).SequenceEqual(input.Targets)
            && plan.Disks.All(d => d.Level == DiskBackupLevel.Full
                ? d.FullReason is not null && d.SinceCheckpoint is null && d.ParentSequence is null
                : d.FullReason is null && d.SinceCheckpoint is { } since && DrydockNames.IsOwned(since) && since != input.NewCheckpoint
                    && d.ParentSequence is { } parent && sequences.Contains(parent)
                    && input.Disks.Single(h => h.Target == d.Target).ForCheckpoint(since) is { Usable: true });
    });

    [Fact]
    public void Plan_does_not_depend_on_the_order_the_driver_lists_things_in() => ForAllInputs(input =>
    {
        var shuffled = input with
        {
            Checkpoints = [.. input.Checkpoints.AsEnumerable().Reverse()],
            Disks = [.. input.Disks.Select(d => d with { Bitmaps = [.. d.Bitmaps.AsEnumerable().Reverse()] }).Reverse()],
        };
        var a = ChainPlanner.Plan(input);
        var b = ChainPlanner.Plan(shuffled);
        return a.Disks.SequenceEqual(b.Disks) && a.Repairs.SequenceEqual(b.Repairs);
    });

    [Fact]
    public void Planning_again_after_the_repairs_asks_for_no_further_deletes_of_the_same_checkpoints() => ForAllInputs(input =>
    {
        // Apply the repairs the way a driver would, then plan again: nothing deleted is asked for again (never loops, F02).
        var plan = ChainPlanner.Plan(input);
        var deleted = plan.Repairs.Where(r => r.Kind == CheckpointRepairKind.Delete).Select(r => r.Checkpoint).ToHashSet(StringComparer.Ordinal);
        var metadataDeleted = plan.Repairs.Where(r => r.Kind == CheckpointRepairKind.DeleteMetadata).Select(r => r.Checkpoint).ToHashSet(StringComparer.Ordinal);
        var after = input with
        {
            Checkpoints = [.. input.Checkpoints.Where(c => !deleted.Contains(c.Name) && !(metadataDeleted.Contains(c.Name) && c.HasMetadata))],
            Disks = [.. input.Disks.Select(d => d with { Bitmaps = [.. d.Bitmaps.Where(b => !deleted.Contains(b.Checkpoint))] })],
        };
        var again = ChainPlanner.Plan(after);
        return again.Repairs.All(r => r.Kind == CheckpointRepairKind.Redefine || !(deleted.Contains(r.Checkpoint) || (r.Kind == CheckpointRepairKind.DeleteMetadata && metadataDeleted.Contains(r.Checkpoint))));
    });

    [Fact]
    public void Random_inputs_reach_every_level_and_repair_kind()
    {
        // Guards the generator: the properties above are only worth something if it reaches these cases.
        var plans = Enumerable.Range(0, 3000).Select(RandomInput).Select(ChainPlanner.Plan).ToList();
        Assert.Contains(plans, p => p.Disks.Any(d => d.Level == DiskBackupLevel.Incremental));
        Assert.Contains(plans, p => p.Disks.Any(d => d.Level == DiskBackupLevel.Differential));
        foreach (var kind in Enum.GetValues<CheckpointRepairKind>())
        {
            Assert.Contains(plans, p => p.Repairs.Any(r => r.Kind == kind));
        }
    }

    private static void ForAllInputs(Func<ChainPlanInput, bool> property) =>
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(500), Prop.ForAll(Arb.From(Gen.Choose(0, int.MaxValue)), seed => property(RandomInput(seed))));

    private static ChainPlanInput RandomInput(int seed)
    {
        var random = new Random(seed);
        var pool = Owned.Concat(Foreign).ToArray();
        string Pick() => pool[random.Next(pool.Length)];
        T[] Some<T>(IEnumerable<T> items) => [.. items.Where(_ => random.Next(2) == 0)];

        var targets = Targets.Take(random.Next(1, Targets.Length + 1)).ToArray();
        var disks = targets.Select(t => new DiskHealth
        {
            Target = t,
            Identity = random.Next(6) == 0 ? "other" : "id-" + t,
            VirtualSize = random.Next(6) == 0 ? Size * 2 : Size,
            Generation = random.Next(6) == 0 ? 1 : 0,
            SupportsCheckpoints = random.Next(8) != 0,
            Bitmaps = [.. Some(pool).Select(name => Bitmap(name, usable: random.Next(5) != 0, inconsistent: random.Next(6) == 0) with { Busy = random.Next(10) == 0 })],
        }).ToArray();
        var checkpoints = Some(pool).Select(name => Checkpoint(name, metadata: random.Next(4) != 0, targets)).ToArray();

        var points = new List<ChainPoint>();
        var count = random.Next(0, 5);
        for (var s = 1; s <= count; s++)
        {
            var pointDisks = Some(Targets).Select(t =>
            {
                var level = s == 1 ? DiskBackupLevel.Full : (DiskBackupLevel)random.Next(3);
                var checkpoint = random.Next(6) == 0 ? null : Pick();
                return Disk(t, level, checkpoint, level == DiskBackupLevel.Full ? null : random.Next(1, s), random.Next(5) == 0 ? null : 0) with
                {
                    CheckpointXml = random.Next(4) == 0 || checkpoint is null ? null : Xml(checkpoint, t),
                };
            }).ToArray();
            points.Add(Point(s, pointDisks));
        }

        return new ChainPlanInput
        {
            DomainId = Domain,
            Level = (RequestedLevel)random.Next(4),
            AutoFullAfter = random.Next(3) == 0 ? random.Next(0, 4) : null,
            Targets = targets,
            Disks = disks,
            Checkpoints = checkpoints,
            CheckpointMetadata = random.Next(4) != 0,
            Points = points,
            NewCheckpoint = NewCheckpoint,
            UnusableCheckpoints = random.Next(5) == 0 ? new Dictionary<string, string> { [Pick()] = "redefine failed" } : new Dictionary<string, string>(),
        };
    }
}
