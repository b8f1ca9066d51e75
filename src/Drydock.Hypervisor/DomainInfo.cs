namespace Drydock.Hypervisor;

/// <summary>The run state of a domain.</summary>
public enum DomainState
{
    /// <summary>The hypervisor reports a state Drydock does not model.</summary>
    Unknown = 0,

    /// <summary>The guest runs.</summary>
    Running = 1,

    /// <summary>Started but not running the guest (paused, or started paused).</summary>
    Paused = 2,

    /// <summary>Not running.</summary>
    ShutOff = 3,

    /// <summary>Stopped abnormally (the process died or the guest crashed).</summary>
    Crashed = 4,
}

/// <summary>A domain (virtual machine) as the hypervisor describes it now.</summary>
public sealed record DomainInfo
{
    /// <summary>Stable identifier: the UUID where the hypervisor has one. Methods of <see cref="IHypervisorDriver"/> take this.</summary>
    public required string Id { get; init; }

    /// <summary>The name people use.</summary>
    public required string Name { get; init; }

    /// <summary>The host it is on (<see cref="IHypervisorDriver.HostName"/>).</summary>
    public required string HostName { get; init; }

    /// <summary>Its run state.</summary>
    public required DomainState State { get; init; }

    /// <summary>
    /// Why the driver reports <see cref="State"/>, where that is not the hypervisor's own word (e.g. the QEMU driver:
    /// what writes to a qemu-storage-daemon's disks), for messages; null when there is nothing to add.
    /// </summary>
    public string? StateDetail { get; init; }

    /// <summary>Whether the hypervisor keeps its definition when it stops (false for transient domains).</summary>
    public bool Persistent { get; init; } = true;

    /// <summary>Its disks that Drydock can back up (CD-ROMs and other non-disk devices are not listed).</summary>
    public required IReadOnlyList<DiskInfo> Disks { get; init; }

    /// <summary>The disk with target name <paramref name="target"/>.</summary>
    /// <param name="target">The target name, e.g. <c>vda</c>.</param>
    /// <returns>The disk, or null.</returns>
    public DiskInfo? FindDisk(string target) => Disks.FirstOrDefault(d => string.Equals(d.Target, target, StringComparison.Ordinal));
}

/// <summary>One disk of a domain.</summary>
public sealed record DiskInfo
{
    /// <summary>The target name, unique within the domain (libvirt <c>vda</c>; the QEMU driver's configured name).</summary>
    public required string Target { get; init; }

    /// <summary>Where the data lives (a file path, a volume, a network source), as the hypervisor names it.</summary>
    public string? Source { get; init; }

    /// <summary>The image format (<see cref="DiskFormats"/>).</summary>
    public required string Format { get; init; }

    /// <summary>The guest-visible size in bytes.</summary>
    public required ulong VirtualSize { get; init; }

    /// <summary>
    /// A stable identity of the disk's image that changes when the disk is replaced by another image under the same
    /// target (FAULTS.md F10): compare it with the identity recorded at the last backup. Opaque; only equality matters.
    /// </summary>
    public required string Identity { get; init; }

    /// <summary>
    /// A number that grows whenever the driver knows the disk's content changed in a way its checkpoints do not show
    /// (snapshot revert, storage rollback, image replaced; FAULTS.md F13). Compare with the value recorded at the last
    /// backup: a different value means a full backup. 0 when <see cref="HypervisorCapabilities.DiskGenerations"/> is false.
    /// </summary>
    public long Generation { get; init; }

    /// <summary>Whether the disk can carry checkpoints (persistent dirty bitmaps; false for raw images, F22).</summary>
    public bool SupportsCheckpoints { get; init; }

    /// <summary>Why it cannot carry checkpoints, when <see cref="SupportsCheckpoints"/> is false.</summary>
    public string? CheckpointsUnsupportedReason { get; init; }

    /// <summary>Whether the guest sees it read-only.</summary>
    public bool ReadOnly { get; init; }
}

/// <summary>Image format names as the hypervisors report them.</summary>
public static class DiskFormats
{
    /// <summary>qcow2: persistent dirty bitmaps, hence checkpoints.</summary>
    public const string Qcow2 = "qcow2";

    /// <summary>Raw: no bitmaps; full backups only.</summary>
    public const string Raw = "raw";
}

/// <summary>The hypervisor's own definition of a domain, stored in manifests.</summary>
/// <param name="Format">What <paramref name="Text"/> is: <see cref="LibvirtXml"/>, <see cref="QemuJson"/>, <see cref="SimJson"/>.</param>
/// <param name="Text">The definition.</param>
public sealed record DomainDefinition(string Format, string Text)
{
    /// <summary>libvirt domain XML.</summary>
    public const string LibvirtXml = "libvirt-domain-xml";

    /// <summary>The QEMU driver's JSON description of the instance and its disks.</summary>
    public const string QemuJson = "drydock-qemu-json";

    /// <summary>The simulator's JSON description.</summary>
    public const string SimJson = "drydock-sim-json";
}
