using System.Xml.Linq;

namespace Drydock.Hypervisor.Libvirt.Xml;

/// <summary>One <c>&lt;disk device='disk'&gt;</c> of a libvirt domain XML.</summary>
/// <param name="Target">The target name (<c>&lt;target dev&gt;</c>).</param>
/// <param name="Type">The disk type: <c>file</c>, <c>block</c>, <c>network</c>, <c>volume</c>.</param>
/// <param name="Format">The driver type (<c>qcow2</c>, <c>raw</c>, …).</param>
/// <param name="Source">The file, device, network name or pool/volume.</param>
/// <param name="SourceIndex">The live XML's <c>&lt;source index&gt;</c> (QEMU node <c>libvirt-N-format</c>), or null.</param>
/// <param name="ReadOnly">Whether the guest sees it read-only.</param>
/// <param name="Alias">The device alias in the live XML (e.g. <c>virtio-disk0</c>), or null.</param>
internal sealed record LibvirtDisk(string Target, string Type, string Format, string? Source, int? SourceIndex, bool ReadOnly, string? Alias)
{
    /// <summary>The QEMU format node of the disk in a running domain (libvirt 9.0's blockdev naming), or null.</summary>
    public string? FormatNodeName => SourceIndex is { } index ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $"libvirt-{index}-format") : null;

    /// <summary>Whether the image can carry persistent dirty bitmaps (checkpoints).</summary>
    public bool SupportsCheckpoints => string.Equals(Format, DiskFormats.Qcow2, StringComparison.Ordinal);
}

/// <summary>The parts of a libvirt <c>&lt;domain&gt;</c> XML the driver reads.</summary>
/// <param name="Uuid">The UUID.</param>
/// <param name="Name">The name.</param>
/// <param name="Disks">Its disks (<c>device='disk'</c> only: CD-ROMs, floppies and LUN pass-through are skipped).</param>
internal sealed record DomainXml(string Uuid, string Name, IReadOnlyList<LibvirtDisk> Disks)
{
    /// <summary>Parses a domain XML.</summary>
    /// <exception cref="FormatException">Malformed.</exception>
    public static DomainXml Parse(string xml)
    {
        var root = SafeXml.Load(xml, "domain");
        var uuid = root.Element("uuid")?.Value.Trim() ?? throw new FormatException("Domain XML has no <uuid>.");
        var name = root.Element("name")?.Value.Trim() ?? throw new FormatException("Domain XML has no <name>.");
        var disks = new List<LibvirtDisk>();
        foreach (var disk in root.Element("devices")?.Elements("disk") ?? [])
        {
            if ((string?)disk.Attribute("device") is not (null or "disk"))
            {
                continue;
            }

            var target = (string?)disk.Element("target")?.Attribute("dev");
            if (string.IsNullOrEmpty(target))
            {
                throw new FormatException($"Domain '{name}' has a disk without <target dev>.");
            }

            var type = (string?)disk.Attribute("type") ?? "file";
            var source = disk.Element("source");
            int? index = source?.Attribute("index") is { } indexAttribute && int.TryParse(indexAttribute.Value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var parsed) ? parsed : null;
            disks.Add(new LibvirtDisk(
                target,
                type,
                (string?)disk.Element("driver")?.Attribute("type") ?? DiskFormats.Raw,
                SourceOf(type, source),
                index,
                disk.Element("readonly") is not null,
                (string?)disk.Element("alias")?.Attribute("name")));
        }

        return new DomainXml(uuid, name, disks);
    }

    /// <summary>The disk with target <paramref name="target"/>, or null.</summary>
    public LibvirtDisk? FindDisk(string target) => Disks.FirstOrDefault(d => string.Equals(d.Target, target, StringComparison.Ordinal));

    private static string? SourceOf(string type, XElement? source) => source is null ? null : type switch
    {
        "file" => (string?)source.Attribute("file"),
        "block" => (string?)source.Attribute("dev"),
        "dir" => (string?)source.Attribute("dir"),
        "network" => $"{(string?)source.Attribute("protocol")}:{(string?)source.Attribute("name")}",
        "volume" => $"{(string?)source.Attribute("pool")}/{(string?)source.Attribute("volume")}",
        _ => null,
    };
}
