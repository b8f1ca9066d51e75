using System.Globalization;
using System.Xml;
using System.Xml.Linq;

namespace Drydock.Hypervisor;

/// <summary>The parts of a libvirt <c>&lt;domaincheckpoint&gt;</c> document Drydock reads and writes.</summary>
public sealed record CheckpointDocument
{
    /// <summary>The checkpoint's name.</summary>
    public required string Name { get; init; }

    /// <summary>A free-text description.</summary>
    public string? Description { get; init; }

    /// <summary>Creation time (libvirt stores Unix seconds).</summary>
    public DateTimeOffset? CreationTime { get; init; }

    /// <summary>The parent checkpoint's name.</summary>
    public string? Parent { get; init; }

    /// <summary>Per disk: whether it is in the checkpoint and under which bitmap name.</summary>
    public required IReadOnlyList<CheckpointDocumentDisk> Disks { get; init; }

    /// <summary>The disks that carry a bitmap, as <see cref="CheckpointDisk"/>s.</summary>
    public IReadOnlyList<CheckpointDisk> BitmapDisks =>
        [.. Disks.Where(d => d.Bitmap is not null).Select(d => new CheckpointDisk(d.Target, d.Bitmap!))];
}

/// <summary>One <c>&lt;disk&gt;</c> of a checkpoint document.</summary>
/// <param name="Target">The disk's target name (<c>name</c> attribute).</param>
/// <param name="Bitmap">The bitmap's name when <c>checkpoint='bitmap'</c>; null when <c>checkpoint='no'</c>.</param>
public sealed record CheckpointDocumentDisk(string Target, string? Bitmap);

/// <summary>
/// Reads and writes <c>&lt;domaincheckpoint&gt;</c> XML (libvirt's format, also used by the QEMU and sim drivers so that
/// saved checkpoints look the same everywhere). Pure: no IO. Unknown elements (such as an embedded
/// <c>&lt;domain&gt;</c>) are ignored on read.
/// </summary>
public static class CheckpointXml
{
    /// <summary>Largest document accepted (libvirt's can embed the domain XML).</summary>
    public const int MaxLength = 4 * 1024 * 1024;

    /// <summary>Writes a document.</summary>
    /// <param name="document">The checkpoint.</param>
    /// <returns>The XML text.</returns>
    public static string Format(CheckpointDocument document)
    {
        var root = new XElement("domaincheckpoint", new XElement("name", document.Name));
        if (document.Description is not null)
        {
            root.Add(new XElement("description", document.Description));
        }

        if (document.CreationTime is { } created)
        {
            root.Add(new XElement("creationTime", created.ToUnixTimeSeconds().ToString(CultureInfo.InvariantCulture)));
        }

        if (document.Parent is not null)
        {
            root.Add(new XElement("parent", new XElement("name", document.Parent)));
        }

        var disks = new XElement("disks");
        foreach (var disk in document.Disks)
        {
            disks.Add(disk.Bitmap is null
                ? new XElement("disk", new XAttribute("name", disk.Target), new XAttribute("checkpoint", "no"))
                : new XElement("disk", new XAttribute("name", disk.Target), new XAttribute("checkpoint", "bitmap"), new XAttribute("bitmap", disk.Bitmap)));
        }

        root.Add(disks);
        return root.ToString(SaveOptions.None);
    }

    /// <summary>Reads a document.</summary>
    /// <param name="xml">The XML text.</param>
    /// <returns>The checkpoint.</returns>
    /// <exception cref="FormatException">Not a well-formed checkpoint document.</exception>
    public static CheckpointDocument Parse(string xml)
    {
        if (xml.Length > MaxLength)
        {
            throw new FormatException($"Checkpoint XML is {xml.Length} characters, over the {MaxLength} limit.");
        }

        XElement root;
        try
        {
            var settings = new XmlReaderSettings { DtdProcessing = DtdProcessing.Prohibit, XmlResolver = null, MaxCharactersFromEntities = 0 };
            using var text = new StringReader(xml);
            using var reader = XmlReader.Create(text, settings);
            root = XElement.Load(reader);
        }
        catch (XmlException ex)
        {
            throw new FormatException($"Checkpoint XML is not well-formed: {ex.Message}", ex);
        }

        if (root.Name != "domaincheckpoint")
        {
            throw new FormatException($"Checkpoint XML has root <{root.Name}>, expected <domaincheckpoint>.");
        }

        var name = Single(root, "name")?.Value.Trim();
        if (string.IsNullOrEmpty(name))
        {
            throw new FormatException("Checkpoint XML has no <name>.");
        }

        DateTimeOffset? created = null;
        if (Single(root, "creationTime") is { } creationTime)
        {
            if (!long.TryParse(creationTime.Value.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var seconds)
                || seconds > 253402300799)
            {
                throw new FormatException($"Checkpoint '{name}' has an invalid <creationTime> '{creationTime.Value}'.");
            }

            created = DateTimeOffset.FromUnixTimeSeconds(seconds);
        }

        var parent = Single(root, "parent") is { } parentElement ? Single(parentElement, "name")?.Value.Trim() : null;
        var disks = new List<CheckpointDocumentDisk>();
        if (Single(root, "disks") is { } disksElement)
        {
            foreach (var disk in disksElement.Elements("disk"))
            {
                var target = disk.Attribute("name")?.Value;
                if (string.IsNullOrEmpty(target))
                {
                    throw new FormatException($"Checkpoint '{name}' has a <disk> without a name.");
                }

                if (disks.Any(d => d.Target == target))
                {
                    throw new FormatException($"Checkpoint '{name}' lists disk '{target}' twice.");
                }

                var mode = disk.Attribute("checkpoint")?.Value ?? "bitmap";
                disks.Add(mode switch
                {
                    "no" => new CheckpointDocumentDisk(target, null),
                    // libvirt names the bitmap after the checkpoint when the attribute is absent.
                    "bitmap" => new CheckpointDocumentDisk(target, disk.Attribute("bitmap")?.Value is { Length: > 0 } bitmap ? bitmap : name),
                    _ => throw new FormatException($"Checkpoint '{name}' disk '{target}' has checkpoint='{mode}', expected 'bitmap' or 'no'."),
                });
            }
        }

        return new CheckpointDocument
        {
            Name = name,
            Description = Single(root, "description")?.Value,
            CreationTime = created,
            Parent = string.IsNullOrEmpty(parent) ? null : parent,
            Disks = disks,
        };
    }

    private static XElement? Single(XElement parent, string name)
    {
        XElement? found = null;
        foreach (var element in parent.Elements(name))
        {
            if (found is not null)
            {
                throw new FormatException($"<{parent.Name}> has more than one <{name}>.");
            }

            found = element;
        }

        return found;
    }
}
