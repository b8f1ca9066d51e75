using Drydock.Hypervisor;
using Drydock.Repository.Format;
using Drydock.Transfer.Chain;

namespace Drydock.Transfer.Tests.Chain;

/// <summary>Small builders for chain-planner inputs.</summary>
internal static class ChainFixtures
{
    public const string Domain = "0b3f1c9e-5a7d-4e2b-9c1f-2a6b8d4e0f13";
    public const string NewCheckpoint = "drydock-20250102T030405Z-newnewne";
    public const ulong Size = 1 << 20;

    public static string Cp(int n) => $"drydock-2025010{n}T000000Z-0000000{n}";

    public static string Xml(string checkpoint, params string[] disks) => CheckpointXml.Format(new CheckpointDocument
    {
        Name = checkpoint,
        Disks = [.. disks.Select(d => new CheckpointDocumentDisk(d, checkpoint))],
    });

    public static BitmapHealth Bitmap(string checkpoint, bool usable = true, bool inconsistent = false) => new()
    {
        Checkpoint = checkpoint,
        Bitmap = checkpoint,
        Recording = usable,
        Inconsistent = inconsistent,
        Usable = usable && !inconsistent,
        Problem = usable && !inconsistent ? null : "inconsistent",
    };

    public static DiskHealth Health(string target, params BitmapHealth[] bitmaps) => new()
    {
        Target = target,
        Identity = "id-" + target,
        VirtualSize = Size,
        SupportsCheckpoints = true,
        Bitmaps = bitmaps,
    };

    public static CheckpointInfo Checkpoint(string name, bool metadata = true, params string[] disks) => new()
    {
        Name = name,
        DomainId = Domain,
        HasMetadata = metadata,
        Disks = [.. (disks.Length == 0 ? ["vda"] : disks).Select(d => new CheckpointDisk(d, name))],
    };

    public static ChainDisk Disk(string name, DiskBackupLevel level, string? checkpoint, long? parent = null, long? generation = 0) => new()
    {
        Name = name,
        Identity = "id-" + name,
        VirtualSize = (long)Size,
        Level = level,
        ParentSequence = parent,
        CheckpointName = checkpoint,
        CheckpointXml = checkpoint is null ? null : Xml(checkpoint, name),
        Generation = generation,
    };

    public static ChainPoint Point(long sequence, params ChainDisk[] disks) => new()
    {
        Sequence = sequence,
        CreatedAt = DateTimeOffset.UnixEpoch.AddHours(sequence),
        Disks = disks,
    };

    /// <summary>One disk vda, a full (#1, checkpoint 1) and an incremental (#2, checkpoint 2), both bitmaps healthy.</summary>
    public static ChainPlanInput TwoPointChain(RequestedLevel level = RequestedLevel.Auto) => new()
    {
        DomainId = Domain,
        Level = level,
        Targets = ["vda"],
        Disks = [Health("vda", Bitmap(Cp(1)), Bitmap(Cp(2)))],
        Checkpoints = [Checkpoint(Cp(1)), Checkpoint(Cp(2))],
        Points =
        [
            Point(1, Disk("vda", DiskBackupLevel.Full, Cp(1))),
            Point(2, Disk("vda", DiskBackupLevel.Incremental, Cp(2), parent: 1)),
        ],
        NewCheckpoint = NewCheckpoint,
    };
}
