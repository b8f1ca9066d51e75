using System.Xml.Linq;

namespace Drydock.Hypervisor.Virtuozzo.Xml;

/// <summary>One <c>&lt;disk&gt;</c> of a <c>&lt;domainblocksnapshot&gt;</c>.</summary>
/// <param name="Name">The disk: its target name (<c>vda</c>) or the absolute path of its image.</param>
/// <param name="FleeceFile">The absolute path of the fleece image that receives the old data (<c>&lt;fleece file&gt;</c>).</param>
/// <param name="Type">The optional <c>type</c> attribute; the schema allows only <c>file</c>.</param>
public sealed record VzSnapshotDisk(string Name, string FleeceFile, string? Type = null);

/// <summary>
/// The block snapshot XML of <c>virDomainBlockSnapshotXCreateXML</c> (Virtuozzo Hybrid Server libvirt), as its RELAX NG
/// schema <c>domainblocksnapshot.rng</c> defines it:
/// <code>
/// &lt;domainblocksnapshot&gt;
///   &lt;name&gt;ID&lt;/name&gt;                          optional; with the checkpoint flag it becomes the checkpoint id
///   &lt;disk name='vda|/abs/image' [type='file']&gt;  one or more
///     &lt;fleece file='/abs/fleece.qcow2'/&gt;
///   &lt;/disk&gt;
/// &lt;/domainblocksnapshot&gt;
/// </code>
/// </summary>
/// <param name="Name">The snapshot's name (and checkpoint id), or null to let libvirt choose.</param>
/// <param name="Disks">The disks.</param>
public sealed record BlockSnapshotXml(string? Name, IReadOnlyList<VzSnapshotDisk> Disks)
{
    /// <summary>Writes the document.</summary>
    /// <exception cref="ArgumentException">No disk, a relative fleece path, or a type other than <c>file</c>.</exception>
    public string Format()
    {
        if (Disks.Count == 0)
        {
            throw new ArgumentException("A block snapshot needs at least one disk.");
        }

        var root = new XElement("domainblocksnapshot");
        if (Name is not null)
        {
            root.Add(new XElement("name", Name));
        }

        foreach (var disk in Disks)
        {
            if (!Path.IsPathRooted(disk.FleeceFile))
            {
                throw new ArgumentException($"The fleece file of disk '{disk.Name}' must be an absolute path, not '{disk.FleeceFile}'.");
            }

            if (disk.Type is not (null or "file"))
            {
                throw new ArgumentException($"Disk '{disk.Name}' has type '{disk.Type}': the schema allows only 'file'.");
            }

            var element = new XElement("disk", new XAttribute("name", disk.Name));
            if (disk.Type is not null)
            {
                element.Add(new XAttribute("type", disk.Type));
            }

            element.Add(new XElement("fleece", new XAttribute("file", disk.FleeceFile)));
            root.Add(element);
        }

        return root.ToString(SaveOptions.None);
    }

    /// <summary>Reads a document (as <c>virDomainBlockSnapshotXGetXMLDesc</c> returns it).</summary>
    /// <exception cref="FormatException">Not a valid block snapshot document.</exception>
    public static BlockSnapshotXml Parse(string xml)
    {
        var root = VzXml.Load(xml, "domainblocksnapshot");
        var names = root.Elements("name").ToList();
        if (names.Count > 1)
        {
            throw new FormatException("<domainblocksnapshot> has more than one <name>.");
        }

        var disks = new List<VzSnapshotDisk>();
        foreach (var disk in root.Elements("disk"))
        {
            var name = (string?)disk.Attribute("name") ?? throw new FormatException("A block snapshot <disk> has no name.");
            var fleece = (string?)disk.Element("fleece")?.Attribute("file") ?? throw new FormatException($"Block snapshot disk '{name}' has no <fleece file>.");
            disks.Add(new VzSnapshotDisk(name, fleece, (string?)disk.Attribute("type")));
        }

        return disks.Count == 0
            ? throw new FormatException("<domainblocksnapshot> has no <disk>.")
            : new BlockSnapshotXml(names.SingleOrDefault()?.Value.Trim(), disks);
    }
}
