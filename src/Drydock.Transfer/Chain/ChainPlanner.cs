using System.Globalization;
using Drydock.Hypervisor;
using Drydock.Repository.Format;

namespace Drydock.Transfer.Chain;

/// <summary>
/// The chain logic, pure: which level each disk gets, why a disk falls back to full, which checkpoints to repair before a
/// capture and which to delete after a commit. No IO; the later ChainGrain owns the same calls.
/// </summary>
public static class ChainPlanner
{
    /// <summary>The manifest label prefix of per-disk labels: <c>disk.&lt;name&gt;.generation</c>, <c>disk.&lt;name&gt;.full-reason</c>.</summary>
    public const string DiskLabelPrefix = "disk.";

    /// <summary>The manifest label that records the requested level of the job.</summary>
    public const string LevelLabel = "level";

    /// <summary>The label that records a disk's generation at capture time (F13).</summary>
    /// <param name="disk">The disk's target name.</param>
    /// <returns>The label name.</returns>
    public static string GenerationLabel(string disk) => DiskLabelPrefix + disk + ".generation";

    /// <summary>The label that records why a disk was read in full (informational).</summary>
    /// <param name="disk">The disk's target name.</param>
    /// <returns>The label name.</returns>
    public static string FullReasonLabel(string disk) => DiskLabelPrefix + disk + ".full-reason";

    /// <summary>Plans a backup.</summary>
    /// <param name="input">Request, domain state and lineage.</param>
    /// <returns>The plan.</returns>
    /// <exception cref="TransferRequestException">A target is unknown, or a disk cannot do the requested level and fallback is off.</exception>
    public static ChainPlan Plan(ChainPlanInput input)
    {
        if (!DrydockNames.IsOwned(input.NewCheckpoint))
        {
            throw new ArgumentException($"The new checkpoint '{input.NewCheckpoint}' of domain {Who(input)} lacks Drydock's prefix.", nameof(input));
        }

        var health = new Dictionary<string, DiskHealth>(StringComparer.Ordinal);
        foreach (var disk in input.Disks)
        {
            health.TryAdd(disk.Target, disk);
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var target in input.Targets)
        {
            if (!health.ContainsKey(target))
            {
                throw new TransferRequestException($"Domain {Who(input)} has no disk '{target}'.") { Disk = target };
            }

            if (!seen.Add(target))
            {
                throw new TransferRequestException($"Disk '{target}' of domain {Who(input)} is asked for more than once.") { Disk = target };
            }
        }

        var points = input.Points.OrderBy(p => p.Sequence).ToList();
        var bySequence = new Dictionary<long, ChainPoint>();
        foreach (var point in points)
        {
            bySequence[point.Sequence] = point;
        }

        var checkpoints = new Dictionary<string, CheckpointInfo>(StringComparer.Ordinal);
        foreach (var checkpoint in input.Checkpoints)
        {
            // A driver may list bitmap-only entries next to defined ones; metadata wins.
            if (!checkpoints.TryGetValue(checkpoint.Name, out var known) || (!known.HasMetadata && checkpoint.HasMetadata))
            {
                checkpoints[checkpoint.Name] = checkpoint;
            }
        }

        var decisions = new List<DiskDecision>(input.Targets.Count);
        foreach (var target in input.Targets)
        {
            decisions.Add(PlanDisk(input, target, health[target], points, bySequence, checkpoints));
        }

        if (!input.AllowFallback && input.Level is RequestedLevel.Incremental or RequestedLevel.Differential)
        {
            var failed = decisions.FirstOrDefault(d => d.Plan.Level == DiskBackupLevel.Full);
            if (failed is not null)
            {
                throw new TransferRequestException(
                    $"Disk '{failed.Plan.Target}' of domain {Who(input)} cannot be backed up {Describe(input.Level)} and fallback to full is off: {failed.Plan.FullReason!.Message}")
                {
                    Disk = failed.Plan.Target,
                };
            }
        }

        var bases = decisions.Select(d => d.Plan.SinceCheckpoint).OfType<string>().ToHashSet(StringComparer.Ordinal);
        return new ChainPlan
        {
            NewCheckpoint = input.NewCheckpoint,
            Disks = [.. decisions.Select(d => d.Plan)],
            Repairs = Repairs(input, decisions, bases, points, checkpoints),
        };
    }

