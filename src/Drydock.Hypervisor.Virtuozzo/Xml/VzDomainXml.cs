namespace Drydock.Hypervisor.Virtuozzo.Xml;

/// <summary>An export the domain XML reports for a disk (<c>&lt;x-blockexport&gt;</c>).</summary>
/// <param name="ExportName">The NBD export name libvirt chose or was given.</param>
/// <param name="Snapshot">The block snapshot it serves, if any.</param>
/// <param name="Checkpoint">The checkpoint whose changes it serves, if any.</param>
public sealed record VzDiskExport(string ExportName, string? Snapshot, string? Checkpoint);

/// <summary>One disk of a Virtuozzo domain XML with the X elements.</summary>
/// <param name="Target">Target name.</param>
/// <param name="Source">Image path (file disks).</param>
/// <param name="Format">Driver type.</param>
/// <param name="Checkpoints">Checkpoint ids on the disk (<c>&lt;x-checkpoint&gt;</c>), oldest first.</param>
/// <param name="Exports">Exports of the disk (<c>&lt;x-blockexport&gt;</c>).</param>
public sealed record VzDomainDisk(string Target, string? Source, string Format, IReadOnlyList<string> Checkpoints, IReadOnlyList<VzDiskExport> Exports);

/// <summary>
/// The parts of a Virtuozzo domain XML the driver reads: UUID, name, disks, and per disk the <c>x-checkpoint</c> and
/// <c>x-blockexport</c> elements. IMPORTANT: no documentation of these two elements was found (see docs/HYPERVISORS.md);
/// their shape here is inferred — a disk child element per checkpoint carrying its id in <c>name</c> (or as text), and per
/// export <c>exportname</c>, <c>snapshot</c>, <c>checkpoint</c> attributes like the export XML's disk — and the reader
/// is tolerant: it accepts the elements either inside <c>&lt;disk&gt;</c> or under <c>&lt;devices&gt;</c> with a
/// <c>disk</c>/<c>target</c> attribute naming the disk.
/// </summary>
/// <param name="Uuid">The UUID.</param>
/// <param name="Name">The name.</param>
/// <param name="Disks">The disks (<c>device='disk'</c>).</param>
public sealed record VzDomainXml(string Uuid, string Name, IReadOnlyList<VzDomainDisk> Disks)
{
    /// <summary>Reads a domain XML.</summary>
    /// <exception cref="FormatException">Malformed.</exception>
    public static VzDomainXml Parse(string xml)
    {
        var root = VzXml.Load(xml, "domain");
        var uuid = root.Element("uuid")?.Value.Trim() ?? throw new FormatException("Domain XML has no <uuid>.");
        var name = root.Element("name")?.Value.Trim() ?? throw new FormatException("Domain XML has no <name>.");
        var devices = root.Element("devices");
        var disks = new List<VzDomainDisk>();
        foreach (var disk in devices?.Elements("disk") ?? [])
        {
            if ((string?)disk.Attribute("device") is not (null or "disk"))
            {
                continue;
            }

            var target = (string?)disk.Element("target")?.Attribute("dev") ?? throw new FormatException($"Domain '{name}' has a disk without <target dev>.");
            var source = disk.Element("source");
            var sourcePath = (string?)source?.Attribute("file") ?? (string?)source?.Attribute("dev");
            var outside = devices!.Elements().Where(e => e.Name.LocalName is "x-checkpoint" or "x-blockexport"
                && ((string?)e.Attribute("disk") ?? (string?)e.Attribute("target")) is { } d && (d == target || d == sourcePath));
            var elements = disk.Elements().Concat(outside).ToList();
            disks.Add(new VzDomainDisk(
                target,
                sourcePath,
                (string?)disk.Element("driver")?.Attribute("type") ?? "raw",
                [.. elements.Where(e => e.Name.LocalName == "x-checkpoint").Select(e => (string?)e.Attribute("name") ?? (string?)e.Attribute("id") ?? e.Value.Trim()).Where(n => n.Length > 0)],
                [.. elements.Where(e => e.Name.LocalName == "x-blockexport").Select(e => new VzDiskExport(
                    (string?)e.Attribute("exportname") ?? (string?)e.Attribute("name") ?? string.Empty,
                    (string?)e.Attribute("snapshot"),
                    (string?)e.Attribute("checkpoint")))]));
        }

        return new VzDomainXml(uuid, name, disks);
    }

    /// <summary>The disk with target <paramref name="target"/>, or null.</summary>
    public VzDomainDisk? FindDisk(string target) => Disks.FirstOrDefault(d => d.Target == target);
}
