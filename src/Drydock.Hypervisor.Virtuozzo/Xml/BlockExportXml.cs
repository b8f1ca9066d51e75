using System.Globalization;
using System.Xml.Linq;

namespace Drydock.Hypervisor.Virtuozzo.Xml;

/// <summary>The <c>&lt;address type='ip'&gt;</c> of a block export: where QEMU's NBD server listens.</summary>
/// <param name="Host">The address or host name.</param>
/// <param name="Port">The port, or null with <paramref name="AutoPort"/>.</param>
/// <param name="AutoPort">Let libvirt choose the port (<c>autoport='yes'</c>).</param>
/// <param name="Tls">Require TLS (<c>tls='yes'</c>).</param>
public sealed record VzExportAddress(string Host, int? Port = null, bool? AutoPort = null, bool? Tls = null);

/// <summary>One <c>&lt;disk&gt;</c> of a <c>&lt;domainblockexport&gt;</c>.</summary>
public sealed record VzExportDisk
{
    /// <summary>The disk: target name or absolute image path.</summary>
    public required string Name { get; init; }

    /// <summary>The NBD export name to use; when absent libvirt picks one (read it back from the domain XML).</summary>
    public string? ExportName { get; init; }

    /// <summary>The block snapshot to export (backup); absent for the live disk (restore).</summary>
    public string? Snapshot { get; init; }

    /// <summary>Export the changes since this checkpoint as a dirty bitmap (incremental/differential).</summary>
    public string? Checkpoint { get; init; }

    /// <summary>Export the bitmaps of all checkpoints (<c>allcheckpoints='yes'</c>); exclusive with <see cref="Checkpoint"/>.</summary>
    public bool? AllCheckpoints { get; init; }

    /// <summary>Whether the export is read-only; <c>readonly='no'</c> on the live disk of a paused domain is the restore path.</summary>
    public bool? ReadOnly { get; init; }
}

/// <summary>
/// The block export XML of <c>virDomainBlockExportXStart</c> / <c>XStop</c>, as the Virtuozzo libvirt RELAX NG schema
/// (<c>domainblockexport_</c>, <c>exportaddress</c>, <c>diskexport</c> in domaincommon.rng) defines it:
/// <code>
/// &lt;domainblockexport type='nbd'&gt;
///   &lt;address type='ip' host='H' [port='N'] [autoport='yes|no'] [tls='yes|no']/&gt;
///   &lt;disk name='vda|/abs/image' [exportname='E'] [snapshot='S'] [checkpoint='C' | allcheckpoints='yes|no'] [readonly='yes|no']/&gt;
/// &lt;/domainblockexport&gt;
/// </code>
/// </summary>
/// <param name="Address">The NBD server address.</param>
/// <param name="Disks">One or more disks.</param>
public sealed record BlockExportXml(VzExportAddress Address, IReadOnlyList<VzExportDisk> Disks)
{
    /// <summary>Writes the document.</summary>
    /// <exception cref="ArgumentException">No disk, or both <c>checkpoint</c> and <c>allcheckpoints</c> on one disk.</exception>
    public string Format()
    {
        if (Disks.Count == 0)
        {
            throw new ArgumentException("A block export needs at least one disk.");
        }

        var address = new XElement("address", new XAttribute("type", "ip"), new XAttribute("host", Address.Host));
        if (Address.Port is { } port)
        {
            address.Add(new XAttribute("port", port.ToString(CultureInfo.InvariantCulture)));
        }

        if (Address.AutoPort is { } autoPort)
        {
            address.Add(new XAttribute("autoport", VzXml.YesNo(autoPort)));
        }

        if (Address.Tls is { } tls)
        {
            address.Add(new XAttribute("tls", VzXml.YesNo(tls)));
        }

        var root = new XElement("domainblockexport", new XAttribute("type", "nbd"), address);
        foreach (var disk in Disks)
        {
            if (disk.Checkpoint is not null && disk.AllCheckpoints is not null)
            {
                throw new ArgumentException($"Export disk '{disk.Name}' sets both checkpoint and allcheckpoints: the schema allows one.");
            }

            var element = new XElement("disk", new XAttribute("name", disk.Name));
            if (disk.ExportName is not null)
            {
                element.Add(new XAttribute("exportname", disk.ExportName));
            }

            if (disk.Snapshot is not null)
            {
                element.Add(new XAttribute("snapshot", disk.Snapshot));
            }

            if (disk.Checkpoint is not null)
            {
                element.Add(new XAttribute("checkpoint", disk.Checkpoint));
            }

            if (disk.AllCheckpoints is { } all)
            {
                element.Add(new XAttribute("allcheckpoints", VzXml.YesNo(all)));
            }

            if (disk.ReadOnly is { } readOnly)
            {
                element.Add(new XAttribute("readonly", VzXml.YesNo(readOnly)));
            }

            root.Add(element);
        }

        return root.ToString(SaveOptions.None);
    }

    /// <summary>Reads a document.</summary>
    /// <exception cref="FormatException">Not a valid block export document.</exception>
    public static BlockExportXml Parse(string xml)
    {
        var root = VzXml.Load(xml, "domainblockexport");
        if ((string?)root.Attribute("type") != "nbd")
        {
            throw new FormatException($"<domainblockexport type='{(string?)root.Attribute("type")}'>: only 'nbd' is defined.");
        }

        var addresses = root.Elements("address").ToList();
        if (addresses.Count != 1)
        {
            throw new FormatException($"<domainblockexport> needs exactly one <address>, has {addresses.Count}.");
        }

        var a = addresses[0];
        if ((string?)a.Attribute("type") != "ip")
        {
            throw new FormatException($"<address type='{(string?)a.Attribute("type")}'>: only 'ip' is defined.");
        }

        int? port = null;
        if (a.Attribute("port") is { } portAttribute)
        {
            port = int.TryParse(portAttribute.Value, NumberStyles.None, CultureInfo.InvariantCulture, out var p) && p is > 0 and <= 65535
                ? p
                : throw new FormatException($"<address port='{portAttribute.Value}'> is not a port number.");
        }

        var address = new VzExportAddress((string?)a.Attribute("host") ?? throw new FormatException("<address> has no host."), port, VzXml.YesNo(a, "autoport"), VzXml.YesNo(a, "tls"));
        var disks = new List<VzExportDisk>();
        foreach (var disk in root.Elements("disk"))
        {
            var parsed = new VzExportDisk
            {
                Name = (string?)disk.Attribute("name") ?? throw new FormatException("An export <disk> has no name."),
                ExportName = (string?)disk.Attribute("exportname"),
                Snapshot = (string?)disk.Attribute("snapshot"),
                Checkpoint = (string?)disk.Attribute("checkpoint"),
                AllCheckpoints = VzXml.YesNo(disk, "allcheckpoints"),
                ReadOnly = VzXml.YesNo(disk, "readonly"),
            };
            if (parsed.Checkpoint is not null && parsed.AllCheckpoints is not null)
            {
                throw new FormatException($"Export disk '{parsed.Name}' has both checkpoint and allcheckpoints.");
            }

            disks.Add(parsed);
        }

        return disks.Count == 0 ? throw new FormatException("<domainblockexport> has no <disk>.") : new BlockExportXml(address, disks);
    }
}