    /// <summary>The committed points' chain view of a manifest.</summary>
    /// <param name="manifest">A committed point's manifest.</param>
    /// <returns>The chain point.</returns>
    public static ChainPoint FromManifest(PointManifest manifest) => new()
    {
        Sequence = manifest.Sequence,
        CreatedAt = manifest.CreatedAt,
        Disks = [.. manifest.Disks.Select(d => new ChainDisk
        {
            Name = d.Name,
            Identity = d.Identity,
            VirtualSize = d.VirtualSize,
            Level = d.Level,
            ParentSequence = d.ParentSequence,
            CheckpointName = d.CheckpointName,
            CheckpointXml = d.CheckpointXml,
            Generation = manifest.Labels.TryGetValue(GenerationLabel(d.Name), out var text)
                && long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var generation)
                    ? generation
                    : null,
        })],
    };

    /// <summary>
    /// Drydock's checkpoints the chain still needs once these points are committed: per disk, its newest point's checkpoint
    /// (base of the next incremental) and its newest full's (base of the next differential).
    /// </summary>
    /// <param name="points">Committed points, oldest first.</param>
    /// <param name="currentDisks">The domain's disks now, or null. A disk the newest point lacks but the domain still has
    /// was left out of the last backup (<c>--disk</c>): its newest point that has it stays its base.</param>
    /// <returns>Checkpoint names.</returns>
    /// <remarks>
    /// A disk that neither the newest point nor <paramref name="currentDisks"/> has is not part of the domain's chain any
    /// more (removed) and its next backup is full anyway (<see cref="FullReasonCode.NewDisk"/>), so its lineage ends
    /// cleanly (F11).
    /// </remarks>
    public static IReadOnlySet<string> CheckpointsToKeep(IReadOnlyList<ChainPoint> points, IEnumerable<string>? currentDisks = null)
    {
        var keep = new HashSet<string>(StringComparer.Ordinal);
        if (points.Count == 0)
        {
            return keep;
        }

        var ordered = points.OrderBy(p => p.Sequence).ToList();
        var disks = new SortedSet<string>(ordered[^1].Disks.Select(d => d.Name), StringComparer.Ordinal);
        disks.UnionWith(currentDisks ?? []);
        foreach (var disk in disks)
        {
            if (NewestWith(ordered, disk)?.Disk(disk)?.CheckpointName is { } latest && DrydockNames.IsOwned(latest))
            {
                keep.Add(latest);
            }

            var full = NewestFull(ordered, disk);
            if (full?.Disk(disk)?.CheckpointName is { } fullCheckpoint && DrydockNames.IsOwned(fullCheckpoint))
            {
                keep.Add(fullCheckpoint);
            }
        }

        return keep;
    }

    /// <summary>
    /// Whether a checkpoint is this chain's to delete: Drydock's, and either carrying <paramref name="chainTag"/> or named
    /// by one of the chain's committed points. With no tag every Drydock checkpoint counts (see
    /// <see cref="ChainPlanInput.ChainTag"/>).
    /// </summary>
    /// <param name="name">The checkpoint name.</param>
    /// <param name="chainTag">The chain's tag, or null.</param>
    /// <param name="points">The chain's committed points.</param>
    /// <returns>True when the chain may delete it.</returns>
    public static bool BelongsToChain(string name, string? chainTag, IEnumerable<ChainPoint> points)
    {
        ArgumentNullException.ThrowIfNull(points);
        if (!DrydockNames.IsOwned(name))
        {
            return false;
        }

        if (chainTag is null || string.Equals(DrydockNames.ChainTagOf(name), chainTag, StringComparison.Ordinal))
        {
            return true;
        }

        return points.Any(p => p.Disks.Any(d => string.Equals(d.CheckpointName, name, StringComparison.Ordinal)));
    }

    private static DiskDecision PlanDisk(
        ChainPlanInput input,
        string target,
        DiskHealth health,
        IReadOnlyList<ChainPoint> points,
        Dictionary<long, ChainPoint> bySequence,
        Dictionary<string, CheckpointInfo> checkpoints)
    {
        if (input.Level == RequestedLevel.Full)
        {
            return Full(target, FullReasonCode.Requested, $"A full backup of disk '{target}' was requested.");
        }

        if (points.Count == 0)
        {
            return Full(target, FullReasonCode.NoPriorPoint, $"Domain {Who(input)} has no committed restore point yet.");
        }

        // The disk's newest point: usually the newest of all, an older one when the last backups left it out (--disk).
        var newest = NewestWith(points, target);
        if (newest is null)
        {
            return Full(target, FullReasonCode.NewDisk, string.Create(CultureInfo.InvariantCulture, $"Disk '{target}' is in no committed point of the domain (added since point #{points[^1].Sequence})."));
        }

        var differential = input.Level == RequestedLevel.Differential;
        var basePoint = differential ? NewestFull(points, target) : newest;
        if (basePoint is null)
        {
            return Full(target, FullReasonCode.NoBaseCheckpoint, $"Disk '{target}' has no full backup in the lineage to take a differential against.");
        }

        var parent = basePoint.Disk(target)!;
        if (!string.Equals(parent.Identity, health.Identity, StringComparison.Ordinal))
        {
            return Full(target, FullReasonCode.Replaced, string.Create(CultureInfo.InvariantCulture, $"Disk '{target}' was replaced: its image identity is '{health.Identity}', point #{basePoint.Sequence} recorded '{parent.Identity}'."));
        }

        if (parent.VirtualSize < 0 || (ulong)parent.VirtualSize != health.VirtualSize)
        {
            return Full(target, FullReasonCode.Resized, string.Create(CultureInfo.InvariantCulture, $"Disk '{target}' is {health.VirtualSize} bytes, point #{basePoint.Sequence} recorded {parent.VirtualSize}."));
        }

        if (parent.Generation is { } generation && generation != health.Generation)
        {
            return Full(target, FullReasonCode.GenerationChanged, string.Create(CultureInfo.InvariantCulture, $"The content of disk '{target}' changed behind its checkpoints (generation {health.Generation}, point #{basePoint.Sequence} recorded {generation}): reverted or rolled back."));
        }

        if (!health.SupportsCheckpoints)
        {
            return Full(target, FullReasonCode.CheckpointsUnsupported, $"Disk '{target}' cannot carry checkpoints.");
        }

        if (parent.CheckpointName is not { } since)
        {
            return Full(target, FullReasonCode.NoBaseCheckpoint, string.Create(CultureInfo.InvariantCulture, $"Point #{basePoint.Sequence} has no checkpoint for disk '{target}'."));
        }

        if (!DrydockNames.IsOwned(since))
        {
            return Full(target, FullReasonCode.CheckpointMissing, string.Create(CultureInfo.InvariantCulture, $"Point #{basePoint.Sequence} names checkpoint '{since}' for disk '{target}', which is not Drydock's."));
        }

        if (input.Level == RequestedLevel.Auto && input.AutoFullAfter is { } limit)
        {
            var length = IncrementalsSinceFull(newest, target, bySequence);
            if (length >= limit)
            {
                return Full(target, FullReasonCode.Scheduled, string.Create(CultureInfo.InvariantCulture, $"Disk '{target}' has {length} incremental(s) since its last full; a full is taken every {limit}."));
            }
        }

        if (string.Equals(since, input.NewCheckpoint, StringComparison.Ordinal))
        {
            // Practically impossible (random suffix), but the stale name is deleted below: it cannot be a base.
            return Full(target, FullReasonCode.CheckpointMissing, $"The base checkpoint '{since}' of disk '{target}' has the new checkpoint's name and is removed.");
        }

        var bitmap = health.ForCheckpoint(since);
        checkpoints.TryGetValue(since, out var checkpoint);
        var hasMetadata = checkpoint is { HasMetadata: true };
        if (bitmap is null)
        {
            List<CheckpointRepair> repairs = hasMetadata
                ? [new CheckpointRepair(CheckpointRepairKind.DeleteMetadata, since, null, $"its bitmap on disk '{target}' is gone")]
                : [];
            return new DiskDecision(FullPlan(target, FullReasonCode.BitmapMissing, $"Disk '{target}' has no bitmap for checkpoint '{since}'."), repairs);
        }

        // A driver that keeps metadata may call a bitmap unusable only because its metadata is gone (libvirt): a
        // persistent, consistent, idle bitmap is then a redefine (F05), not a broken base.
        var metadataLost = input.CheckpointMetadata && !hasMetadata;
        var usable = bitmap.Usable || (metadataLost && bitmap.Persistent);
        if (!usable || bitmap.Inconsistent || bitmap.Busy)
        {
            var problem = bitmap.Problem ?? (bitmap.Inconsistent ? "inconsistent" : bitmap.Busy ? "busy" : "unusable");
            return new DiskDecision(
                FullPlan(target, FullReasonCode.BitmapInconsistent, $"The bitmap of checkpoint '{since}' on disk '{target}' is unusable: {problem}"),
                [new CheckpointRepair(CheckpointRepairKind.Delete, since, null, $"its bitmap on disk '{target}' is unusable: {problem}")]);
        }

        if (input.UnusableCheckpoints.TryGetValue(since, out var why))
        {
            return new DiskDecision(FullPlan(target, FullReasonCode.CheckpointMissing, $"The base checkpoint '{since}' of disk '{target}' cannot be used: {why}"), [new CheckpointRepair(CheckpointRepairKind.Delete, since, null, $"unusable: {why}")]);
        }

        List<CheckpointRepair> redefine = [];
        if (metadataLost)
        {
            if (parent.CheckpointXml is not { Length: > 0 } xml)
            {
                return Full(target, FullReasonCode.CheckpointMissing, $"Checkpoint '{since}' of disk '{target}' lost its metadata and no saved XML can redefine it.");
            }

            redefine.Add(new CheckpointRepair(CheckpointRepairKind.Redefine, since, xml, "its metadata was lost; redefined from the saved XML"));
        }

        return new DiskDecision(
            new DiskChainPlan
            {
                Target = target,
                Level = differential ? DiskBackupLevel.Differential : DiskBackupLevel.Incremental,
                SinceCheckpoint = since,
                ParentSequence = basePoint.Sequence,
            },
            redefine);
    }

    private static IReadOnlyList<CheckpointRepair> Repairs(
        ChainPlanInput input,
        IReadOnlyList<DiskDecision> decisions,
        HashSet<string> bases,
        IReadOnlyList<ChainPoint> points,
        Dictionary<string, CheckpointInfo> checkpoints)
    {
        // Ours to delete: Drydock's, and this chain's (another repository's chain is left alone).
        var owned = new SortedSet<string>(StringComparer.Ordinal);
        var present = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in checkpoints.Keys.Concat(input.Disks.SelectMany(d => d.Bitmaps).Select(b => b.Checkpoint)))
        {
            present.Add(name);
            if (BelongsToChain(name, input.ChainTag, points))
            {
                owned.Add(name);
            }
        }

        var result = new List<CheckpointRepair>();
        var named = new HashSet<string>(StringComparer.Ordinal);

        // F02: a stale checkpoint or bitmap holding the new name would fail the capture ("already exists"). Once, first.
        // The new name is this run's own choice, so whatever holds it is a stale leftover of ours, tag or not.
        if (DrydockNames.IsOwned(input.NewCheckpoint) && present.Contains(input.NewCheckpoint))
        {
            result.Add(new CheckpointRepair(CheckpointRepairKind.Delete, input.NewCheckpoint, null, "a stale checkpoint or bitmap holds the new checkpoint's name"));
            named.Add(input.NewCheckpoint);
        }

        // F01, F06: broken bases that still exist, deleted unless another disk of this plan still reads through them; a
        // full delete supersedes a metadata-only one. Then F05: redefinitions.
        var perDisk = decisions.SelectMany(d => d.Repairs).Where(r => DrydockNames.IsOwned(r.Checkpoint)).ToList();
        foreach (var kind in new[] { CheckpointRepairKind.Delete, CheckpointRepairKind.DeleteMetadata, CheckpointRepairKind.Redefine })
        {
            foreach (var repair in perDisk.Where(r => r.Kind == kind).OrderBy(r => r.Checkpoint, StringComparer.Ordinal))
            {
                var destructive = kind != CheckpointRepairKind.Redefine;
                if ((destructive && (bases.Contains(repair.Checkpoint) || !owned.Contains(repair.Checkpoint))) || !named.Add(repair.Checkpoint))
                {
                    continue;
                }

                result.Add(repair);
            }
        }

        // F03: our checkpoints the committed chain does not need (orphans of a crashed or abandoned run). The disks the
        // domain has now count, so a disk this run leaves out keeps its base.
        var keep = CheckpointsToKeep(points, input.Disks.Select(d => d.Target));
        foreach (var name in owned)
        {
            if (!keep.Contains(name) && !bases.Contains(name) && named.Add(name))
            {
                result.Add(new CheckpointRepair(CheckpointRepairKind.Delete, name, null, "not needed by the committed chain (orphan of an unfinished run)"));
            }
        }

        return result;
    }

    private static ChainPoint? NewestWith(IReadOnlyList<ChainPoint> ordered, string disk)
    {
        for (var i = ordered.Count - 1; i >= 0; i--)
        {
            if (ordered[i].Disk(disk) is not null)
            {
                return ordered[i];
            }
        }

        return null;
    }

    private static ChainPoint? NewestFull(IReadOnlyList<ChainPoint> ordered, string disk)
    {
        for (var i = ordered.Count - 1; i >= 0; i--)
        {
            if (ordered[i].Disk(disk) is { Level: DiskBackupLevel.Full })
            {
                return ordered[i];
            }
        }

        return null;
    }

    /// <summary>Non-full links from the newest point's disk back along its parents to its full.</summary>
    private static int IncrementalsSinceFull(ChainPoint newest, string disk, Dictionary<long, ChainPoint> bySequence)
    {
        var count = 0;
        var point = newest;
        var visited = new HashSet<long>();
        while (visited.Add(point.Sequence) && point.Disk(disk) is { } current && current.Level != DiskBackupLevel.Full)
        {
            count++;
            if (current.ParentSequence is not { } parent || !bySequence.TryGetValue(parent, out var next))
            {
                break;
            }

            point = next;
        }

        return count;
    }

    private static string Who(ChainPlanInput input) => input.DomainName is { } name && name != input.DomainId ? $"'{name}' ({input.DomainId})" : $"'{input.DomainId}'";

    private static DiskDecision Full(string target, FullReasonCode code, string message) => new(FullPlan(target, code, message), []);

    private static DiskChainPlan FullPlan(string target, FullReasonCode code, string message) => new()
    {
        Target = target,
        Level = DiskBackupLevel.Full,
        FullReason = new FullReason(code, message),
    };

    private static string Describe(RequestedLevel level) => level switch
    {
        RequestedLevel.Incremental => "incrementally",
        RequestedLevel.Differential => "differentially",
        RequestedLevel.Full => "in full",
        _ => "automatically",
    };

    private sealed record DiskDecision(DiskChainPlan Plan, IReadOnlyList<CheckpointRepair> Repairs);
}
